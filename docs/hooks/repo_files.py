"""mkdocs hook: pages link files of the repository outside docs/ (the charts under data/, a script) by their
relative path, so that the same markdown works on GitHub. The site copies each such file under `_repo/` and the
link is rewritten to that copy. A link to a file that does not exist is left alone, so `mkdocs build --strict`
still fails on it."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

# A markdown link or image whose target is a relative path (no scheme, no leading slash), with an optional anchor.
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s#:]+)(#[^)\s]*)?\)")
PREFIX = "_repo"


def _repo_target(docs_dir: Path, page_src: str, target: str) -> Path | None:
    """The repository file `target` names from the page, when it lies outside docs/ and exists."""
    path = (docs_dir / page_src).parent.joinpath(target).resolve()
    repo = docs_dir.parent.resolve()
    if path.is_relative_to(docs_dir.resolve()) or not path.is_relative_to(repo) or not path.is_file():
        return None
    return path


def on_files(files, config):
    """Add every repository file a page links to, so that the site holds it and link checks find it."""
    docs_dir = Path(config["docs_dir"])
    repo = docs_dir.parent.resolve()
    for page in [f for f in files if f.src_uri.endswith(".md")]:
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for match in LINK.finditer(text):
            path = _repo_target(docs_dir, page.src_uri, match.group(2))
            uri = f"{PREFIX}/{path.relative_to(repo).as_posix()}" if path else None
            if uri and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Links to repository files outside docs/ point at their copies under `_repo/`."""
    docs_dir = Path(config["docs_dir"])
    repo = docs_dir.parent.resolve()

    def rewrite(match: re.Match[str]) -> str:
        path = _repo_target(docs_dir, page.file.src_uri, match.group(2))
        if path is None:
            return match.group(0)
        uri = f"{PREFIX}/{path.relative_to(repo).as_posix()}"
        href = posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")
        return f"{match.group(1)}{href}{match.group(3) or ''})"

    return LINK.sub(rewrite, markdown)
