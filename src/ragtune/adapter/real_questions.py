"""Labelled real training questions (a query log, reviewed tickets): what they are and how they are read.

A real question can have several relevant chunks: `ragtune.adapter.data.with_real_questions` makes it one
training row per (question, relevant chunk), after the synthetic rows, and every row carries all of its
question's relevant chunks, which the losses (`ragtune.adapter.model`) and the hard-negative miner never use as
its negatives. Validation on them is `splits.split_real`; the learning curve uses `data.with_real_subset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .losses import text_groups


@dataclass(frozen=True)
class RealQuestions:
    """Labelled real questions (a query log, reviewed tickets): ids, embeddings (m, d) float32 and the
    corpus rows relevant to each (int64 arrays)."""

    ids: list[str]
    emb: np.ndarray
    relevant: list[np.ndarray]
    # Each question's text after `textnorm.normalise_text` (None: every question counts as distinct). A query log
    # repeats its popular questions under new ids; every held-out split keeps the copies on one side.
    keys: list[str] | None = None

    def take(self, keep: Sequence[int] | np.ndarray) -> RealQuestions:
        """The questions at indices `keep`, in that order."""
        keep = list(keep)
        return RealQuestions(
            [self.ids[i] for i in keep],
            self.emb[keep],
            [self.relevant[i] for i in keep],
            None if self.keys is None else [self.keys[i] for i in keep],
        )

    def groups(self) -> np.ndarray:
        """(m,) int64: one id per distinct question, numbered in order of first appearance (with no repeated
        question, question i is group i)."""
        return np.arange(len(self.ids), dtype=np.int64) if self.keys is None else text_groups(self.keys)

    @property
    def n_distinct(self) -> int:
        """How many distinct questions (copies counted once)."""
        return len(self.ids) if self.keys is None else len(set(self.keys))


def load_real_questions(
    questions_jsonl: str | Path, questions_npz: str | Path, corpus_ids: Sequence[str], human_only: bool = False
) -> RealQuestions:
    """The fetch stage's train_questions.jsonl with the embed stage's real.npz, rows in the file's order
    (or, for k-fold, a test.jsonl with test.npz and `human_only`: synthetic test questions never train)."""
    from ..embeddings_npz import embeddings_for
    from ..records import load_test
    from ..textnorm import normalise_text

    questions = load_test(questions_jsonl, corpus_ids=corpus_ids)
    if human_only:
        questions = [q for q in questions if q.origin == "human"]
    corpus_row = {cid: i for i, cid in enumerate(corpus_ids)}
    return RealQuestions(
        ids=[q.id for q in questions],
        emb=embeddings_for([q.id for q in questions], questions_npz, f"questions of {questions_jsonl}"),
        relevant=[np.array([corpus_row[r] for r in q.relevant_ids], dtype=np.int64) for q in questions],
        keys=[normalise_text(q.question) for q in questions],
    )
