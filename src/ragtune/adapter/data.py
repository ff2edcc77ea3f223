"""Training data: questions and the chunks they are about, as tensors row-aligned with their ids.

`load_training_data` reads the embed and fetch outputs: synthetic questions `question_emb` (n, d), the
corpus `corpus_emb` (m, d), each question's positive chunk row, its text group (same-text chunks are never
each other's negatives), mined hard negatives, and the user's labelled real questions when given
(`with_real_questions`: one row per (question, relevant chunk) after the synthetic rows; `synthetic_part` and
`with_real_subset` take them out again).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..paths import PipelinePaths
from ..search.dense import exact_top_k
from .hard_negatives import Candidates, MiningRule, mine_hard_negatives, rank_candidates
from .losses import text_groups
from .real_questions import RealQuestions, load_real_questions

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Frozen embeddings, row-aligned. `gold_rows[i]` is the corpus row of question i's chunk;
    `text_group[r]` is shared by corpus rows with identical text."""

    corpus_ids: list[str]
    corpus_emb: torch.Tensor  # (N, d) float32
    text_group: torch.Tensor  # (N,) int64
    question_ids: list[str]
    question_emb: torch.Tensor  # (n, d) float32
    gold_rows: torch.Tensor  # (n,) int64
    dropped: dict[str, int] = field(default_factory=dict)
    parent_group: np.ndarray | None = None  # (N,) int64, shared by chunks of one parent document
    stats: dict[str, Any] = field(default_factory=dict)
    _candidates: Candidates | None = field(default=None, repr=False)
    # Labelled real questions (`with_real_questions`): their rows follow the synthetic ones, one per
    # (question, relevant chunk); `row_real[i]` is row i's real question (-1: synthetic) and
    # `relevant[i]` every corpus row relevant to it (-1 padded), masked as negatives.
    real: RealQuestions | None = None
    row_real: np.ndarray | None = None  # (n,) int64
    relevant: torch.Tensor | None = None  # (n, r) int64

    @property
    def has_real(self) -> bool:
        return self.real is not None and len(self.real.ids) > 0

    @property
    def real_questions(self) -> RealQuestions:
        """`real`, where code runs only with real questions (the typed view of it: never None)."""
        if self.real is None:
            raise ValueError("the training data has no real questions")
        return self.real

    @property
    def dim(self) -> int:
        return int(self.corpus_emb.shape[1])

    def to(self, device: str) -> TrainingData:
        return TrainingData(
            self.corpus_ids,
            self.corpus_emb.to(device),
            self.text_group.to(device),
            self.question_ids,
            self.question_emb.to(device),
            self.gold_rows.to(device),
            dict(self.dropped),
            self.parent_group,
            dict(self.stats),
            self._candidates,
            self.real,
            self.row_real,
            None if self.relevant is None else self.relevant.to(device),
        )

    def hard_negatives(self, rule: MiningRule) -> torch.Tensor:
        """(n, rule.count) mined negatives per question (-1 padded). The raw-cosine ranking is computed
        once, to the deepest window asked for, and reused by every later rule (tuning trials)."""
        depth = min(rule.max_rank, len(self.corpus_ids))
        if self._candidates is None or self._candidates.depth < depth:
            self._candidates = rank_candidates(self.question_emb.cpu(), self.corpus_emb.cpu(), depth)
        negatives = mine_hard_negatives(
            self.question_emb.cpu(),
            self.gold_rows.cpu().numpy(),
            self.corpus_emb.cpu(),
            self.text_group.cpu().numpy(),
            self.parent_group,
            rule,
            self._candidates,
        )
        if self.relevant is not None:
            # A chunk relevant to the row's (real) question is no negative of it.
            groups = self.text_group.cpu().numpy()
            relevant = self.relevant.cpu().numpy()
            rel_groups = np.where(relevant >= 0, groups[np.maximum(relevant, 0)], -1)
            neg_groups = np.where(negatives >= 0, groups[np.maximum(negatives, 0)], -2)
            negatives = np.where((neg_groups[:, :, None] == rel_groups[:, None, :]).any(axis=2), -1, negatives)
        return torch.as_tensor(negatives)


