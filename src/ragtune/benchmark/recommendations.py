"""The benchmark's recommendation table: per corpus, the arm eval recommends (`ragtune.evaluation.recommend`)
against the best arm on the test questions and raw cosine, beside the old rule (the best arm on validation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..labels import metric_label


def recommendation_row(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the table needs from an eval report.json: the recommended arm, its basis, and the test MRR of it,
    of the best arm, of raw cosine and of the old rule's arm. None without a recommendation or test results."""
    rec = metrics.get("recommendation")
    test = metrics.get("test")
    if not isinstance(rec, Mapping) or not isinstance(test, Mapping) or not isinstance(test.get("arms"), Mapping):
        return None
    key = next((k for k in rec.get("test", {}) if k.startswith("mrr@")), None)
    if key is None:
        return None
    mrr = {a: float(v[key]) for a, v in test["arms"].items() if key in v}
    best = max(mrr, key=lambda a: mrr[a])
    old = rec.get("validation_best")
    return {
        "metric": key,
        "arm": rec["arm"],
        "basis": rec.get("basis"),
        "settled": rec.get("settled"),
        "mrr": mrr.get(rec["arm"]),
        "best_arm": best,
        "best_mrr": mrr[best],
        "cosine_mrr": mrr.get("cosine"),
        "old_arm": old,
        "old_mrr": mrr.get(old) if old else None,
    }


def _share(value: float | None, best: float) -> str:
    return "–" if value is None or not best else f"{value / best:.3f}"


def render_recommendations(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: which arm eval recommends on each corpus and how it fares on the test questions."""
    recs = [(r["name"], r["recommendation"]) for r in rows if r.get("recommendation")]
    if not recs:
        return []
    metric = metric_label(recs[0][1]["metric"])
    lines = [
        "",
        f"**Which arm eval recommends** (test {metric}; share: of the best arm's)",
        "",
        "| corpus | recommended | basis | its test score | share of best | vs raw cosine | best on test "
        "| old rule (best on validation) | its share |",
        "|---|---|---|---:|---:|---|---|---|---:|",
    ]
    for name, r in recs:
        vs = "–"
        if r.get("cosine_mrr") is not None and r.get("mrr") is not None:
            vs = "at or above" if r["mrr"] >= r["cosine_mrr"] else f"**below** ({r['cosine_mrr']:.3f})"
        lines.append(
            f"| {name} | {r['arm']} | {r.get('basis') or '–'} | {r['mrr']:.3f} | {_share(r['mrr'], r['best_mrr'])} "
            f"| {vs} | {r['best_arm']} {r['best_mrr']:.3f} | {r.get('old_arm') or '–'} "
            f"| {_share(r.get('old_mrr'), r['best_mrr'])} |"
        )
    return lines
