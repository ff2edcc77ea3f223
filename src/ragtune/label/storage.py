"""Where `ragtune label` keeps its judgements: the train-questions file, and a sidecar for "none".

The train-questions file is the data contract fetch reads (`fetch.jsonl.train_questions`): one row per
labelled question, `{"id", "question", "relevant_ids": [...], "answer": null, "origin": "human"}`. A question
the user judged to have no relevant chunk is no training row, but it is kept, so that a resumed session does
not ask it again: in the sidecar `<name>.none.jsonl` beside it, `{"id", "question", "judgement": "none"}`.

Every change rewrites the file it touches through a temporary file that is fsynced and renamed over it (and the
folder fsynced): a kill at any moment leaves the old file or the new one, each line of which parses. A plain
O_APPEND write is not enough: the kernel may stop a write between two pages on SIGKILL, leaving half a line.
A question is one question whatever its case, accents, punctuation or spacing (`textnorm.normalise_text`,
the leakage rule's form), so typing it again edits it. When a question moves between the two files, the labels
file is written first and a question in both counts as labelled: a kill in between leaves a question that
became labelled labelled, and one that became "none" in neither file (asked again); never a wrong judgement.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictStr

from ..errors import DataError, RagtuneError
from ..io import atomic_open
from ..records import TestQuestion, iter_jsonl, load_test, load_train_questions
from ..textnorm import normalise_text


class LeakageRefused(RagtuneError):
    """The question is a test question: labelling it would train on what is measured."""


class NoneJudgement(BaseModel):
    """A question the user judged to have no relevant chunk in the corpus (the sidecar's rows)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictStr
    question: StrictStr
    judgement: Literal["none"] = "none"


@dataclass(frozen=True)
class Judgement:
    """One judged question: its relevant chunk ids, or none (an empty tuple)."""

    id: str
    question: str
    relevant_ids: tuple[str, ...]

    @property
    def none(self) -> bool:
        return not self.relevant_ids


def question_key(question: str) -> str:
    """The form in which two questions are the same question (the leakage rule's normalisation)."""
    return normalise_text(question)


def label_id(question: str) -> str:
    """A stable id for a labelled question: the same question gets the same id in every session."""
    return "label-" + hashlib.sha256(question_key(question).encode("utf-8")).hexdigest()[:12]


def sidecar_path(out: Path) -> Path:
    """`corpus/train_questions.jsonl` -> `corpus/train_questions.none.jsonl`."""
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.none.jsonl")


class LeakageGuard:
    """Refuses a question that is also a test question: the same id, or the same normalised text."""

    def __init__(self, tests: Sequence[tuple[Path, Sequence[TestQuestion]]]):
        self.files = [path for path, _ in tests]
        self.questions = [q for _, questions in tests for q in questions]
        # Each question is named by the first file that has it (the pipeline's test set comes first).
        self._ids: dict[str, Path] = {}
        self._texts: dict[str, tuple[str, Path]] = {}
        for path, questions in tests:
            for q in questions:
                self._ids.setdefault(q.id, path)
                self._texts.setdefault(question_key(q.question), (q.id, path))

    @property
    def count(self) -> int:
        """Distinct test questions (the files repeat each other: fetch's copy, the pipeline's test set)."""
        return len(self._ids)

    @property
    def name(self) -> str:
        return " and ".join(str(p) for p in self.files) or "the test set"

    def check(self, question_id: str, question: str) -> None:
        """Raise LeakageRefused naming the test question and its file when `question` is one."""
        if question_id in self._ids:
            raise LeakageRefused(
                f"id '{question_id}' is a test question of {self._ids[question_id]}: a question is either for "
                "training or for testing; not saved"
            )
        twin = self._texts.get(question_key(question))
        if twin is not None:
            raise LeakageRefused(
                f"'{question}' is test question '{twin[0]}' of {twin[1]} (after case, accents, punctuation and "
                "spacing are normalised): a question is either for training or for testing; not saved"
            )


class LabelStore:
    """The judgements in `out` (labelled) and its sidecar (none), in file order; holds a lock on the folder so
    that no second `ragtune label` rewrites the same files from a stale copy."""

    def __init__(self, out: Path, corpus_ids: Iterable[str], guard: LeakageGuard):
        self.path = Path(out)
        self.none_path = sidecar_path(self.path)
        self.corpus_ids = set(corpus_ids)
        self.guard = guard
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock_folder(self.path)
        self._remove_stale_temp_files()
        self.labelled: dict[str, dict] = self._read_labelled()
        self.nones: dict[str, NoneJudgement] = self._read_nones()
        self._seen = {p: _stamp(p) for p in (self.path, self.none_path)}

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- reading ----------------------------------------------------------------------------------

    def _read_labelled(self) -> dict[str, dict]:
        """The labelled rows as written (a row's extra keys survive an edit), checked like fetch checks them:
        the contract, chunk ids in the corpus, the leakage rule, and one row per question."""
        if not self.path.exists():
            return {}
        if not self.path.is_file():
            raise RagtuneError(f"{self.path}: not a file; give the path of a .jsonl file")
        load_train_questions(self.path, self.guard.questions, self.corpus_ids, self.guard.name)
        out: dict[str, dict] = {}
        lines: dict[str, int] = {}
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                key = question_key(row["question"])
                if key in out:
                    raise DataError(
                        f"{self.path}:{lineno}: '{row['id']}' is the same question as '{out[key]['id']}' on line "
                        f"{lines[key]} (after case, accents, punctuation and spacing are normalised); keep one of them"
                    )
                out[key], lines[key] = row, lineno
        return out

    def _read_nones(self) -> dict[str, NoneJudgement]:
        if not self.none_path.is_file():
            return {}
        # A question in both files is labelled: the edit that moved it into the labelled file won.
        return {
            key: row
            for _, row in iter_jsonl(self.none_path, NoneJudgement)
            if (key := question_key(row.question)) not in self.labelled
        }

    def _remove_stale_temp_files(self) -> None:
        """Temporary files a killed session left (`ragtune.io.atomic_path` names them `.<name>.*.tmp`)."""
        for target in (self.path, self.none_path):
            for tmp in target.parent.glob(f".{target.name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    # --- queries ----------------------------------------------------------------------------------

    def get(self, question: str) -> Judgement | None:
        key = question_key(question)
        if key in self.labelled:
            row = self.labelled[key]
            return Judgement(row["id"], row["question"], tuple(row["relevant_ids"]))
        if key in self.nones:
            none = self.nones[key]
            return Judgement(none.id, none.question, ())
        return None

    def judgements(self) -> list[Judgement]:
        """Every judgement, labelled ones first, each in file order."""
        questions = [row["question"] for row in self.labelled.values()] + [row.question for row in self.nones.values()]
        found = [self.get(q) for q in questions]
        return [j for j in found if j is not None]

    @property
    def counts(self) -> dict[str, int]:
        return {"labelled": len(self.labelled), "none": len(self.nones)}

    # --- writing ----------------------------------------------------------------------------------

    def save(self, question: str, relevant_ids: Sequence[str], question_id: str | None = None) -> Judgement:
        """Record `question`'s relevant chunks (empty: none), durable on disk before this returns. A question
        judged before is edited in place (it keeps its id); a test question is refused (LeakageRefused)."""
        question = question.strip()
        if not question:
            raise RagtuneError("the question is empty")
        relevant = list(dict.fromkeys(relevant_ids))
        unknown = [r for r in relevant if r not in self.corpus_ids]
        if unknown:
            raise RagtuneError(f"chunk id(s) {unknown[:5]} are not in the corpus; reload the page")
        key = question_key(question)
        if not key:
            raise RagtuneError(f"'{question}' has no words to label")
        before = self.get(question)
        qid = before.id if before is not None else self._new_id(question, question_id)
        self.guard.check(qid, question)
        self._check_unchanged_on_disk()
        if relevant:
            # An edit keeps the row's other keys (an answer, the user's own metadata) and its question text.
            row = (
                self.labelled.get(key)
                or TestQuestion(
                    id=qid, question=question, relevant_ids=relevant, answer=None, origin="human"
                ).model_dump()
            )
            self.labelled = {**self.labelled, key: {**row, "relevant_ids": relevant}}
            self._write_labelled()
            if key in self.nones:
                self.nones = {k: v for k, v in self.nones.items() if k != key}
                self._write_nones()
        else:
            if key in self.labelled:
                self.labelled = {k: v for k, v in self.labelled.items() if k != key}
                self._write_labelled()
            if key not in self.nones:
                self.nones = {**self.nones, key: NoneJudgement(id=qid, question=question)}
                self._write_nones()
        return Judgement(qid, question, tuple(relevant))

    def _new_id(self, question: str, wanted: str | None) -> str:
        taken = {row["id"] for row in self.labelled.values()} | {row.id for row in self.nones.values()}
        base = wanted or label_id(question)
        qid, n = base, 1
        while qid in taken:
            n += 1
            qid = f"{base}-{n}"
        return qid

    def _check_unchanged_on_disk(self) -> None:
        for path, seen in self._seen.items():
            if _stamp(path) != seen:
                raise RagtuneError(
                    f"{path} changed on disk since ragtune label read it (edited by hand?); nothing was saved: "
                    "restart ragtune label to read it again"
                )

    def _write_labelled(self) -> None:
        _rewrite(self.path, (json.dumps(row, ensure_ascii=False) for row in self.labelled.values()))
        self._seen[self.path] = _stamp(self.path)

    def _write_nones(self) -> None:
        _rewrite(self.none_path, (row.model_dump_json() for row in self.nones.values()))
        self._seen[self.none_path] = _stamp(self.none_path)


def _rewrite(path: Path, lines: Iterable[str]) -> None:
    """Replace `path` by `lines` atomically and durably: temp file fsynced, renamed, folder fsynced."""
    with atomic_open(path) as fh:
        for line in lines:
            fh.write(line + "\n")
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of `path`, None when absent: a rename or a hand edit changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _lock_folder(out: Path) -> int:
    """An exclusive lock on the output's folder, held while the store is open (released by the kernel when
    the process ends, however it ends)."""
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RagtuneError(
            f"another ragtune label is writing labels in {out.parent}: stop it first (one labelling session "
            "per folder, or its edits would overwrite each other)"
        ) from None
    return fd


def load_questions_file(path: Path) -> list[tuple[str | None, str]]:
    """Unlabelled questions to step through: `(id or None, question)` in file order. A .jsonl file has one
    object a line with "question" (and optionally "id"); any other file one question a line."""
    if not path.is_file():
        raise RagtuneError(f"{path}: file not found (--questions)")
    out: list[tuple[str | None, str]] = []
    if path.suffix == ".jsonl":
        out = [(None if row.id is None else row.id, row.question) for _, row in iter_jsonl(path, _QueuedQuestion)]
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise RagtuneError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        out = [(None, line.strip()) for line in lines if line.strip()]
    if not out:
        raise RagtuneError(f"{path}: no questions in the file")
    return out


class _QueuedQuestion(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    question: StrictStr
    id: StrictStr | None = None


def load_tests(paths: Sequence[Path], corpus_ids: Iterable[str]) -> list[tuple[Path, list[TestQuestion]]]:
    """The test files that exist among `paths`, each read by the test contract (file:line errors)."""
    ids = set(corpus_ids)
    return [(p, load_test(p, corpus_ids=ids)) for p in dict.fromkeys(paths) if p.is_file()]
