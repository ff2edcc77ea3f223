"""Every generated block of the documentation: its marker name, what it is rendered from, and how. Each block
goes into whichever markdown file (README.md or a page under docs/) holds its markers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import RagtuneError
from . import bench_blocks, markers
from .results import render_glance, render_results

METRICS = Path("data/eval/report.json")
TRANSFER = Path("data/transfer/results.json")
LOGS = Path("data/transfer/real/results.json")
KFOLD = Path("data/transfer/kfold_real/results.json")
LABELS = Path("data/transfer/labels/labels.json")


def _json(path: Path) -> dict:
    if not path.is_file():
        raise RagtuneError(f"{path}: not found; run the pipeline first (make run, or dvc repro eval)")
    return json.loads(path.read_text(encoding="utf-8"))


def _results(page: Path, root: Path) -> str:
    return render_results(_json(root / METRICS), markers.relative_dir(page, root / METRICS))


def _glance(page: Path, root: Path) -> str:
    transfer = root / TRANSFER
    findings = markers.relative_dir(page, root / "docs" / "findings" / "results.md")
    return render_glance(_json(root / METRICS), _json(transfer) if transfer.is_file() else None, findings)


def _bench(source: Path, render: Callable) -> Callable[[Path, Path], str]:
    def rendered(page: Path, root: Path) -> str:
        return render(_json(root / source), markers.relative_dir(page, root / source))

    return rendered


def _params(page: Path, root: Path) -> str:
    from .params_ref import render_params

    return render_params((root / "params.yaml").read_text(encoding="utf-8"), page, root)


def _cli(page: Path, root: Path) -> str:
    from ..cli import build_parser
    from .cli_ref import render_cli

    return render_cli(build_parser())


def _contracts(page: Path, root: Path) -> str:
    from .code_ref import render_contracts

    return render_contracts()


def _packages(page: Path, root: Path) -> str:
    from .code_ref import render_package_map

    return render_package_map(root)


@dataclass(frozen=True)
class Section:
    """A generated block: `name` gives its markers, `render(page, root)` its text for the file `page`; with a
    `source` that does not exist (a benchmark not run here) the block is left as it is."""

    name: str
    render: Callable[[Path, Path], str]
    source: Path | None = None

    @property
    def markers(self) -> tuple[str, str]:
        return markers.markers(self.name)


SECTIONS = (
    Section("glance", _glance),
    Section("results", _results),
    Section("transfer", _bench(TRANSFER, bench_blocks.render_transfer), TRANSFER),
    Section("querylogs", _bench(LOGS, bench_blocks.render_query_logs), LOGS),
    Section("querylogs-kfold", _bench(KFOLD, bench_blocks.render_query_logs_kfold), KFOLD),
    Section("labels", _bench(LABELS, bench_blocks.render_labels), LABELS),
    Section("params", _params),
    Section("cli", _cli),
    Section("contracts", _contracts),
    Section("packages", _packages),
)


@dataclass(frozen=True)
class Outcome:
    """One block in one file: whether it was up to date (`stale` False) or not."""

    section: str
    page: Path
    stale: bool


def _pages(section: Section, root: Path) -> list[Path]:
    start, _ = section.markers
    pages = markers.files_holding(start, root)
    if not pages:
        raise RagtuneError(
            f"the markers {start} and {section.markers[1]} are in neither README.md nor docs/; put them where "
            f"the {section.name} block should go"
        )
    return pages


def refresh(root: Path, write: bool) -> list[Outcome]:
    """Render every block into the files holding its markers (under `root`); write them when `write`, else only
    compare. Blocks whose source does not exist are skipped."""
    outcomes = []
    for section in SECTIONS:
        if section.source is not None and not (root / section.source).is_file():
            continue
        start, end = section.markers
        for page in _pages(section, root):
            text = page.read_text(encoding="utf-8")
            new = markers.replace_block(text, section.render(page, root), str(page.relative_to(root)), start, end)
            outcomes.append(Outcome(section.name, page, new != text))
            if write:
                markers.rewrite(page, new, text)
    return outcomes
