"""Per-question ranking metrics and their summaries: hit matrices in, intervals and paired tests out.

`hit_matrix` turns an arm's ranking (n, depth) into booleans (n, depth); Hit@k, MRR@k, nDCG@k and
Recall@k are per-question arrays (n,) computed from it, so every interval is a bootstrap over questions
and every comparison of two arms is a paired test on the same questions (`ragtune.evaluation.statistics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field, model_validator

from ..labels import metric_label, round_metric, round_p
from ..params import Section
from ..search.fusion import HybridParams
from ..search.lexical import Bm25Params
from .ranking import first_relevant_rank, per_query_ndcg, per_query_recall
from .recommend import RecommendParams
from .statistics import bootstrap_intervals, holm_adjust, mcnemar_exact, paired_bootstrap, sign_test

K = Annotated[int, Field(ge=1, le=1000)]


class EvalParams(Section):
    """Which cut-offs to report, how to bootstrap, the lexical baseline and the hybrid arms."""

    hit_ks: list[K] = [1, 3, 5, 10, 20]
    recall_ks: list[K] = [5, 10, 20]
    mrr_k: K = 20
    ndcg_k: K = 10
    main_k: K = 5
    mcnemar_ks: list[K] = [5, 20]
    bootstrap_resamples: int = Field(10_000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    seed: int = 42
    linear_adapter: bool = True
    bm25: Bm25Params = Bm25Params()
    hybrid: HybridParams = HybridParams()
    recommend: RecommendParams = RecommendParams()

    @model_validator(mode="after")
    def _check_ks(self) -> EvalParams:
        for name in ("hit_ks", "recall_ks", "mcnemar_ks"):
            ks = getattr(self, name)
            if not ks or len(set(ks)) != len(ks):
                raise ValueError(f"{name} must be a non-empty list of distinct cut-offs, got {ks}")
        if self.main_k not in self.hit_ks:
            raise ValueError(f"main_k ({self.main_k}) must be one of hit_ks {self.hit_ks}")
        missing = [k for k in self.mcnemar_ks if k not in self.hit_ks]
        if missing:
            raise ValueError(f"mcnemar_ks {missing} must be among hit_ks {self.hit_ks}")
        return self

    @property
    def depth(self) -> int:
        """How many results each arm retrieves: the largest cut-off any metric needs."""
        return max([*self.hit_ks, *self.recall_ks, self.mrr_k, self.ndcg_k])


def per_question_metrics(hits: np.ndarray, n_relevant: np.ndarray, params: EvalParams) -> dict[str, np.ndarray]:
    """Per-question values (float arrays of length n) of every metric that averages over all questions."""
    rank = first_relevant_rank(hits)
    out = {f"hit@{k}": ((rank > 0) & (rank <= k)).astype(np.float64) for k in params.hit_ks}
    out[f"mrr@{params.mrr_k}"] = np.where((rank > 0) & (rank <= params.mrr_k), 1.0 / np.maximum(rank, 1), 0.0)
    out[f"ndcg@{params.ndcg_k}"] = per_query_ndcg(hits, n_relevant, params.ndcg_k)
    return out


def per_question_recall(hits: np.ndarray, n_relevant: np.ndarray, params: EvalParams) -> dict[str, np.ndarray]:
    return {f"recall@{k}": per_query_recall(hits, n_relevant, k) for k in params.recall_ks}


def _interval_summary(values: Mapping[str, np.ndarray], params: EvalParams) -> dict[str, Any]:
    """Means with bootstrap intervals; all columns share one resampling (same seed) in one matrix product."""
    names = list(values)
    matrix = np.stack([values[n] for n in names], axis=1)
    intervals = bootstrap_intervals(matrix, params.bootstrap_resamples, params.confidence, params.seed)
    return {n: iv for n, iv in zip(names, intervals)}


def summarise_arm(hits: np.ndarray, n_relevant: np.ndarray, params: EvalParams) -> dict[str, Any]:
    """{metric: value, ..., "ci": {metric: [low, high]}}; recall only over questions with >= 2 relevant chunks."""
    intervals = _interval_summary(per_question_metrics(hits, n_relevant, params), params)
    multi = n_relevant >= 2
    if multi.any():
        intervals.update(_interval_summary(per_question_recall(hits[multi], n_relevant[multi], params), params))
    out: dict[str, Any] = {name: round_metric(iv.value) for name, iv in intervals.items()}
    out["ci"] = {name: [round_metric(iv.low), round_metric(iv.high)] for name, iv in intervals.items()}
    return out


def compare_arms(
    hits_base: np.ndarray,
    hits_new: np.ndarray,
    n_relevant: np.ndarray,
    params: EvalParams,
    name_new: str,
    name_base: str,
    set_label: str,
) -> dict[str, Any]:
    """`name_new` against `name_base`, paired per question: exact McNemar on Hit@k (gained/lost counts),
    paired bootstrap (and sign test) on MRR; Holm correction over these tests for the overall verdict."""
    base = per_question_metrics(hits_base, n_relevant, params)
    new = per_question_metrics(hits_new, n_relevant, params)
    out: dict[str, Any] = {}
    tests: list[tuple[str, float]] = []
    for k in params.mcnemar_ks:
        key = f"hit@{k}"
        m = mcnemar_exact(base[key] > 0, new[key] > 0)
        out[key] = {
            "diff": round_metric(float(new[key].mean() - base[key].mean())),
            "gained": m.gained,
            "lost": m.lost,
            "p": round_p(m.p_value),
        }
        tests.append((key, m.p_value))
    mrr_key = f"mrr@{params.mrr_k}"
    pb = paired_bootstrap(new[mrr_key], base[mrr_key], params.bootstrap_resamples, params.confidence, params.seed)
    delta = new[mrr_key] - base[mrr_key]
    improved, worsened = int((delta > 0).sum()), int((delta < 0).sum())
    out[mrr_key] = {
        "diff": round_metric(pb.diff),
        "ci": [round_metric(pb.low), round_metric(pb.high)],
        "p": round_p(pb.p_value),
        "improved": improved,
        "worsened": worsened,
        "sign_test_p": round_p(sign_test(improved, worsened)),
    }
    tests.append((mrr_key, pb.p_value))
    adjusted = holm_adjust([p for _, p in tests])
    significant_keys = [key for (key, _), p in zip(tests, adjusted) if p < params.alpha]
    for (key, _), p in zip(tests, adjusted):
        out[key]["p_holm"] = round_p(p)
    out["significant"] = bool(significant_keys)
    out["verdict"] = _verdict(out, tests, significant_keys, params, name_new, name_base, set_label)
    return out


def _verdict(
    cmp: Mapping[str, Any],
    tests: Sequence[tuple[str, float]],
    significant_keys: Sequence[str],
    params: EvalParams,
    name_new: str,
    name_base: str,
    set_label: str,
) -> str:
    parts = []
    for key, _ in tests:
        c = cmp[key]
        label = metric_label(key)
        if key.startswith("hit@"):
            parts.append(
                f"{label} {c['diff'] * 100:+.1f} pts ({c['gained']} gained, {c['lost']} lost, McNemar p={c['p']:.3g})"
            )
        else:
            parts.append(
                f"{label} {c['diff']:+.3f} ({params.confidence:.0%} CI {c['ci'][0]:+.3f} to "
                f"{c['ci'][1]:+.3f}, p={c['p']:.3g})"
            )
    head = f"{name_new} vs {name_base} on {set_label}: " + "; ".join(parts) + ". "
    if not significant_keys:
        return head + (
            f"Not significant at alpha={params.alpha:g} (Holm over {len(tests)} tests): the difference may be noise."
        )
    signs = {np.sign(cmp[k]["diff"]) for k in significant_keys}
    direction = "better" if signs == {1.0} else "worse" if signs == {-1.0} else "mixed"
    return head + (
        f"Significant at alpha={params.alpha:g} (Holm over {len(tests)} tests) on "
        f"{', '.join(significant_keys)}: {name_new} is {direction}."
    )