# Backends whose "questions" are drawn from the chunk itself: round-trip filtering would keep them all.
NO_MODEL_BACKENDS = frozenset({"ict"})
# A question whose raw cosine to its own chunk is at least this is a near-copy of the chunk: it teaches
# nothing (raw cosine already ranks it first) and inflates validation.
NEAR_COPY_COSINE = 0.95


def build_training_data(
    corpus_ids: Sequence[str],
    corpus_emb: np.ndarray,
    corpus_texts: Sequence[str],
    question_ids: Sequence[str],
    question_emb: np.ndarray,
    question_chunk_ids: Sequence[str],
    test_chunk_ids: Sequence[str] = (),
    source: str = "questions",
    corpus_parents: Sequence[str | None] | None = None,
    question_backends: Sequence[str] | None = None,
    round_trip_top_k: int | None = None,
) -> TrainingData:
    """Align questions to corpus rows. Questions about `test_chunk_ids` (chunks a test question is
    measured on that training must not see) are dropped; a question whose chunk is not in the corpus is
    an error. With `round_trip_top_k`, questions written by a language model (`question_backends`) whose
    chunk raw cosine does not rank within that many are dropped too (round-trip consistency)."""
    if corpus_emb.shape[0] != len(corpus_ids) or len(corpus_texts) != len(corpus_ids):
        raise DataError(
            f"corpus: {len(corpus_ids)} ids, {corpus_emb.shape[0]} embeddings and "
            f"{len(corpus_texts)} texts; rerun the embed stage"
        )
    if question_emb.shape[0] != len(question_ids) or len(question_chunk_ids) != len(question_ids):
        raise DataError(
            f"{source}: {len(question_ids)} ids, {question_emb.shape[0]} embeddings and "
            f"{len(question_chunk_ids)} chunk ids; rerun the embed stage"
        )
    if question_emb.shape[1] != corpus_emb.shape[1]:
        raise DataError(
            f"{source}: questions are {question_emb.shape[1]}-d but the corpus is "
            f"{corpus_emb.shape[1]}-d; embed both with the same model"
        )
    row_of = {cid: i for i, cid in enumerate(corpus_ids)}
    missing = [c for c in question_chunk_ids if c not in row_of]
    if missing:
        raise DataError(
            f"{source}: {len(missing)} question(s) name chunks not in the corpus "
            f"(first: {missing[0]!r}); rerun synthesize and embed on the current corpus"
        )
    corpus = np.ascontiguousarray(corpus_emb, dtype=np.float32)
    questions = np.ascontiguousarray(question_emb, dtype=np.float32)
    held_out = set(test_chunk_ids)
    keep = np.fromiter((c not in held_out for c in question_chunk_ids), dtype=bool, count=len(question_ids))
    n_dropped = int((~keep).sum())
    if n_dropped:
        log.warning("%s: dropped %d question(s) about held-out test chunks", source, n_dropped)
    gold = np.fromiter((row_of[c] for c in question_chunk_ids), dtype=np.int64, count=len(question_ids))
    groups = text_groups(list(corpus_texts))
    dropped = {"test_chunk_questions": n_dropped}
    if round_trip_top_k is not None and question_backends is not None:
        generated = keep & np.fromiter(
            (b not in NO_MODEL_BACKENDS for b in question_backends), dtype=bool, count=len(question_ids)
        )
        rows = np.flatnonzero(generated)
        if len(rows):
            _, top = exact_top_k(questions[rows], corpus, round_trip_top_k)
            found = (groups[top] == groups[gold[rows]][:, None]).any(axis=1)
            keep[rows[~found]] = False
            dropped["round_trip"] = int((~found).sum())
    if not keep.any():
        raise DataError(f"{source}: no training questions left; run the synthesize stage")
    near_copy = (questions[keep] * corpus[gold[keep]]).sum(axis=1) >= NEAR_COPY_COSINE
    stats = {"near_copy_questions": int(near_copy.sum()), "near_copy_share": round(float(near_copy.mean()), 4)}
    parent_group = None
    if corpus_parents is not None and any(p is not None for p in corpus_parents):
        # A chunk without a parent is its own document: it gets a group no other chunk shares.
        keys = [p if p is not None else ("\0chunk", i) for i, p in enumerate(corpus_parents)]
        first: dict[Any, int] = {}
        parent_group = np.fromiter((first.setdefault(k, len(first)) for k in keys), dtype=np.int64, count=len(keys))
    return TrainingData(
        corpus_ids=list(corpus_ids),
        corpus_emb=torch.as_tensor(corpus),
        text_group=torch.as_tensor(groups),
        question_ids=[q for q, k in zip(question_ids, keep) if k],
        question_emb=torch.as_tensor(questions[keep]),
        gold_rows=torch.as_tensor(gold[keep]),
        dropped=dropped,
        parent_group=parent_group,
        stats=stats,
    )


