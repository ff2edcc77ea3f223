"""The benchmark's results, pure: one row per corpus from its eval metrics, and the markdown tables,
learning-curve lines and charts the README and data/transfer/results.md show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import RagtuneError
from ..labels import arm_order, metric_label
from .curves import render_curves, write_curve_chart
from .recommendations import recommendation_row, render_recommendations
from .workspaces import TARGET_STAGES, RunRecord

ADAPTER_IN_HYBRID = "hybrid_vs_hybrid_cosine"  # eval's comparison of the two fusions


def metric_keys(metrics: Mapping[str, Any]) -> list[str]:
    """The headline metrics of an eval report.json: Hit@main_k, then the MRR and nDCG cut-offs it holds."""
    arms = metrics.get("test", {}).get("arms", {})
    present = {m for a in arms.values() for m in a if m != "ci"}
    main_k = metrics.get("setup", {}).get("main_k")
    hit = (
        f"hit@{main_k}"
        if f"hit@{main_k}" in present
        else next(iter(sorted((m for m in present if m.startswith("hit@")), key=_k_of)), None)
    )
    out = [hit] if hit else []
    for kind in ("mrr@", "ndcg@"):
        out += sorted((m for m in present if m.startswith(kind)), key=_k_of)
    return out


def _k_of(metric: str) -> int:
    k = metric.partition("@")[2]
    return int(k) if k.isdigit() else 0


def _seed_ranges(seeds: Any) -> dict[str, Any] | None:
    """{"hit@5": [per-seed values], ..., "seeds": [...]} -> {"seeds": [...], "hit@5": [min, max], ...}."""
    if not isinstance(seeds, Mapping):
        return None
    out: dict[str, Any] = {}
    for key, values in seeds.items():
        if key == "seeds":
            out["seeds"] = list(values) if isinstance(values, (list, tuple)) else values
        elif isinstance(values, (list, tuple)) and values and all(isinstance(v, (int, float)) for v in values):
            out[key] = [min(values), max(values)]
    return out if any(k != "seeds" for k in out) else None


def corpus_row(
    name: str,
    metrics: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
    run: RunRecord | None = None,
    source_dir: str | None = None,
    curve: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One corpus's row of the results table from its eval report.json (and fetch report.json, and the
    curve stage's metrics.json when it has real training questions)."""
    setup = metrics.get("setup", {})
    # Cut into passages (fetch.passages): the document-level block is the one comparable with whole texts.
    level = "documents" if isinstance(metrics.get("test_documents"), Mapping) else "chunks"
    test = metrics.get("test_documents") if level == "documents" else metrics.get("test")
    if not isinstance(test, Mapping) or not test.get("arms"):
        raise RagtuneError(f"corpus '{name}': data/eval/report.json has no test results; rerun the benchmark")
    report = report or {}
    keys = metric_keys(metrics)
    arms = {}
    for arm in sorted(test["arms"], key=arm_order):
        values = test["arms"][arm]
        arms[arm] = {m: {"value": values[m], "ci": list(values.get("ci", {}).get(m, []))} for m in keys if m in values}
    vs_cosine = {
        arm: _comparison(test[f"{arm}_vs_cosine"], keys)
        for arm in arms
        if arm != "cosine" and isinstance(test.get(f"{arm}_vs_cosine"), Mapping)
    }
    row: dict[str, Any] = {
        "name": name,
        "source": report.get("source", setup.get("source", "unknown")),
        "chunks": report.get("chunks", setup.get("corpus_chunks")),
        "test_questions": test.get("questions"),
        "human": test.get("human"),
        "synthetic": test.get("synthetic"),
        "origin": test.get("origin"),
        "embedding_model": setup.get("embedding_model"),
        "metrics": keys,
        "arms": arms,
        "vs_cosine": vs_cosine,
    }
    # The same fusion with the adapter's ranking in place of raw cosine's: what the adapter adds to BM25.
    if isinstance(test.get(ADAPTER_IN_HYBRID), Mapping):
        row[ADAPTER_IN_HYBRID] = _comparison(test[ADAPTER_IN_HYBRID], keys)
    if source_dir is not None:
        row["dir"] = source_dir
    if setup.get("protocol") is not None:
        row["protocol"] = setup["protocol"]
    seeds = _seed_ranges(test.get("adapter_seeds"))
    if seeds is not None:
        row["adapter_seeds"] = seeds
    if setup.get("validation") is not None:
        row["validation"] = setup["validation"]
    if level == "documents":
        row["level"] = "documents ranked by their best passage"
        row["passages"] = setup.get("passages")
    if report.get("train_questions"):
        row["train_questions"] = report["train_questions"]
    recommended = recommendation_row(metrics)
    if recommended is not None:
        row["recommendation"] = recommended
    if curve and curve.get("real_questions"):
        row["curve"] = list(curve.get("points", []))
    if run is not None:
        row["wall_s"] = run.wall_s
        row["stages_run"] = run.stages_run
        if run.last_run:
            row["last_run"] = run.last_run
    return row


