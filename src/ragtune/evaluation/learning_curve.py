"""The learning curve: test Hit@k and MRR@k against the number of labelled real training questions.

How many questions are worth labelling? For each size n of `curve.sizes` (and all of them), an adapter is
trained on the synthetic questions plus the first n of one seeded permutation of the real questions (so
the subsets are nested: every question of a point is in the next), with the train stage's params, and
evaluated on the test questions with bootstrap intervals, beside raw cosine and BM25 (flat lines: they
learn nothing). Point 0 is the synthetic-only adapter. Test questions never reach training or selection:
validation is a seeded slice of the subset's real questions (synthetic validation at 0 and 1). The point
with every real question is the train stage's own adapter when the stage passes it (`shipped`): the same
params on the same data, so training it again would only repeat the train stage's minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ..adapter.bagging import train_bagged
from ..adapter.config import TrainParams
from ..adapter.data import TrainingData, with_real_subset
from ..adapter.model import QueryAdapter, adapt_queries
from ..params import Section
from .arms import EmbeddingArm
from .inputs import QuerySet
from .metrics import EvalParams, per_question_metrics
from .ranking import hit_matrix
from .statistics import bootstrap_interval, paired_bootstrap

log = logging.getLogger(__name__)


class CurveParams(Section):
    """params.yaml `curve`: the learning-curve stage."""

    enabled: bool = True
    # real training questions per point; sizes above the number available are dropped, and "all" is
    # always a point
    sizes: list[int] = Field(default_factory=lambda: [0, 25, 50, 100, 200, 400, 800])
    seed: int = 42  # the permutation the nested subsets are cut from

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one size (0 is the synthetic-only adapter)")
        if any(n < 0 for n in v):
            raise ValueError(f"sizes must be >= 0, got {v}")
        return sorted(set(v))


def nested_subsets(
    n_real: int, sizes: Sequence[int], seed: int, groups: np.ndarray | None = None
) -> list[tuple[int, np.ndarray]]:
    """(n, indices of the real questions in point n, ascending) for each size <= n_real, plus n_real
    itself; each point's questions are the first n of one seeded permutation, so every subset contains
    the smaller ones. A size of 1 is skipped (one real question cannot both train and validate).
    `groups` (m,): each question's distinct question (`RealQuestions.groups`), n_real of them; sizes then
    count distinct questions (what a user labels) and a point holds every copy of each."""
    order = np.random.default_rng(seed).permutation(n_real)
    points = sorted({n for n in sizes if n <= n_real and n != 1} | {n_real})
    groups = np.arange(n_real) if groups is None else groups
    return [(n, np.flatnonzero(np.isin(groups, order[:n]))) for n in points if n != 1]


@dataclass(frozen=True)
class CurveArm:
    """One line of the curve: per-question Hit@main_k and reciprocal rank@mrr_k on the test set."""

    hit: np.ndarray
    rr: np.ndarray


def arm_scores(top_rows: np.ndarray, test: QuerySet, params: EvalParams) -> CurveArm:
    values = per_question_metrics(hit_matrix(top_rows, test.relevant), test.n_relevant, params)
    return CurveArm(values[f"hit@{params.main_k}"], values[f"mrr@{params.mrr_k}"])


def summary_row(n: int, arm: CurveArm, baselines: dict[str, CurveArm], params: EvalParams) -> dict[str, Any]:
    """One point of the curve: the adapter's means and intervals, its paired bootstrap p on MRR against
    raw cosine (`baselines["cosine"]`), and each baseline's means."""
    hit_key, mrr_key = f"hit@{params.main_k}", f"mrr@{params.mrr_k}"
    cosine = baselines["cosine"]
    row: dict[str, Any] = {"n_real": n}
    for key, values in ((hit_key, arm.hit), (mrr_key, arm.rr)):
        ci = bootstrap_interval(values, params.bootstrap_resamples, params.confidence, params.seed)
        row[f"adapter_{key}"] = round(float(values.mean()), 4)
        row[f"adapter_{key}_low"], row[f"adapter_{key}_high"] = round(ci.low, 4), round(ci.high, 4)
    row[f"p_{mrr_key}_vs_cosine"] = round(
        paired_bootstrap(arm.rr, cosine.rr, params.bootstrap_resamples, params.confidence, params.seed).p_value, 4
    )
    for name, base in baselines.items():
        row[f"{name}_{hit_key}"] = round(float(base.hit.mean()), 4)
        row[f"{name}_{mrr_key}"] = round(float(base.rr.mean()), 4)
    return row


def learning_curve(
    train_params: TrainParams,
    data: TrainingData,
    test: QuerySet,
    corpus_emb: np.ndarray,
    baselines: dict[str, CurveArm],
    params: EvalParams,
    curve: CurveParams,
    train: Callable[[TrainParams, TrainingData], Any] = train_bagged,
    shipped: QueryAdapter | None = None,
) -> list[dict[str, Any]]:
    """One row per point: n_real, the adapter's test Hit@main_k and MRR@mrr_k with intervals, its paired
    bootstrap p against raw cosine, and each baseline's (flat) values. `baselines` must hold `cosine`.
    `shipped`: an adapter already trained by `train` with `train_params` on all of `data` (the train stage's),
    evaluated as the last point instead of being trained again."""
    n_real = data.real_questions.n_distinct if data.has_real else 0
    groups = data.real_questions.groups() if data.has_real else None
    rows = []
    for n, keep in nested_subsets(n_real, curve.sizes, curve.seed, groups):
        if n == n_real and n > 0 and shipped is not None:
            log.info("curve: %d real training questions: the shipped adapter", n)
            adapter = shipped
        else:
            subset = with_real_subset(data, keep)
            log.info("curve: %d real training questions (%d training rows)", n, len(subset.question_ids))
            adapter = train(train_params, subset).adapter
        transform = lambda q, a=adapter: adapt_queries(a, q)  # noqa: E731
        top = EmbeddingArm("adapter", corpus_emb, transform).retrieve(test, params.depth)
        rows.append(summary_row(n, arm_scores(top, test, params), baselines, params))
    return rows
