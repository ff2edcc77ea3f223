"""The documentation's generated blocks (never typed by hand), in README.md and the pages under docs/.

`python -m ragtune.readme` rewrites every block listed in `ragtune.docgen.sections` in whichever markdown file holds
its markers (`<!-- NAME:start -->` ... `<!-- NAME:end -->`): the README's results at a glance and the findings'
results tables from data/eval/report.json; the benchmark blocks from data/transfer/**/results.json and
labels.json when those exist (`make transfer`, `make querylogs`, `make querylogs-kfold`, `make labels`; a block
whose file is absent is left as it is); the params, CLI, data-contract and package-map references from
params.yaml and the code. `--check` only reports which blocks are out of date (exit 1 when any is).

The names below are the single-file API the tests and benchmarks use (one block in one given file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .docgen.bench_blocks import (  # noqa: F401  (importable from here)
    CORPUS_ATTRIBUTIONS,
    render_labels,
    render_query_logs,
    render_query_logs_kfold,
    render_transfer,
)
from .docgen.markers import current_block as _current_block
from .docgen.markers import markers, relative_dir, rewrite
from .docgen.markers import replace_block as _replace_block
from .docgen.results import render_glance, render_results  # noqa: F401
from .docgen.sections import KFOLD, LABELS, LOGS, METRICS, SECTIONS, TRANSFER, refresh  # noqa: F401
from .errors import RagtuneError

README = Path("README.md")
START, END = markers("results")
TRANSFER_START, TRANSFER_END = markers("transfer")
LOGS_START, LOGS_END = markers("querylogs")
KFOLD_START, KFOLD_END = markers("querylogs-kfold")
LABELS_START, LABELS_END = markers("labels")


def replace_block(
    text: str, block: str, source: str = "README.md", start_marker: str = START, end_marker: str = END
) -> str:
    return _replace_block(text, block, source, start_marker, end_marker)


def current_block(text: str, start_marker: str = START, end_marker: str = END) -> str | None:
    return _current_block(text, start_marker, end_marker)


def load_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RagtuneError(f"{path}: not found; run the pipeline first (make run, or dvc repro eval)")
    return json.loads(path.read_text(encoding="utf-8"))


def expected_results(page: Path, metrics_path: Path) -> str:
    """The results block as it belongs in `page` (its charts linked from the page's folder)."""
    return render_results(load_metrics(metrics_path), relative_dir(page, metrics_path))


def update_readme(readme: Path = README, metrics_path: Path = METRICS) -> bool:
    """Rewrite the results block of `readme` (any markdown file holding its markers); True if the file changed."""
    text = readme.read_text(encoding="utf-8")
    return rewrite(readme, replace_block(text, expected_results(readme, metrics_path), str(readme)), text)


def expected_transfer(readme: Path, results_path: Path, render=render_transfer) -> str:
    """A benchmark block as it belongs in the file `readme` (its charts linked from that file's folder)."""
    return render(json.loads(results_path.read_text(encoding="utf-8")), relative_dir(readme, results_path))


def update_transfer(
    readme: Path = README,
    results_path: Path = TRANSFER,
    start: str = TRANSFER_START,
    end: str = TRANSFER_END,
    render=render_transfer,
) -> bool | None:
    """Rewrite a benchmark block (transfer by default) of `readme` from the benchmark's results.json; None
    (nothing done) when that file does not exist, else True if the file changed."""
    if not results_path.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, expected_transfer(readme, results_path, render), str(readme), start, end)
    return rewrite(readme, new, text)


def page_holding(name: str, root: Path = Path(".")) -> Path:
    """The documentation file (README.md or a page under docs/) that holds the block `name`'s markers."""
    from .docgen.markers import files_holding

    start, _ = markers(name)
    pages = files_holding(start, root)
    if len(pages) != 1:
        raise RagtuneError(f"{start}: expected in exactly one of README.md and docs/**.md, found in {len(pages)}")
    return pages[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ragtune.readme", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: here)")
    ap.add_argument("--check", action="store_true", help="exit 1 if any generated block is out of date")
    args = ap.parse_args(argv)
    try:
        outcomes = refresh(args.root, write=not args.check)
    except (RagtuneError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = [o for o in outcomes if o.stale]
    for outcome in outcomes:
        where = outcome.page.relative_to(args.root)
        state = ("out of date" if args.check else "updated") if outcome.stale else "up to date"
        print(f"{where}: {outcome.section} {state}", file=sys.stderr if args.check and outcome.stale else sys.stdout)
    if args.check and stale:
        print("run python -m ragtune.readme to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