def _comparison(cmp: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The parts of one of eval's paired comparisons the table shows, per metric."""
    entry: dict[str, Any] = {}
    for m in keys:
        c = cmp.get(m)
        if isinstance(c, Mapping):
            entry[m] = {
                k: c[k] for k in ("diff", "gained", "lost", "improved", "worsened", "ci", "p", "p_holm") if k in c
            }
    entry["significant"] = bool(cmp.get("significant", False))
    return entry


def build_results(
    rows: Sequence[Mapping[str, Any]],
    *,
    command: str,
    overrides: Sequence[str],
    params_hash: str,
    main_k: Any = None,
    confidence: Any = None,
) -> dict[str, Any]:
    return {
        "command": command,
        "overrides": list(overrides),
        "params_hash": params_hash,
        "params_hash_of": "every params.yaml section but fetch and mlflow",
        "stages": list(TARGET_STAGES),
        "main_k": main_k,
        "confidence": confidence,
        "corpora": list(rows),
    }


def _pct(metric: str) -> bool:
    return metric.startswith(("hit@", "recall@"))


def _num(metric: str, value: float) -> str:
    return f"{value * 100:.1f}" if _pct(metric) else f"{value:.3f}"


def _p(p: float) -> str:
    return f"{p:.2g}"  # significant figures: 0.45, 0.0004, 2e-09


def _cell(row: Mapping[str, Any], arm: str, metric: str) -> str:
    entry = row["arms"].get(arm, {}).get(metric)
    if not entry:
        return "–"
    text = _num(metric, entry["value"])
    if len(entry.get("ci") or []) == 2:
        text += f" ({_num(metric, entry['ci'][0])}–{_num(metric, entry['ci'][1])})"
    cmp = row.get("vs_cosine", {}).get(arm, {}).get(metric)
    if cmp and "p" in cmp:
        text += f", p={_p(cmp['p'])}" + _gained_lost(cmp)
    inner = row.get(ADAPTER_IN_HYBRID, {}).get(metric) if arm == "hybrid" else None
    if inner and "p" in inner:
        text += f"; vs hybrid_cosine p={_p(inner['p'])}" + _gained_lost(inner)
    seeds = row.get("adapter_seeds") if arm == "adapter" else None
    if seeds and metric in seeds:
        lo, hi = seeds[metric]
        text += f"; seeds {_num(metric, lo)}–{_num(metric, hi)}"
    return text


def _gained_lost(cmp: Mapping[str, Any]) -> str:
    return f" (+{cmp['gained']}/−{cmp['lost']})" if "gained" in cmp else ""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def _wall(row: Mapping[str, Any]) -> str:
    if "wall_s" not in row:
        return "–"
    text = _duration(row["wall_s"])
    if not row.get("stages_run"):
        last = row.get("last_run") or {}
        text += " (up to date" + (f"; last run {_duration(last['wall_s'])}" if "wall_s" in last else "") + ")"
    return text


def _questions(row: Mapping[str, Any]) -> str:
    n, human, synthetic = row.get("test_questions"), row.get("human") or 0, row.get("synthetic") or 0
    if human and synthetic:
        return f"{n} ({human} human, {synthetic} synthetic)"
    return f"{n} {'human' if human else 'synthetic' if synthetic else ''}".strip()


def render_markdown(results: Mapping[str, Any]) -> str:
    """The results as Markdown: a table of the corpora, one table per metric (rows: corpora, columns: arms),
    the paired tests against raw cosine in the cells, and the params and command used."""
    rows = results.get("corpora", [])
    arms = sorted({a for r in rows for a in r["arms"]}, key=arm_order)
    metrics: list[str] = []
    for r in rows:
        metrics += [m for m in r["metrics"] if m not in metrics]
    conf = results.get("confidence")
    conf_text = f"{float(conf):.0%}" if isinstance(conf, (int, float)) else "95%"
    protocol = any("protocol" in r for r in rows)
    lines = [
        "| corpus | source | chunks | test questions |" + (" protocol |" if protocol else "") + " wall time |",
        "|---|---|---:|---|" + ("---|" if protocol else "") + "---:|",
    ]
    for r in rows:
        chunks = f"{r['chunks']:,}" if isinstance(r.get("chunks"), int) else str(r.get("chunks", "?"))
        lines.append(
            f"| {r['name']} | {r['source']} | {chunks} | {_questions(r)} |"
            + (f" {r.get('protocol', '–')} |" if protocol else "")
            + f" {_wall(r)} |"
        )
    for metric in metrics:
        unit = " (%)" if _pct(metric) else ""
        lines += [
            "",
            f"**{metric_label(metric)}{unit}** on the test questions",
            "",
            "| corpus | " + " | ".join(arms) + " |",
            "|---|" + "---|" * len(arms),
        ]
        for r in rows:
            lines.append(f"| {r['name']} | " + " | ".join(_cell(r, a, metric) for a in arms) + " |")
    tested = sorted(
        {m for r in rows for c in r.get("vs_cosine", {}).values() for m in c if m != "significant"}, key=metrics.index
    )
    notes = [f"{conf_text} bootstrap intervals in parentheses."]
    if tested:
        how = [
            f"exact McNemar on {metric_label(m)} with questions gained/lost"
            if m.startswith("hit@")
            else f"paired bootstrap on {metric_label(m)}"
            for m in tested
        ]
        notes.append(
            "p: paired test of the arm against raw cosine on the same questions (" + "; ".join(how) + "), uncorrected."
        )
    if any(ADAPTER_IN_HYBRID in r for r in rows):
        notes.append(
            "vs hybrid_cosine: the hybrid arm against the same fusion with raw cosine in the adapter's "
            "place, the same tests: what the adapter adds to BM25 fusion."
        )
    if any("adapter_seeds" in r for r in rows):
        notes.append("seeds: the range of single-seed adapters' values.")
    split = [r for r in rows if r.get("level")]
    if split:
        notes.append(
            ", ".join(f"`{r['name']}`" for r in split) + ": long texts cut into passages "
            "(`fetch.passages`); its metrics count documents, each ranked by its best passage."
        )
    overrides = results.get("overrides") or []
    lines += render_recommendations(rows)
    lines += render_curves(rows, conf_text)
    lines += [
        "",
        " ".join(notes),
        "",
        f"Params hash `{results.get('params_hash', '?')}` ({results.get('params_hash_of', 'params')}); "
        "overrides: "
        + (", ".join(f"`{o}`" for o in overrides) if overrides else "none")
        + f". Command: `{results.get('command', 'ragtune bench')}`.",
    ]
    return "\n".join(lines)


def write_results(out: Path, results: Mapping[str, Any]) -> list[Path]:
    """results.json, results.md, results.png (Hit@main_k) and results_mrr.png (MRR), each atomically."""
    from ..io import atomic_open, write_json
    from ..plots import grouped_bar_chart

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md"]
    write_json(paths[0], results)
    with atomic_open(paths[1]) as fh:
        fh.write("# Cross-corpus benchmark\n\n" + render_markdown(results) + "\n")
    rows = results["corpora"]
    groups = [f"{r['name']}\n{_questions(r)}" for r in rows]
    arms = sorted({a for r in rows for a in r["arms"]}, key=arm_order)
    conf = results.get("confidence") or 0.95
    charts = [
        (out / "results.png", next((m for m in rows[0]["metrics"] if m.startswith("hit@")), None)),
        (out / "results_mrr.png", next((m for m in rows[0]["metrics"] if m.startswith("mrr@")), None)),
    ]
    for path, metric in charts:
        if metric is None:
            continue
        nan = float("nan")
        series = {a: [r["arms"].get(a, {}).get(metric, {}).get("value", nan) for r in rows] for a in arms}
        intervals = {
            a: [tuple(r["arms"].get(a, {}).get(metric, {}).get("ci") or (nan, nan)) for r in rows] for a in arms
        }
        grouped_bar_chart(
            path,
            groups,
            series,
            intervals,
            percent=_pct(metric),
            ylabel=metric_label(metric),
            title=f"{metric_label(metric)} on each corpus's test questions ({float(conf):.0%} intervals)",
        )
        paths.append(path)
    if write_curve_chart(out / "results_curve.png", rows):
        paths.append(out / "results_curve.png")
    return paths
