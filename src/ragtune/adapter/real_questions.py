"""Labelled real training questions (a query log, reviewed tickets) in the training data.

A real question can have several relevant chunks: it becomes one training row per (question, relevant
chunk), after the synthetic rows, and every row carries all of its question's relevant chunks, which the
losses (`ragtune.adapter.model`) and the hard-negative miner never use as its negatives. Validation on them is
`training.split_real`; the learning curve uses `with_real_subset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .data import TrainingData
from .hard_negatives import Candidates
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

    def take(self, keep: Sequence[int]) -> RealQuestions:
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


def with_real_questions(data: TrainingData, real: RealQuestions) -> TrainingData:
    """`data` with the real questions added: one training row per (question, relevant chunk), after the
    synthetic rows. Each row carries all of its question's relevant chunks, which the losses and the
    hard-negative miner never use as its negatives."""
    if real.emb.shape[0] != len(real.ids) or len(real.relevant) != len(real.ids):
        raise DataError(
            f"real questions: {len(real.ids)} ids, {real.emb.shape[0]} embeddings and "
            f"{len(real.relevant)} relevance lists; rerun the embed stage"
        )
    if len(real.ids) and real.emb.shape[1] != data.dim:
        raise DataError(
            f"real questions are {real.emb.shape[1]}-d but the corpus is {data.dim}-d; embed both with the same model"
        )
    n_syn = len(data.question_ids)
    counts = np.array([len(r) for r in real.relevant], dtype=np.int64)
    owner = np.repeat(np.arange(len(real.ids), dtype=np.int64), counts)
    gold = np.concatenate(real.relevant).astype(np.int64) if len(real.ids) else np.zeros(0, np.int64)
    width = int(counts.max()) if len(counts) else 1
    relevant = np.full((n_syn + len(gold), width), -1, dtype=np.int64)
    relevant[:n_syn, 0] = data.gold_rows.cpu().numpy()
    padded = np.full((len(real.ids), width), -1, dtype=np.int64)
    for i, rows in enumerate(real.relevant):  # m small lists: a loop over questions, not over pairs
        padded[i, : len(rows)] = rows
    relevant[n_syn:] = padded[owner]
    emb = torch.cat([data.question_emb.cpu(), torch.as_tensor(np.ascontiguousarray(real.emb[owner], dtype=np.float32))])
    return TrainingData(
        corpus_ids=data.corpus_ids,
        corpus_emb=data.corpus_emb,
        text_group=data.text_group,
        question_ids=data.question_ids + [real.ids[i] for i in owner],
        question_emb=emb,
        gold_rows=torch.cat([data.gold_rows.cpu(), torch.as_tensor(gold)]),
        dropped=dict(data.dropped),
        parent_group=data.parent_group,
        stats={**data.stats, "real_questions": len(real.ids), "real_rows": int(len(gold))},
        real=real,
        row_real=np.concatenate([np.full(n_syn, -1, dtype=np.int64), owner]),
        relevant=torch.as_tensor(relevant),
    )


def synthetic_part(data: TrainingData) -> TrainingData:
    """`data` without its real questions (the synthetic rows come first)."""
    if data.row_real is None:
        return data
    n_syn = int((data.row_real < 0).sum())
    stats = {k: v for k, v in data.stats.items() if not k.startswith("real_")}
    return TrainingData(
        data.corpus_ids,
        data.corpus_emb,
        data.text_group,
        data.question_ids[:n_syn],
        data.question_emb[:n_syn],
        data.gold_rows[:n_syn],
        dict(data.dropped),
        data.parent_group,
        stats,
        None
        if data._candidates is None
        else Candidates(data._candidates.rows[:n_syn], data._candidates.scores[:n_syn]),
    )


def with_real_subset(data: TrainingData, keep: np.ndarray) -> TrainingData:
    """`data` with only the real questions `keep` (indices, in file order); none: synthetic only."""
    base = synthetic_part(data)
    if data.real is None or len(keep) == 0:
        return base
    return with_real_questions(base, data.real.take(np.sort(np.asarray(keep, dtype=np.int64))))


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
