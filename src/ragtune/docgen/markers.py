"""Marker blocks in markdown files: find the file that holds a block, read it, replace it (atomically)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RagtuneError


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of the generated block `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def doc_files(root: Path) -> list[Path]:
    """The markdown files generated blocks may live in: README.md and every page under docs/."""
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + sorted((root / "docs").rglob("*.md"))


def files_holding(start_marker: str, root: Path) -> list[Path]:
    """The documentation files whose text holds `start_marker`."""
    return [path for path in doc_files(root) if start_marker in path.read_text(encoding="utf-8")]


def replace_block(text: str, block: str, source: str, start_marker: str, end_marker: str) -> str:
    """`text` with everything between the two markers replaced by `block`; RagtuneError naming `source` when the
    markers are missing or out of order."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0 or end < start:
        raise RagtuneError(
            f"{source}: markers {start_marker} and {end_marker} not found (in that order); add "
            "them where the generated section should go"
        )
    return text[: start + len(start_marker)] + "\n" + block + "\n" + text[end:]


def current_block(text: str, start_marker: str, end_marker: str) -> str | None:
    """The block between the markers as it stands (outer blank lines stripped); None without the markers."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        return None
    return text[start + len(start_marker) : end].strip("\n")


def rewrite(path: Path, new: str, old: str) -> bool:
    """Write `new` over `path` (atomically) when it differs from `old`; True if the file changed."""
    if new == old:
        return False
    from ..io import atomic_open

    with atomic_open(path) as fh:
        fh.write(new)
    return True


def relative_dir(doc: Path, target: Path) -> str:
    """The folder of `target` as a link from `doc`'s folder (relative, forward slashes)."""
    return Path(os.path.relpath(target.resolve().parent, doc.resolve().parent)).as_posix()
