"""The data contracts between stages (see DESIGN.md) and their JSONL readers and writers.

Every reader validates as it goes and stops at the first bad row with `file:line: what is wrong`,
so a user can open the file at that line and fix it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from .errors import DataError
from .io import atomic_open
from .textnorm import normalise_text

Split = Literal["train", "test"]


class _Record(BaseModel):
    # Extra keys (e.g. legal-rag-bench's footnotes) are tolerated and dropped; wrong types are not.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Chunk(_Record):
    """One retrievable passage. `split == "test"` marks chunks relevant to test questions (what the
    synthesize stage's protocol, `synthesize.test_chunks`, acts on). `parent` names the document a chunk
    was cut from (an article, a contract), when known: chunks of one parent are not mined as each other's
    hard negatives. `document` is set on passages the fetch stage cut from a text too long for the
    embedder (`fetch.passages`): the original text's id, by which eval ranks documents."""

    id: StrictStr
    text: StrictStr
    title: StrictStr | None = None
    source: StrictStr = "unknown"
    split: Split = "train"
    parent: StrictStr | None = None
    document: StrictStr | None = None  # set on a passage cut from a longer text (`ragtune.corpus.passages`)

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("id is empty; give every chunk a unique non-empty id")
        return v

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is empty; drop the row or give it text")
        return v


class TestQuestion(_Record):
    """A held-out question with the ids of the chunks that answer it. `origin` says whether a person
    wrote it (`human`) or an LLM generated it for a held-out chunk (`synthetic`)."""

    __test__ = False  # not a pytest class

    id: StrictStr
    question: StrictStr
    relevant_ids: list[StrictStr] = Field(min_length=1)
    answer: StrictStr | None = None
    origin: Literal["human", "synthetic"] = "human"

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is empty")
        return v


class SyntheticQuestion(_Record):
    """A generated training question for one chunk, with its provenance."""

    id: StrictStr
    chunk_id: StrictStr
    question: StrictStr
    backend: StrictStr
    model: StrictStr
    prompt_id: StrictStr


R = TypeVar("R", bound=BaseModel)


def iter_jsonl(path: str | os.PathLike[str], model: type[R]) -> Iterator[tuple[int, R]]:
    """Yield `(line_number, record)` for each non-blank line; raise DataError naming `file:line`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = decode_line(p, lineno, raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{p}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            try:
                yield lineno, model.model_validate(obj)
            except ValidationError as exc:
                raise DataError(f"{p}:{lineno}: {_describe(exc)}") from None


def decode_line(path: Path, lineno: int, raw: bytes) -> str:
    """One line of a text input as UTF-8 (a leading byte-order mark dropped); DataError `file:line` if not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file "
            "as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out)"
        ) from None
    return text.removeprefix("\ufeff") if lineno == 1 else text


def read_text(path: str | os.PathLike[str]) -> str:
    """A whole text input (a prompt file) as UTF-8; DataError naming `file:line` where it is not."""
    p = Path(path)
    return "".join(decode_line(p, i, raw) for i, raw in enumerate(p.read_bytes().splitlines(keepends=True), 1))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "row"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"field '{field}': {msg}")
    return "; ".join(parts)


def read_jsonl(path: str | os.PathLike[str], model: type[R]) -> list[R]:
    return [rec for _, rec in iter_jsonl(path, model)]


def write_jsonl(path: str | os.PathLike[str], records: Iterable[BaseModel]) -> int:
    """Write records atomically, one compact JSON object per line. Returns the row count. No records: one
    blank line (zero rows to every reader, which skip blank lines), because DVC warns about an empty file
    each time it looks at one, a dozen times in one `dvc repro` for fetch's train_questions.jsonl."""
    n = 0
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(rec.model_dump_json(exclude_none=False))
            fh.write("\n")
            n += 1
        if not n:
            fh.write("\n")
    return n


def load_corpus(path: str | os.PathLike[str]) -> list[Chunk]:
    """Read a corpus and check that ids are unique."""
    seen: dict[str, int] = {}
    chunks: list[Chunk] = []
    for lineno, chunk in iter_jsonl(path, Chunk):
        if chunk.id in seen:
            raise DataError(
                f"{path}:{lineno}: duplicate id '{chunk.id}' (first on line {seen[chunk.id]}); chunk ids must be unique"
            )
        seen[chunk.id] = lineno
        chunks.append(chunk)
    if not chunks:
        raise DataError(f"{path}: the corpus is empty")
    return chunks


def load_test(path: str | os.PathLike[str], corpus_ids: Iterable[str] | None = None) -> list[TestQuestion]:
    """Read test questions; check ids are unique and, given the corpus ids, that every relevant id exists."""
    known = set(corpus_ids) if corpus_ids is not None else None
    seen: dict[str, int] = {}
    questions: list[TestQuestion] = []
    for lineno, q in iter_jsonl(path, TestQuestion):
        if q.id in seen:
            raise DataError(f"{path}:{lineno}: duplicate id '{q.id}' (first on line {seen[q.id]})")
        seen[q.id] = lineno
        if known is not None:
            missing = [rid for rid in q.relevant_ids if rid not in known]
            if missing:
                raise DataError(
                    f"{path}:{lineno}: relevant id(s) {missing[:5]} not in the corpus; "
                    "fix the id or add the chunk to the corpus"
                )
        questions.append(q)
    return questions


# Sources whose chunk titles must not be indexed: eu-law's titles are its article headings, which are its
# test questions (indexing them would put the answer key into the index).
TITLE_OFF_SOURCES = frozenset({"eu-law"})


def include_title(setting: bool | str, source: str | None) -> bool:
    """`embedding.include_title` / `eval.bm25.include_title`: true, false, or auto (on unless the source's
    titles are its test questions)."""
    if setting == "auto":
        return source not in TITLE_OFF_SOURCES
    return bool(setting)


def indexed_text(text: str, title: str | None, with_title: bool) -> str:
    """What is embedded or indexed for a chunk: "title\n\ntext" when titles are included and it has one."""
    return f"{title}\n\n{text}" if with_title and title else text


def load_train_questions(
    path: str | os.PathLike[str],
    test: Sequence[TestQuestion],
    corpus_ids: Iterable[str] | None = None,
    test_name: str = "the test set",
) -> list[TestQuestion]:
    """Read labelled real training questions (the test contract) and refuse any that is also a test
    question: the same id, or the same text after `textnorm.normalise_text`. Such a question would be trained
    on and then measured."""
    questions = load_test(path, corpus_ids=corpus_ids)
    test_ids = {q.id for q in test}
    test_texts = {normalise_text(q.question): q.id for q in test}
    for lineno, q in iter_jsonl(path, TestQuestion):
        if q.id in test_ids:
            raise DataError(
                f"{path}:{lineno}: id '{q.id}' is also a question of {test_name}; a question is "
                "either for training or for testing: remove it from one of the files"
            )
        twin = test_texts.get(normalise_text(q.question))
        if twin is not None:
            raise DataError(
                f"{path}:{lineno}: '{q.id}' has the same text as test question '{twin}' of "
                f"{test_name} (after case, accents, punctuation and spacing are normalised); remove it "
                "from one of the files"
            )
    return [q.model_copy(update={"origin": "human"}) for q in questions]


def mark_test_chunks(chunks: Sequence[Chunk], questions: Sequence[TestQuestion]) -> list[Chunk]:
    """Return the chunks with `split="test"` on every chunk relevant to a test question."""
    relevant = {rid for q in questions for rid in q.relevant_ids}
    return [c.model_copy(update={"split": "test"}) if c.id in relevant else c for c in chunks]