# The pipeline outputs the tune, train and curve stages read, in `load_training_data`'s argument order.
TRAINING_INPUTS = tuple(str(p) for p in PipelinePaths().training_inputs())


def load_training_data(
    questions_npz: str | Path,
    corpus_npz: str | Path,
    corpus_jsonl: str | Path,
    test_jsonl: str | Path | None = None,
    real_jsonl: str | Path | None = None,
    real_npz: str | Path | None = None,
    *,
    round_trip_top_k: int | None = None,
) -> TrainingData:
    """Read the embed stage's questions.npz (`ids`, `emb`, `chunk_ids`, optional `backends`) and
    corpus.npz, and the fetch stage's corpus.jsonl (texts for the identical-text mask, parents). With
    `real_jsonl` (fetch's train_questions.jsonl) and `real_npz` (embed's real.npz), labelled real
    questions join the synthetic ones (`with_real_questions`) when the file has any.

    Which chunks training must not see: with `test_jsonl` (the pipeline's test set), the chunks of its
    *synthetic* test questions (made for held-out chunks: training on them would measure what was
    trained); the synthesize stage already applied `synthesize.test_chunks` to human test chunks.
    Without it, every chunk marked `split: test` (the strict protocol)."""
    from ..embeddings_npz import load_embeddings_with_columns
    from ..records import load_corpus, load_test

    q_ids, q_emb, cols = load_embeddings_with_columns(questions_npz)
    if "chunk_ids" not in cols:
        raise DataError(f"{questions_npz}: no `chunk_ids` column; rerun the embed stage with --questions")
    c_ids, c_emb, _ = load_embeddings_with_columns(corpus_npz)
    chunks = {c.id: c for c in load_corpus(corpus_jsonl)}
    absent = [cid for cid in c_ids if cid not in chunks]
    if absent:
        raise DataError(
            f"{corpus_npz}: {len(absent)} embedded chunk(s) not in {corpus_jsonl} "
            f"(first: {absent[0]!r}); rerun the embed stage"
        )
    texts = [chunks[cid].text for cid in c_ids]
    if test_jsonl is None:
        held_out = [cid for cid, c in chunks.items() if c.split == "test"]
    else:
        held_out = synthetic_test_chunks(load_test(test_jsonl, corpus_ids=c_ids))
    data = build_training_data(
        c_ids,
        c_emb,
        texts,
        q_ids,
        q_emb,
        cols["chunk_ids"],
        held_out,
        source=str(questions_npz),
        corpus_parents=[chunks[cid].parent for cid in c_ids],
        question_backends=cols.get("backends"),
        round_trip_top_k=round_trip_top_k,
    )
    # A workspace from before real questions existed has no such file: no real questions.
    if real_jsonl is not None and real_npz is not None and Path(real_jsonl).is_file():
        real = load_real_questions(real_jsonl, real_npz, c_ids)
        if real.ids:
            data = with_real_questions(data, real)
    return data


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


def synthetic_test_chunks(tests: Sequence[Any]) -> list[str]:
    """Chunks that synthetic test questions were written for: never training material."""
    return sorted({rid for q in tests if q.origin == "synthetic" for rid in q.relevant_ids})
