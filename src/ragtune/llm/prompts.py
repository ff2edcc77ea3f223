"""Versioned prompt files: the one loader for every prompt an LLM call uses (synthesize's question prompt, the
judge's answer and judge prompts).

A prompt file holds a `=== system ===` section followed by a `=== user ===` section; the user part is a
template with `{name}` fields. The file's sha256 goes into the cache key of every call built with it, so an
edited prompt never reads answers written for the old one. Shipped prompts live in src/ragtune/prompts/.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RagtuneError

if TYPE_CHECKING:
    from importlib.abc import Traversable

_SECTIONS = re.compile(r"\s*=== system ===\n(.*?)\n=== user ===\n(.*)\Z", re.S)
_FIELD = re.compile(r"\{([a-z_0-9]+)\}")


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt file: its `name` (file stem), whole `text`, and its stripped `system` and `user` parts."""

    name: str
    text: str
    system: str
    user: str

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the whole file: part of every cache key built with this prompt."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def prompt_id(self) -> str:
        """`name@` and the hash's first 12 hex digits: what a record says it was made with."""
        return f"{self.name}@{self.sha256[:12]}"

    def render(self, **fields: str) -> str:
        """The user template with each `{name}` in `fields` replaced in one pass: other braces (JSON examples,
        braces inside a field's value) are left as they are."""
        return _FIELD.sub(lambda m: str(fields[m.group(1)]) if m.group(1) in fields else m.group(0), self.user)


def load_prompt(
    name: str, directory: Path | None = None, *, setting: str = "prompt", required: Sequence[str] = ()
) -> Prompt:
    """The prompt `name`: the path of a .txt file, `<directory>/<name>.txt`, or a prompt shipped in the package
    (`src/ragtune/prompts/<name>.txt`). `setting` is the params key that named it (for errors); each field in
    `required` must appear in the user section as `{field}`."""
    path = Path(name)
    source: Path | Traversable
    if name.endswith(".txt") and path.is_file():
        source, where, stem = path, str(path), path.stem
    elif directory is not None:
        source = Path(directory) / f"{name}.txt"
        where, stem = str(source), name
    else:
        source = importlib.resources.files("ragtune") / "prompts" / f"{name}.txt"
        where, stem = f"src/ragtune/prompts/{name}.txt", name
    if not source.is_file():
        raise RagtuneError(
            f"{setting}: no prompt '{name}' (prompt file not found: looked for {where}; give a prompt name there "
            "or the path of a .txt file)"
        )
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RagtuneError(f"{where}: not UTF-8 (byte {exc.start}); save the file as UTF-8 ({setting})") from None
    match = _SECTIONS.match(text)
    if not match:
        raise RagtuneError(
            f"{where}: expected a '=== system ===' section followed by a '=== user ===' section ({setting})"
        )
    prompt = Prompt(stem, text, match.group(1).strip(), match.group(2).strip())
    for field in required:
        if "{" + field + "}" not in prompt.user:
            raise RagtuneError(f"{setting} '{name}': the user section must contain {{{field}}}")
    return prompt
