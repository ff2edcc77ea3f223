"""Which arm to deploy (report.json `recommendation`), what that rests on and how sure it is.

With labelled real questions (`fetch.jsonl.train_questions`, validation: real) the arm is the best on them
(`ragtune.evaluation.selection.choose_with_labels`: settled or "label about N more") when it is ahead beyond
chance of the arm the no-label policy deploys (`labelled_prior`), else that arm; each arm is scored only on
questions its model never trained on: cosine, BM25 and hybrid_cosine train on
nothing, the adapter and the hybrid are scored with the held-out vectors of the bagged members that never saw
the question (`ragtune.adapter.held_out`), and the linear comparison adapter, which trained on them, is no
candidate.

Without labels, synthetic validation decides only what it can: between the dense arms (the adapter against raw
cosine: both read the questions the same way, and the adapter trained on other synthetic questions). It cannot
judge BM25 against the dense arms, because pseudo-queries copy their chunk's words: on every corpus measured it
ranked bm25 first, and bm25 fell to half of raw cosine on a corpus whose users name things in other words.
Between the families the choice is a prior (`eval.recommend.without_labels`): `hybrid` (default) deploys BM25
fused with the dense arm validation chose, `dense` that dense arm alone, `validation` the best arm on synthetic
validation (the old rule, kept for comparison; it favours BM25 on every corpus). The evidence for the prior is
in README "Which retriever to deploy" and docs/findings/selection.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..labels import arm_order, metric_label, round_metric
from ..params import Section

LABEL_TOOL = "`ragtune label`"
NOT_CANDIDATES_WITH_LABELS = ("linear",)  # trained on the real questions (refit), and never shipped
HYBRID_OF = {"adapter": "hybrid", "cosine": "hybrid_cosine"}  # dense arm -> the fusion of BM25 with it
SUGGESTED_LABELS = 30


class RecommendParams(Section):
    """params.yaml `eval.recommend`: how eval names the arm to deploy."""

    # without labelled real questions: hybrid (BM25 fused with the dense arm synthetic validation prefers) |
    # dense (that dense arm alone) | validation (the best arm on synthetic validation: biased to BM25)
    without_labels: Literal["hybrid", "dense", "validation"] = "hybrid"
    # with labels: settled when the runner-up cannot be ahead of the choice by more than this (MRR, 95% interval)
    margin: float = Field(0.02, ge=0.0, le=1.0)


def best_arm(scores: Mapping[str, float], among: Sequence[str] | None = None) -> str | None:
    """The arm with the highest score (of `among`, if given); ties go to the simpler arm (`labels.arm_order`)."""
    names = [a for a in sorted(scores, key=arm_order) if among is None or a in among]
    return max(names, key=lambda a: (scores[a], -names.index(a))) if names else None


def dense_choice(val_mrr: Mapping[str, float]) -> str | None:
    """The dense arm synthetic validation prefers: the adapter when it scores above raw cosine there."""
    return best_arm(val_mrr, ("cosine", "adapter"))


def without_labels(val_mrr: Mapping[str, float], rule: str, key: str, n_val: int) -> tuple[str, str, dict[str, Any]]:
    """(arm, statement, details) of the no-label policy on synthetic validation MRR (`val_mrr`, arm -> mean)."""
    label = metric_label(key)
    best_val = best_arm(val_mrr)
    if best_val is None:
        raise ValueError("without_labels: no arm has a validation score")
    dense = dense_choice(val_mrr)
    details: dict[str, Any] = {"validation_best": best_val, "dense_choice": dense}
    todo = (
        f"Not settled on your data: label about {SUGGESTED_LABELS} real questions ({LABEL_TOOL}), then `dvc repro`; "
        "the recommendation is then chosen on them."
    )
    blind = (
        f" It cannot judge BM25 against the dense arms (bm25 {val_mrr['bm25']:.3f} there: pseudo-queries copy "
        "their chunk's words)."
        if "bm25" in val_mrr
        else ""
    )
    if rule == "validation" or dense is None:
        arm = best_val
        statement = (
            f"{arm}: the best {label} on the {n_val} synthetic validation questions ({val_mrr[arm]:.3f}), which "
            "favours the BM25-based arms whatever your users ask. " + todo
        )
        return arm, statement, details
    other = "cosine" if dense == "adapter" else "adapter"
    why = (
        f"Synthetic validation prefers {dense} to {other} ({label} {val_mrr[dense]:.3f} against "
        f"{val_mrr[other]:.3f} on {n_val} questions)."
        if other in val_mrr
        else f"{dense} is the only dense arm."
    )
    fused = HYBRID_OF[dense]
    if rule == "hybrid" and fused in val_mrr:
        arm = fused
        statement = (
            f"{arm} (BM25 fused with {dense}), a prior: no labelled questions. {why}{blind} On the project's "
            "development corpora this fusion was the best arm or close to it, and it stayed at or above raw cosine "
            "where simulated users named things in other words than the documents, where BM25 alone fell far below "
            "(README, 'Which retriever to deploy'). "
        )
    else:
        arm = dense
        statement = f"{arm}, within the dense arms: no labelled questions. {why}{blind} "
    return arm, statement + todo, details


def labelled_prior(scores: Mapping[str, np.ndarray], rule: str) -> str | None:
    """The arm the labels must beat: the no-label policy's, with the dense arm chosen on the labels themselves
    (`hybrid`: the fusion of BM25 with it; `dense`: it alone; `validation`: none, the labels' best wins)."""
    dense = dense_choice({a: float(np.mean(v)) for a, v in scores.items()})
    if rule == "validation" or dense is None:
        return None
    fused = HYBRID_OF[dense]
    return fused if rule == "hybrid" and fused in scores else dense


def with_labels(
    scores: Mapping[str, np.ndarray], key: str, params: Any, rule: str, margin: float
) -> tuple[str, str, dict[str, Any]]:
    """(arm, statement, details) from per-question scores on labelled questions no candidate trained on: the
    labels' best arm, if it is ahead beyond chance of the arm the no-label policy would deploy (`labelled_prior`)."""
    from .selection import choose_with_labels

    candidates = {a: v for a, v in scores.items() if a not in NOT_CANDIDATES_WITH_LABELS}
    choice = choose_with_labels(
        candidates,
        metric=metric_label(key),
        alpha=params.alpha,
        margin=margin,
        resamples=params.bootstrap_resamples,
        confidence=params.confidence,
        seed=params.seed,
        prior=labelled_prior(candidates, rule),
    )
    statement = choice.statement
    if not choice.settled:
        statement += f" Label them with {LABEL_TOOL}, then `dvc repro`."
    return choice.arm, statement, {"labelled": choice.as_dict()}


def recommend(
    metrics: Mapping[str, Any],
    val_scores: Mapping[str, np.ndarray],
    test_mrr: Mapping[str, float] | None,
    params: Any,
    select_on: str = "val",
    report_on: str = "test",
) -> dict[str, Any]:
    """report.json's `recommendation`: the arm, what it rests on (`basis`: labels | prior), whether it is
    settled, the statement a user acts on, and how the choice fares on the test questions (`note`: the
    statement plus that check). `val_scores`: arm -> (n,) per-question MRR@k on the `select_on` set."""
    key = f"mrr@{params.mrr_k}"
    hit_key = f"hit@{params.main_k}"
    val_block = metrics[select_on]
    n_val = int(val_block["questions"])
    val_mrr = {a: float(np.mean(v)) for a, v in val_scores.items()}
    labelled = val_block.get("origin") == "human"
    rule = params.recommend.without_labels
    if labelled:
        arm, statement, details = with_labels(val_scores, key, params, rule, params.recommend.margin)
        basis, settled = "labels", bool(details["labelled"]["settled"])
        by = f"{select_on} {key} on {n_val} labelled questions, the adapter's held out"
    else:
        arm, statement, details = without_labels(val_mrr, rule, key, n_val)
        basis, settled = "prior" if rule != "validation" else "synthetic validation", False
        by = f"no labels: {rule}"
    out: dict[str, Any] = {
        "arm": arm,
        "basis": basis,
        "settled": settled,
        "by": by,
        "statement": statement,
        "val": {a: round_metric(v) for a, v in sorted(val_mrr.items(), key=lambda kv: arm_order(kv[0]))},
        "validation_best": best_arm(val_mrr),
        **details,
    }
    note = statement
    test_block = metrics.get(report_on)
    if test_mrr and isinstance(test_block, Mapping) and arm in test_block["arms"]:
        values = test_block["arms"][arm]
        best = best_arm(test_mrr)
        assert best is not None  # test_mrr has scores
        share = test_mrr[arm] / test_mrr[best] if test_mrr[best] > 0 else 1.0
        out["test"] = {
            "questions": test_block["questions"],
            hit_key: values[hit_key],
            key: values[key],
            "ci": {k: values["ci"][k] for k in (hit_key, key)},
        }
        out["test_best_arm"] = best
        out["test_share_of_best"] = round_metric(share)
        note += (
            f" Check on the {test_block['questions']} {test_block['origin']} {report_on} questions: {arm} reaches "
            f"{metric_label(hit_key)} {values[hit_key] * 100:.1f}% and {metric_label(key)} {values[key]:.3f}"
            + (
                ", the best of all arms there."
                if best == arm
                else f", {share:.0%} of the best arm there ({best}, {test_mrr[best]:.3f})."
            )
        )
    out["note"] = note
    return out
