"""How numbers and names read in reports: one place for eval, judge, the README and the cross-corpus table."""

from __future__ import annotations

from collections.abc import Sequence


def metric_label(metric: str) -> str:
    """`hit@5` -> `Hit@5`, `mrr@20` -> `MRR@20`, `ndcg@10` -> `nDCG@10`, `recall@5` -> `Recall@5`."""
    kind, _, k = metric.partition("@")
    return {"hit": "Hit", "recall": "Recall", "mrr": "MRR", "ndcg": "nDCG"}.get(kind, kind) + "@" + k


# The order arms are listed in (reports, tables, charts), simplest first; an unknown arm comes after them.
ARM_ORDER = ("cosine", "adapter", "linear", "bm25", "hybrid_cosine", "hybrid")


def arm_order(name: str) -> tuple[int, str]:
    """Sort key of an arm name: its place in `ARM_ORDER`, then the name (unknown arms last, by name)."""
    return (ARM_ORDER.index(name) if name in ARM_ORDER else len(ARM_ORDER), name)


def round_metric(x: float) -> float:
    """A metric as reports store it: 6 decimals."""
    return round(float(x), 6)


def round_p(p: float) -> float:
    """A p-value to 4 significant figures, not decimals: 2e-9 must not print as 0."""
    return float(f"{float(p):.4g}")


def origin_label(origins: Sequence[str]) -> str:
    """Where a set's questions come from: `human`, `synthetic`, or `mixed (3 human, 5 synthetic)`."""
    kinds = sorted(set(origins))
    if len(kinds) == 1:
        return kinds[0]
    return "mixed (" + ", ".join(f"{origins.count(k)} {k}" for k in kinds) + ")"
