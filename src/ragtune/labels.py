"""How metric keys read in reports: one place for the eval verdicts, the README and the cross-corpus table."""

from __future__ import annotations


def metric_label(metric: str) -> str:
    """`hit@5` -> `Hit@5`, `mrr@20` -> `MRR@20`, `ndcg@10` -> `nDCG@10`, `recall@5` -> `Recall@5`."""
    kind, _, k = metric.partition("@")
    return {"hit": "Hit", "recall": "Recall", "mrr": "MRR", "ndcg": "nDCG"}.get(kind, kind) + "@" + k
