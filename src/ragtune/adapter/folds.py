"""k-fold over the human test questions, for a user whose only labelled questions are the test set.

The test questions are dealt into `k` seeded folds (copies of one question, by normalised text, share a
fold). Fold f's adapter trains on the synthetic questions, the user's other real questions (if any) and the
test questions of every *other* fold; its validation (model selection) is a seeded slice of those, so
nothing of fold f reaches its training or selection. Tuning never reads test questions at all. Eval then
scores each test question with its own fold's adapter and pools the out-of-fold rankings into the usual
report. The shipped adapter trains on all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bagging import BaggedResult, train_bagged
from .config import TrainParams
from .data import TrainingData, synthetic_part, with_real_questions
from .real_questions import RealQuestions
from .splits import deal_group_folds


def assign_folds(questions: RealQuestions, k: int, seed: int) -> dict[str, int]:
    """Question id -> fold (0..k-1): the distinct questions in a seeded permutation dealt round-robin, so
    fold sizes differ by at most one question (without copies), and the copies of a question asked twice
    share its fold: none of them can train the adapter that is tested on another."""
    return dict(zip(questions.ids, deal_group_folds(questions, k, seed).tolist()))


def join_real(*parts: RealQuestions | None) -> RealQuestions:
    """Several sets of real questions as one (ids must not repeat). A part without keys counts each of its
    questions as distinct."""
    present = [p for p in parts if p is not None and p.ids]
    ids = [q for p in present for q in p.ids]
    if len(set(ids)) != len(ids):
        raise ValueError("a real question id appears in two sets")
    dim = present[0].emb.shape[1] if present else 0
    keys = None
    if any(p.keys is not None for p in present):  # "\0" + id: a key no normalised text can equal
        keys = [k for p in present for k in (p.keys if p.keys is not None else ["\0" + i for i in p.ids])]
    return RealQuestions(
        ids,
        np.concatenate([p.emb for p in present]) if present else np.zeros((0, dim), np.float32),
        [r for p in present for r in p.relevant],
        keys,
    )


@dataclass
class FoldResult:
    fold: int
    result: Any  # what `train` returned (a BaggedResult)
    trained_on: list[str]  # the real question ids its training data held (validation included)


def train_folds(
    params: TrainParams,
    data: TrainingData,
    test_real: RealQuestions,
    fold_of: dict[str, int],
    train: Callable[[TrainParams, TrainingData], BaggedResult] = train_bagged,
) -> list[FoldResult]:
    """One adapter per fold: `data` (synthetic plus any real training questions) with the test questions
    of the other folds added. `test_real` holds the human test questions, `fold_of` their folds."""
    base = synthetic_part(data)
    k = max(fold_of.values()) + 1
    out = []
    for fold in range(k):
        others = test_real.take([i for i, q in enumerate(test_real.ids) if fold_of[q] != fold])
        real = join_real(data.real, others)
        out.append(FoldResult(fold, train(params, with_real_questions(base, real)), list(real.ids)))
    return out


def with_all_test_questions(data: TrainingData, test_real: RealQuestions) -> TrainingData:
    """The shipped adapter's data under k-fold: every human test question joins the real ones."""
    return with_real_questions(synthetic_part(data), join_real(data.real, test_real))
