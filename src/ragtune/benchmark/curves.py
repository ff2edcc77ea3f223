"""The benchmark's learning curves: one table and one chart panel per corpus with real training questions (test
scores against the number of them, beside raw cosine and BM25)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..labels import metric_label


def _p(p: float) -> str:
    return f"{p:.2g}"


def _curve_keys(point: Mapping[str, Any]) -> tuple[str, str]:
    hit = next(k for k in point if k.startswith("adapter_hit@") and not k.endswith(("_low", "_high")))
    mrr = next(k for k in point if k.startswith("adapter_mrr@") and not k.endswith(("_low", "_high")))
    return hit.removeprefix("adapter_"), mrr.removeprefix("adapter_")


def render_curves(rows: Sequence[Mapping[str, Any]], conf_text: str = "95%") -> list[str]:
    """Markdown lines: one learning-curve table per corpus with real training questions (test scores
    against the number of them), beside raw cosine and BM25."""
    lines: list[str] = []
    for r in rows:
        points = r.get("curve") or []
        if not points:
            continue
        hit, mrr = _curve_keys(points[0])
        base = [a for a in ("cosine", "bm25") if f"{a}_{hit}" in points[0]]
        lines += [
            "",
            f"**Learning curve, {r['name']}**: test scores against the number of real training questions "
            f"({conf_text} intervals; p: paired bootstrap on {metric_label(mrr)} against raw cosine)",
            "",
            f"| real questions | adapter {metric_label(hit)} (%) | adapter {metric_label(mrr)} | p |"
            + "".join(f" {a} {metric_label(hit)} | {a} {metric_label(mrr)} |" for a in base),
            "|---:|---|---|---:|" + "---:|---:|" * len(base),
        ]
        for p in points:
            lines.append(
                f"| {p['n_real']} | {100 * p[f'adapter_{hit}']:.1f} ({100 * p[f'adapter_{hit}_low']:.1f}–"
                f"{100 * p[f'adapter_{hit}_high']:.1f}) | {p[f'adapter_{mrr}']:.3f} ({p[f'adapter_{mrr}_low']:.3f}–"
                f"{p[f'adapter_{mrr}_high']:.3f}) | {_p(p[f'p_{mrr}_vs_cosine'])} |"
                + "".join(f" {100 * p[f'{a}_{hit}']:.1f} | {p[f'{a}_{mrr}']:.3f} |" for a in base)
            )
    return lines


def write_curve_chart(path: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
    """One panel per corpus with a curve: the adapter's test MRR (band: its interval) against the number of
    real training questions, raw cosine and BM25 as flat lines. False when no corpus has a curve."""
    from ..plots import xy_panels

    with_curve = [r for r in rows if r.get("curve")]
    if not with_curve:
        return False
    _, mrr = _curve_keys(with_curve[0]["curve"][0])
    panels, bands = {}, {}
    for r in with_curve:
        pts = r["curve"]
        xs = [p["n_real"] for p in pts]
        title = f"{r['name']} ({r.get('test_questions')} test questions)"
        panels[title] = {
            arm: (xs, [p[f"{arm}_{mrr}"] for p in pts])
            for arm in ("adapter", "cosine", "bm25")
            if f"{arm}_{mrr}" in pts[0]
        }
        bands[title] = {
            "adapter": (xs, [p[f"adapter_{mrr}_low"] for p in pts], [p[f"adapter_{mrr}_high"] for p in pts])
        }
    xy_panels(
        path,
        panels,
        bands,
        xlabel="real training questions",
        ylabel=metric_label(mrr),
        title="Learning curve: test score against labelled real training questions",
    )
    return True
