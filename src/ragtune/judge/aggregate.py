"""From judgements to numbers: swapped display orders folded into per-arm scores, agreement and bias.

Shapes: `position_scores` (n_questions, n_orders, 2 positions, n_metrics) as the judge saw the answers;
`arm_scores` (n_questions, n_orders, n_arms, n_metrics) after `to_arm_scores`, NaN where a judgement
failed. Means over orders, order agreement, position preference and per-arm intervals and paired tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..evaluation.statistics import bootstrap_interval, paired_bootstrap, sign_test
from ..labels import round_metric, round_p
from .prompts import ARMS, JUDGE_METRICS, ORDERS


def to_arm_scores(
    position_scores: np.ndarray, orders: Sequence[tuple[str, str]] = ORDERS, arms: Sequence[str] = ARMS
) -> np.ndarray:
    """(n, n_orders, 2 positions, M) -> (n, n_orders, n_arms, M): each arm's scores in each order."""
    out = np.empty(position_scores.shape[:2] + (len(arms),) + position_scores.shape[3:], dtype=np.float64)
    for o, order in enumerate(orders):
        out[:, o] = position_scores[:, o][:, [order.index(a) for a in arms]]
    return out


def judged_mask(arm_scores: np.ndarray) -> np.ndarray:
    """Questions whose every order was judged: bool (n,)."""
    return ~np.isnan(arm_scores).any(axis=(1, 2, 3))


def mean_over_orders(arm_scores: np.ndarray) -> np.ndarray:
    """(n, n_orders, n_arms, M) -> (n, n_arms, M): each answer's score averaged over the display orders."""
    return arm_scores.mean(axis=1)


def order_agreement(arm_scores: np.ndarray, include: np.ndarray | None = None) -> dict[str, Any]:
    """How often the two display orders prefer the same arm (or both tie), per metric, over questions
    judged in both orders (and in `include`, bool (n,)); also the mean absolute change of an answer's
    score between orders. Pairs of identical answers belong outside `include`: both orders are then
    the same request, so they would agree by construction."""
    if arm_scores.shape[1] < 2:
        return {"questions": 0, "note": "swap_order is off: agreement cannot be measured"}
    ok = judged_mask(arm_scores) & (True if include is None else np.asarray(include, dtype=bool))
    s = arm_scores[ok]
    pref = np.sign(s[:, :, 1, :] - s[:, :, 0, :])  # (n, orders, M): +1 when the adapter's answer wins
    agree = pref[:, 0, :] == pref[:, 1, :]
    shift = np.abs(s[:, 0] - s[:, 1]).mean(axis=(0, 1)) if len(s) else np.full(len(JUDGE_METRICS), np.nan)
    n = int(ok.sum())
    return {
        "questions": n,
        "rate": {m: round_metric(agree[:, j].mean()) if n else None for j, m in enumerate(JUDGE_METRICS)},
        "overall_winner_rate": round_metric(agree[:, -1].mean()) if n else None,
        "mean_abs_score_shift": {m: round_metric(shift[j]) if n else None for j, m in enumerate(JUDGE_METRICS)},
    }


def position_preference(
    position_scores: np.ndarray, metric: str = "overall", include: np.ndarray | None = None
) -> dict[str, Any]:
    """Over all valid judgements (of questions in `include`): share where the answer shown first scored
    higher, lower, or the same on `metric`. With both orders judged, each arm is shown first equally
    often, so a judge without position bias prefers first and second equally often."""
    j = JUDGE_METRICS.index(metric)
    rows = slice(None) if include is None else np.asarray(include, dtype=bool)
    s = position_scores[rows][..., j].reshape(-1, 2)
    s = s[~np.isnan(s).any(axis=1)]
    n = len(s)
    diff = s[:, 0] - s[:, 1]
    return {
        "metric": metric,
        "judgements": n,
        "first_preferred": round_metric((diff > 0).mean()) if n else None,
        "second_preferred": round_metric((diff < 0).mean()) if n else None,
        "tie": round_metric((diff == 0).mean()) if n else None,
    }


def identical_pair_consistency(position_scores: np.ndarray, identical: np.ndarray) -> dict[str, Any]:
    """On pairs whose two answers are the same text, a consistent judge gives both positions equal
    scores: the share of such pairs with equal `overall` and with all metrics equal. Both display
    orders of such a pair are the same request, so only the first is counted."""
    s = position_scores[np.asarray(identical, dtype=bool), 0]  # (k, 2 positions, M)
    s = s[~np.isnan(s).any(axis=(1, 2))]
    n = len(s)
    return {
        "pairs": int(np.asarray(identical, dtype=bool).sum()),
        "judged": n,
        "overall_equal": round_metric((s[:, 0, -1] == s[:, 1, -1]).mean()) if n else None,
        "all_equal": round_metric((s[:, 0] == s[:, 1]).all(axis=1).mean()) if n else None,
    }


def summarise_arms(
    values: np.ndarray, valid: np.ndarray, metric_names: Sequence[str], resamples: int, confidence: float, seed: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-arm means with bootstrap intervals, and adapter-vs-cosine paired counts and tests.

    `values` (n, n_arms, M) per question and arm, `valid` bool (n, M): where both arms have a value.
    Returns ({arm: {metric: mean, ..., "ci": {metric: [low, high]}, "n": {metric: count}}},
             {metric: {"wins", "ties", "losses", "sign_test_p", "diff", "diff_ci", "questions"}})."""
    arms_out: dict[str, dict[str, Any]] = {a: {"ci": {}, "n": {}} for a in ARMS}
    paired: dict[str, Any] = {}
    for j, metric in enumerate(metric_names):
        rows = valid[:, j]
        n = int(rows.sum())
        for a, arm in enumerate(ARMS):
            block = arms_out[arm]
            if n == 0:
                block[metric], block["ci"][metric] = None, None
            else:
                iv = bootstrap_interval(values[rows, a, j], resamples, confidence, seed)
                block[metric], block["ci"][metric] = (
                    round_metric(iv.value),
                    [round_metric(iv.low), round_metric(iv.high)],
                )
            block["n"][metric] = n
        if n == 0:
            paired[metric] = {
                "questions": 0,
                "wins": 0,
                "ties": 0,
                "losses": 0,
                "sign_test_p": 1.0,
                "diff": None,
                "diff_ci": None,
            }
            continue
        new, base = values[rows, 1, j], values[rows, 0, j]
        delta = new - base
        wins, losses = int((delta > 0).sum()), int((delta < 0).sum())
        pb = paired_bootstrap(new, base, resamples, confidence, seed)
        paired[metric] = {
            "questions": n,
            "wins": wins,
            "ties": n - wins - losses,
            "losses": losses,
            "sign_test_p": round_p(sign_test(wins, losses)),
            "diff": round_metric(pb.diff),
            "diff_ci": [round_metric(pb.low), round_metric(pb.high)],
        }
    # Keys in a stable order: metrics first, then their intervals and counts.
    ordered = {
        arm: {**{m: block[m] for m in metric_names}, "ci": block["ci"], "n": block["n"]}
        for arm, block in arms_out.items()
    }
    return ordered, paired
