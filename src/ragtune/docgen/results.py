"""The results block: the default pipeline's evaluation (data/eval/report.json) as markdown tables, with
intervals, paired verdicts, the recommendation and the charts; and the short "at a glance" table the README
shows (`render_glance`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..labels import metric_label

_SET_TITLES = {
    "test_documents": "Test questions, documents ranked by their best passage",
    "val_documents": "Validation questions, documents ranked by their best passage",
    "test": "Test questions",
    "test_human": "Test questions written by people",
    "test_synthetic": "Synthetic test questions",
    "val": "Synthetic validation questions",
}
_SET_NOTES = {
    "val": "held out from adapter training; a gain here but not on the test questions means the "
    "adapter learnt the synthetic questions only"
}


def _metric_order(name: str) -> tuple[int, int]:
    kind, _, k = name.partition("@")
    return (
        ["hit", "recall", "mrr", "ndcg"].index(kind) if kind in ("hit", "recall", "mrr", "ndcg") else 9,
        int(k) if k.isdigit() else 0,
    )


def _cell(name: str, value: float, ci: list[float] | None) -> str:
    if name.startswith(("hit", "recall")):
        text = f"{value * 100:.1f}"
        return text + (f" ({ci[0] * 100:.1f}–{ci[1] * 100:.1f})" if ci else "")
    text = f"{value:.3f}"
    return text + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _set_section(name: str, block: Mapping[str, Any], confidence: float) -> list[str]:
    arms = block["arms"]
    metrics = sorted({m for a in arms.values() for m in a if m != "ci"}, key=_metric_order)
    real_val = name == "val" and not block.get("synthetic")  # the user's labelled questions validated
    title = "Real validation questions" if real_val else _SET_TITLES.get(name, name)
    note: str | None
    if real_val:
        note = (
            "every real training question some bagged member held out; the adapter (and the hybrid) scored on each "
            "by the members that never trained on it, before any refit; the recommendation is chosen on these, "
            "and tuning on a slice of them (mildly optimistic for the adapter)"
        )
    else:
        note = _SET_NOTES.get(name)
    lines = [
        f"**{title}** — {block['questions']} questions, origin: {block['origin']}" + (f"; {note}." if note else ".")
    ]
    lines += ["", "| arm | " + " | ".join(metric_label(m) for m in metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for arm, values in arms.items():
        cells = [_cell(m, values[m], values.get("ci", {}).get(m)) if m in values else "–" for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    notes = [f"Hit and Recall in %, {confidence:.0%} bootstrap intervals in parentheses."]
    if any(m.startswith("recall") for m in metrics):
        notes.append(f"Recall@k over the {block['multi_relevant']} questions with several relevant chunks.")
    lines += ["", " ".join(notes)]
    for key, cmp in block.items():
        if (key.endswith("_vs_cosine") or key.startswith("hybrid_vs_")) and isinstance(cmp, Mapping):
            lines += ["", f"- {cmp['verdict']}"]
    if isinstance(block.get("adapter_seeds"), Mapping):
        lines += ["", _seed_line(block["adapter_seeds"], arms.get("adapter", {}))]
    return lines


def _seed_line(seeds: Mapping[str, Any], ensemble: Mapping[str, Any]) -> str:
    """The single-seed adapters' range beside the shipped ensemble: one draw is what a single run ships."""
    parts = []
    for key, values in seeds.items():
        if key in ("seeds", "range") or not values:
            continue
        scale, fmt = (100, "{:.1f}") if key.startswith("hit@") else (1, "{:.3f}")
        lo, hi = fmt.format(min(values) * scale), fmt.format(max(values) * scale)
        shipped = fmt.format(ensemble[key] * scale) if key in ensemble else "?"
        parts.append(f"{metric_label(key)} {lo}–{hi} (ensemble {shipped})")
    ids = seeds.get("seeds", [])
    return f"- Single-seed adapters ({len(ids)} seeds, {', '.join(map(str, ids))}): " + "; ".join(parts) + "."


