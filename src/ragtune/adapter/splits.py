"""Validation: which questions select the model, and how it scores on them.

Synthetic validation holds out whole chunks (`split_by_chunk`: no validation chunk has a training
question); real validation holds out whole labelled questions (`split_real`). Metrics come from one
batched exact search of all validation questions (Hit@1/5/10 and MRR@10 from one top-`VAL_K`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from ..evaluation.ranking import hit_rate_at_k, mrr_at_k
from ..search.dense import exact_top_k
from .config import TrainParams
from .data import TrainingData
from .model import QueryAdapter
from .real_questions import RealQuestions

VAL_K = 10  # depth of the validation ranking (Hit@1/5/10 and MRR@10 come from one top-10)


@dataclass(frozen=True)
class Split:
    """Question row indices for training and validation; no text group (chunk) is on both sides. With
    real questions, `val_real` indexes the real questions that validate (and `val` is empty)."""

    train: np.ndarray
    val: np.ndarray
    val_real: np.ndarray | None = None

    @property
    def n_validation(self) -> int:
        return len(self.val) if self.val_real is None else len(self.val_real)

    @property
    def validation(self) -> str:
        return "real" if self.val_real is not None else "synthetic"


def split_by_chunk(
    data: TrainingData,
    val_fraction: float,
    seed: int,
    always_train: np.ndarray | None = None,
    max_val_chunks: int | None = None,
) -> Split:
    """Seeded split of the questions by the text group of their chunk, so near-identical
    validation questions never share a chunk with training ones. Rows marked in `always_train` (n,) bool
    (real questions, when validation must stay synthetic) never validate. At most `max_val_chunks` chunks
    validate: each epoch scores every validation question against the whole corpus, so a share of a large
    corpus would make that pass grow as N^2 (the first `max_val_chunks` of the same permutation: below the
    cap the split is the uncapped one)."""
    rows = np.arange(len(data.question_ids)) if always_train is None else np.flatnonzero(~always_train)
    groups = data.text_group[data.gold_rows].cpu().numpy()[rows]
    unique = np.unique(groups)
    if len(unique) < 2:
        n_texts = len(np.unique(data.text_group.cpu().numpy()))
        raise DataError(
            f"training questions cover {len(unique)} distinct chunk text(s), fewer than the 2 needed to hold out "
            f"a validation set (chunks with the same text count as one; the corpus has {n_texts} distinct "
            f"texts among {len(data.corpus_ids)} chunks): synthesize questions for more chunks "
            "(synthesize.max_chunks), or give chunks with different texts"
        )
    rng = np.random.default_rng(seed)
    n_val = min(len(unique) - 1, max(1, math.ceil(val_fraction * len(unique))), max_val_chunks or len(unique))
    val_groups = rng.permutation(unique)[:n_val]
    val = rows[np.isin(groups, val_groups)]
    return Split(train=np.setdiff1d(np.arange(len(data.question_ids)), val), val=val)


def split_real(data: TrainingData, val_fraction: float, seed: int) -> Split:
    """Seeded split of the real questions: `val_fraction` of the distinct questions (at least one) validate,
    with every copy of each (the same text after normalisation, under other ids); every row of the others,
    and every synthetic row, trains. A validating question has no row, and no copy, in training."""
    real = data.real_questions
    m, n_groups = len(real.ids), real.n_distinct
    if n_groups < 2:
        raise DataError(
            f"{m} real training question(s), {n_groups} distinct: at least 2 distinct ones are needed "
            "to hold one out for validation"
        )
    rng = np.random.default_rng(seed)
    n_val = min(n_groups - 1, max(1, math.ceil(val_fraction * n_groups)))
    return _real_holdout(data, np.flatnonzero(np.isin(real.groups(), rng.permutation(n_groups)[:n_val])))


def _real_holdout(data: TrainingData, val_real: np.ndarray) -> Split:
    """Real questions `val_real` validate; every row of the others, and every synthetic row, trains."""
    assert data.row_real is not None  # set with the real questions
    return Split(
        train=np.flatnonzero(~np.isin(data.row_real, val_real)), val=np.zeros(0, dtype=np.int64), val_real=val_real
    )


def deal_folds(n: int, k: int, seed: int) -> np.ndarray:
    """(n,) fold of each item, 0..k-1: a seeded permutation dealt round-robin, so fold sizes differ by at most one."""
    if k < 2 or k > n:
        raise ValueError(f"k-fold needs 2 <= k <= the number of items ({n}), got k={k}")
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return fold


def deal_group_folds(real: RealQuestions, k: int, seed: int) -> np.ndarray:
    """(m,) fold of each of the m `real` questions: its distinct questions are dealt (`deal_folds`), so copies
    of one question share a fold; with no copies, exactly `deal_folds(m, k, seed)`."""
    return deal_folds(real.n_distinct, k, seed)[real.groups()]


def real_fold_splits(data: TrainingData, k: int, seed: int) -> list[Split]:
    """`k` real validation splits whose validation sides are disjoint and together hold every real question
    once (seeded folds of whole questions); split f trains on every synthetic row and the other folds'
    real rows. Tuning scores a configuration on all of them (cross-validation) instead of on one slice."""
    m, n_groups = (len(data.real_questions.ids), data.real_questions.n_distinct) if data.has_real else (0, 0)
    if k > n_groups:
        raise DataError(
            f"tune.real_folds is {k} but there are {m} real training questions ({n_groups} distinct); "
            f"set it to at most {n_groups}, or 0 for one seeded train.real_val_fraction slice"
        )
    fold = deal_group_folds(data.real_questions, k, seed)
    return [_real_holdout(data, np.flatnonzero(fold == f)) for f in range(k)]


def make_split(data: TrainingData, params: TrainParams, seed: int, validation: str = "auto") -> Split:
    """Real validation when the data has labelled real questions (selection and tuning then measure
    what the user's queries look like), otherwise the synthetic split by chunk. `validation="synthetic"`
    keeps the synthetic split and every real row in training (k-fold's shipped adapter, whose real
    questions are the test set: eval must not select on them)."""
    if data.has_real and validation == "auto":
        return split_real(data, params.real_val_fraction, seed)
    always_train = None if data.row_real is None else data.row_real >= 0
    return split_by_chunk(data, params.val_fraction, seed, always_train, params.val_max_chunks)


def _validation_top(adapter: QueryAdapter | None, data: TrainingData, query_emb: torch.Tensor) -> np.ndarray:
    """(n, VAL_K) corpus rows of `query_emb` (n, d), adapted in eval mode when an adapter is given."""
    if adapter is not None:
        was_training = adapter.training
        adapter.eval()
        query_emb = adapter(query_emb)
        adapter.train(was_training)
    return exact_top_k(query_emb, data.corpus_emb, VAL_K)[1]


@torch.no_grad()
def validation_metrics(adapter: QueryAdapter | None, data: TrainingData, rows: np.ndarray) -> dict[str, float]:
    """Hit@1/5/10 and MRR@10 of questions `rows`, all at once: one adapter pass, one batched product
    against the corpus. A chunk with the gold chunk's exact text counts as a hit. `adapter=None`
    scores raw cosine."""
    idx = torch.as_tensor(rows, device=data.question_emb.device)
    top = _validation_top(adapter, data, data.question_emb[idx])
    groups = data.text_group.cpu().numpy()
    gold_groups = groups[data.gold_rows[idx].cpu().numpy()]
    hits = groups[top] == gold_groups[:, None]
    return {
        "hit@1": hit_rate_at_k(hits, 1),
        "hit@5": hit_rate_at_k(hits, 5),
        "hit@10": hit_rate_at_k(hits, 10),
        "mrr@10": mrr_at_k(hits, 10),
    }


@torch.no_grad()
def real_validation_metrics(adapter: QueryAdapter | None, data: TrainingData, real_idx: np.ndarray) -> dict[str, float]:
    """`validation_metrics` for real questions `real_idx`: a hit is any chunk whose text group is one of
    the question's relevant chunks'."""
    real = data.real_questions
    top = _validation_top(adapter, data, torch.as_tensor(real.emb[real_idx], device=data.question_emb.device))
    groups = data.text_group.cpu().numpy()
    wanted = np.zeros((len(real_idx), int(groups.max()) + 1), dtype=bool)
    for i, q in enumerate(real_idx):
        wanted[i, groups[real.relevant[q]]] = True
    hits = wanted[np.arange(len(real_idx))[:, None], groups[top]]
    return {
        "hit@1": hit_rate_at_k(hits, 1),
        "hit@5": hit_rate_at_k(hits, 5),
        "hit@10": hit_rate_at_k(hits, 10),
        "mrr@10": mrr_at_k(hits, 10),
    }


def split_metrics(adapter: QueryAdapter | None, data: TrainingData, split: Split) -> dict[str, float]:
    """Validation metrics of `split`'s validation side, real or synthetic."""
    if split.val_real is not None:
        return real_validation_metrics(adapter, data, split.val_real)
    return validation_metrics(adapter, data, split.val)
