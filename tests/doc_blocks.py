"""The fenced code blocks of README.md and the pages under docs/, and how tests find the ones they run.

A block says what it is by an HTML comment right above its fence (other comment lines may sit between):
- `<!-- test: KIND -->`: a test runs it; the tests that do ask for `blocks_tagged("KIND")`
  (tests/docgen/test_doc_blocks.py checks that every KIND has one);
- `<!-- example: why it is not run -->`: shown, not run (placeholders for a server or bucket of yours), and the
  comment says why and which test runs the nearest real thing.
Fenced blocks of a language that runs (python, bash, sh, shell, console) must carry one of the two.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = {"python", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
TAG = re.compile(r"<!-- (test|example): ([^>]*?) -->")
COMMENT_LINE = re.compile(r"^[ \t]*<!--.*-->[ \t]*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str  # dedented by the fence's indentation
    tag: str | None  # "test" or "example", None when untagged
    kind: str  # the KIND of a test tag, the reason of an example

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _tag_above(lines: list[str], fence_index: int) -> tuple[str | None, str]:
    """The tag in the comment lines right above line `fence_index` (0-based), if any."""
    i = fence_index - 1
    while i >= 0 and COMMENT_LINE.match(lines[i]):
        match = TAG.search(lines[i])
        if match:
            return match.group(1), match.group(2).strip()
        i -= 1
    return None, ""


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, in order, with its tag."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks = []
    for match in FENCE.finditer(text):
        index = text[: match.start()].count("\n")
        indent = len(match.group("indent"))
        code = "".join(line[indent:] + "\n" for line in match.group("code").splitlines())
        tag, kind = _tag_above(lines, index)
        blocks.append(Block(path, index + 1, match.group("lang").lower(), code, tag, kind))
    return blocks


def all_blocks(root: Path = REPO) -> list[Block]:
    return [block for path in doc_files(root) for block in fenced_blocks(path)]


def blocks_tagged(kind: str, root: Path = REPO) -> list[Block]:
    """The blocks tagged `<!-- test: KIND -->` in README.md and docs/ (a test that runs them asks by this name)."""
    return [b for b in all_blocks(root) if b.tag == "test" and b.kind == kind]


def command_lines(block: Block) -> list[list[str]]:
    """A shell block's commands as argv lists: continuation lines joined, comments and blank lines dropped (for a
    test that runs them one by one, e.g. in a scratch directory)."""
    joined = block.code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]