def _at_a_glance(metrics: Mapping[str, Any], main_k: Any) -> str:
    key = f"hit@{main_k}"
    parts = []
    for name, block in metrics.items():
        if name in ("test", "val") and isinstance(block, Mapping) and "arms" in block:
            arms = ", ".join(f"{a} {v[key] * 100:.1f}" for a, v in block["arms"].items() if key in v)
            parts.append(f"{_SET_TITLES.get(name, name).lower()} ({block['questions']}): {arms}")
    return f"At a glance, Hit@{main_k} in % — " + "; ".join(parts) + "." if parts else ""


def _fusion_phrase(fusion: Mapping[str, Any]) -> str:
    """How the hybrid arms fused, e.g. "reciprocal rank (k=60)" or "weighted scores (dense share 0.7 for
    hybrid, 0.6 for hybrid_cosine, chosen on validation)"."""
    arms = {name: e for name, e in fusion.items() if isinstance(e, Mapping) and "dense" in e}
    weighted = {name: e["weight"] for name, e in arms.items() if e.get("method") == "weighted" and "weight" in e}
    if weighted and all(arms[name].get("chosen_on") is None for name in weighted):
        shares = sorted(set(weighted.values()))
        return f"min-max normalised scores with a fixed dense share of {', '.join(f'{w:g}' for w in shares)}"
    if weighted:
        chosen = ", ".join(f"{w:g} for {name}" for name, w in sorted(weighted.items()))
        return f"min-max normalised scores weighted by a dense share chosen on validation ({chosen})"
    return f"reciprocal rank (k={float(fusion.get('rrf_k', 60)):g})"


_BASES = {
    "labels": "chosen on labelled real questions",
    "prior": "no labelled questions: a prior, see Which retriever to deploy",
    "synthetic validation": "the best on synthetic validation, which favours BM25",
}


def _recommendation_line(metrics: Mapping[str, Any]) -> str:
    """One line: the arm to deploy, what the choice rests on, and how it fared on test."""
    rec = metrics.get("recommendation")
    if not isinstance(rec, Mapping) or not rec.get("arm"):
        return ""
    how = _BASES.get(str(rec.get("basis")), str(rec.get("by", "")).replace("mrr@", "MRR@"))
    fusion = metrics.get("fusion")
    if isinstance(fusion, Mapping):
        how += f"; the hybrid arms fuse BM25 with a dense ranking by {_fusion_phrase(fusion)}"
    return f"**Recommendation: `{rec['arm']}`** ({how}). {rec.get('note', '')}".rstrip()


def _thousands(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


PROTOCOLS = {
    "include": "synthetic training questions for every chunk, the test questions' chunks too (the deployment "
    "protocol; the test questions themselves never reach training, tuning or selection)",
    "exclude": "no synthetic training questions for the chunks test questions are about (the strict protocol)",
}


def _protocol_sentence(setup: Mapping[str, Any]) -> str:
    parts = []
    if setup.get("protocol"):
        parts.append(f" Protocol `{setup['protocol']}`: {PROTOCOLS.get(setup['protocol'], setup['protocol'])}.")
    if setup.get("bagging"):
        parts.append(
            f" The adapter is an ensemble of {setup['bagging']} trained on as many seeded validation "
            "splits; the single-seed range is given beside it."
        )
    return "".join(parts)


def render_results(metrics: Mapping[str, Any], image_dir: str = "data/eval") -> str:
    """Markdown for the results block (without the markers): one table per evaluation set, the paired
    verdicts, the charts (`image_dir`: data/eval as a link from the page) and the command that reproduces the
    numbers."""
    setup = metrics.get("setup", {})
    confidence = float(setup.get("confidence", 0.95))
    lines = [
        "<!-- generated by `python -m ragtune.readme` from data/eval/report.json: do not edit -->",
        f"Default pipeline: source `{setup.get('source', 'unknown')}`, embedder "
        f"`{setup.get('embedding_model', 'unknown')}`, {setup.get('corpus_chunks', '?')} chunks, "
        f"exact search to depth {setup.get('depth', '?')}; {_thousands(setup.get('bootstrap_resamples', '?'))} "
        f"bootstrap resamples (seed {setup.get('seed', '?')}), significance at alpha="
        f"{setup.get('alpha', '?')}." + _protocol_sentence(setup),
        "",
    ]
    glance = _at_a_glance(metrics, setup.get("main_k"))
    if glance:
        lines += [glance, ""]
    recommendation = _recommendation_line(metrics)
    if recommendation:
        lines += [recommendation, ""]
    for name, block in metrics.items():
        if name == "setup" or not isinstance(block, Mapping) or "arms" not in block:
            continue
        lines += _set_section(name, block, confidence) + [""]
    lines += [
        f"![Hit rate by arm]({image_dir}/hit_rate_by_arm.png)",
        f"![Hit rate against k]({image_dir}/hit_rate_at_k.png)",
        "",
        "Reproduce: `make run` (or `dvc repro eval`), then `dvc metrics show` (the headline numbers; all of "
        "them are in data/eval/report.json); `python -m ragtune.readme` refreshes this section.",
    ]
    return "\n".join(lines)


def _glance_cells(arms: Mapping[str, Mapping[str, float]], hit: str, mrr: str) -> list[str]:
    """`Hit@k % / MRR@k` per arm, the best MRR in bold. `arms`: arm -> metric -> value."""
    best = max((values.get(mrr, -1.0) for values in arms.values()), default=None)
    cells = []
    for values in arms.values():
        if hit not in values or mrr not in values:
            cells.append("–")
            continue
        cell = f"{values[hit] * 100:.1f} / {values[mrr]:.3f}"
        cells.append(f"**{cell}**" if values[mrr] == best else cell)
    return cells


def _transfer_arms(row: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A benchmark row's arms as arm -> metric -> value (results.json keeps value and interval per metric)."""
    return {
        arm: {m: v["value"] for m, v in metrics.items() if isinstance(v, Mapping) and "value" in v}
        for arm, metrics in row.get("arms", {}).items()
    }


def render_glance(metrics: Mapping[str, Any], transfer: Mapping[str, Any] | None, findings: str) -> str:
    """The README's results at a glance (without the markers): test Hit@main_k and MRR per arm on the default
    corpus (data/eval/report.json) and on the benchmark's other corpora (data/transfer/results.json, when given),
    with the arm eval recommends. `findings`: docs/findings as a link from the page."""
    setup = metrics.get("setup", {})
    test = metrics["test"]
    hit = f"hit@{setup.get('main_k', 5)}"
    mrr = next((m for m in sorted(test["arms"][next(iter(test["arms"]))]) if m.startswith("mrr@")), "mrr@20")
    arms = list(test["arms"])
    recommended = metrics.get("recommendation", {}).get("arm", "?")
    lines = [
        "<!-- generated by `python -m ragtune.readme` from data/eval/report.json and data/transfer/results.json: "
        "do not edit -->",
        f"Test {metric_label(hit)} (%) / {metric_label(mrr)} on questions written by people, default params "
        "(best MRR in bold):",
        "",
        "| corpus (test questions) | " + " | ".join(arms) + " | eval recommends |",
        "|---|" + "---:|" * len(arms) + "---|",
        f"| EU law, the default ({test['questions']}) | "
        + " | ".join(_glance_cells(test["arms"], hit, mrr))
        + f" | `{recommended}` |",
    ]
    for row in (transfer or {}).get("corpora", []):
        if row.get("name") == "default":  # the same corpus as the first row, rerun in a scratch workspace
            continue
        row_arms = _transfer_arms(row)
        cells = _glance_cells({arm: row_arms.get(arm, {}) for arm in arms}, hit, mrr)
        rec = row.get("recommendation", {}).get("arm", "?")
        lines.append(f"| {row['name']} ({row.get('test_questions', '?')}) | " + " | ".join(cells) + f" | `{rec}` |")
    lines += [
        "",
        f"Intervals, paired tests and charts: [default corpus]({findings}/results.md), "
        f"[other corpora]({findings}/transfer.md).",
    ]
    return "\n".join(lines)
