"""The whole evaluation: every arm on every question set, the comparisons, the recommendation, the files.

`evaluate` takes query sets and arms and returns an `EvalResult`: the nested metrics dict
(data/eval/report.json; its headline numbers go to metrics.json), one row per question with each arm's first
relevant rank, and hit rate against k per arm. The metrics name the arm a user should deploy
(`recommendation`, `ragtune.evaluation.recommend`), with how that choice fared on the test questions.
`write_eval_outputs` writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import arm_order, origin_label, round_metric
from .arms import Arm, HybridArm
from .inputs import QuerySet
from .metrics import EvalParams, compare_arms, per_question_metrics, summarise_arm
from .ranking import document_hits, first_relevant_rank, hit_matrix
from .recommend import best_arm, recommend
from .statistics import bootstrap_intervals

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    per_question: list[dict[str, Any]] = field(default_factory=list)
    hit_rate_at_k: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # set -> rows


def _summarise_set(
    label: str,
    hits_by_arm: Mapping[str, np.ndarray],
    n_relevant: np.ndarray,
    origins: list[str],
    params: EvalParams,
    comparisons: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    n = len(origins)
    origin = origin_label(origins)
    out: dict[str, Any] = {
        "questions": n,
        "origin": origin,
        "human": origins.count("human"),
        "synthetic": origins.count("synthetic"),
        "multi_relevant": int((n_relevant >= 2).sum()),
        "arms": {name: summarise_arm(h, n_relevant, params) for name, h in hits_by_arm.items()},
    }
    set_label = f"{n} {origin} {label} questions"
    for new, base in comparisons:
        if new in hits_by_arm and base in hits_by_arm:
            out[f"{new}_vs_{base}"] = compare_arms(
                hits_by_arm[base], hits_by_arm[new], n_relevant, params, new, base, set_label
            )
    return out


def _hit_rate_curve(hits_by_arm: Mapping[str, np.ndarray], params: EvalParams) -> list[dict[str, Any]]:
    """Hit rate at every k from 1 to depth, per arm, with its bootstrap interval (one row per k)."""
    depth = params.depth
    rows: list[dict[str, Any]] = [{"k": k} for k in range(1, depth + 1)]
    for name, hits in hits_by_arm.items():
        rank = first_relevant_rank(hits)
        per_q = ((rank[:, None] > 0) & (rank[:, None] <= np.arange(1, depth + 1)[None, :])).astype(np.float64)
        intervals = bootstrap_intervals(per_q, params.bootstrap_resamples, params.confidence, params.seed)
        for row, iv in zip(rows, intervals):
            row[name] = round_metric(iv.value)
            row[f"{name}_low"] = round_metric(iv.low)
            row[f"{name}_high"] = round_metric(iv.high)
    return rows


SINGLE_ARMS = ("cosine", "adapter", "bm25")  # the candidates for "best single arm" (hybrid's paired baseline)
DEFAULT_COMPARISONS = (
    ("adapter", "cosine"),
    ("linear", "cosine"),
    ("bm25", "cosine"),
    ("hybrid_cosine", "cosine"),
    ("hybrid", "cosine"),
    ("hybrid", "hybrid_cosine"),
)


def _per_question_mrr(
    hits_by_arm: Mapping[str, np.ndarray], n_relevant: np.ndarray, params: EvalParams
) -> dict[str, np.ndarray]:
    """arm -> (n,) reciprocal rank within mrr_k of each question."""
    key = f"mrr@{params.mrr_k}"
    return {a: per_question_metrics(h, n_relevant, params)[key] for a, h in hits_by_arm.items()}


# Passages retrieved per document-level rank: several passages of one document collapse into one rank.
DOCUMENT_DEPTH_FACTOR = 4


def evaluate(
    query_sets: Sequence[QuerySet],
    arms: Sequence[Arm],
    params: EvalParams,
    comparisons: Sequence[tuple[str, str]] = DEFAULT_COMPARISONS,
    setup: Mapping[str, Any] | None = None,
    fusion: Mapping[str, Any] | None = None,
    select_on: str = "val",
    report_on: str = "test",
    documents: np.ndarray | None = None,
) -> EvalResult:
    """Run every arm on every set. A test set with both human and synthetic questions is also reported
    per origin (`<set>_human`, `<set>_synthetic`), so synthetic questions cannot hide how real ones fare.

    With the `select_on` set (the validation questions) present: `hybrid` is also compared with
    the best single arm there (`hybrid_vs_<arm>`), and `recommendation` names the arm to deploy
    (`ragtune.evaluation.recommend`: chosen on `select_on` when its questions are labelled, else the no-label
    policy) with its numbers on `report_on`. `fusion` (how the hybrid arms fused) is stored as given,
    plus `best_single_on_val`. With `documents` (the document of each corpus row, when long texts were cut
    into passages), every set is also reported per document (`<set>_documents`: documents ranked by their
    best passage, from DOCUMENT_DEPTH_FACTOR x depth passages)."""
    depth = params.depth
    metrics: dict[str, Any] = {
        "setup": {
            **(setup or {}),
            "depth": depth,
            "main_k": params.main_k,
            "bootstrap_resamples": params.bootstrap_resamples,
            "confidence": params.confidence,
            "alpha": params.alpha,
            "seed": params.seed,
        }
    }
    result = EvalResult(metrics)
    retrieved: list[tuple[QuerySet, dict[str, np.ndarray]]] = []
    by_document: list[tuple[QuerySet, dict[str, np.ndarray], np.ndarray]] = []
    for qs in query_sets:
        if not qs.ids:
            log.warning("eval: set %s has no questions; skipped", qs.name)
            continue
        hits_by_arm: dict[str, np.ndarray] = {}
        doc_hits: dict[str, np.ndarray] = {}
        n_docs: np.ndarray | None = None
        for arm in arms:
            idx = arm.retrieve(qs, depth)
            if idx is None:
                log.info("eval: arm %s cannot run on %s (no question texts); skipped", arm.name, qs.name)
                continue
            hits_by_arm[arm.name] = hit_matrix(idx, qs.relevant)
            if documents is not None:
                deep = arm.retrieve(qs, depth * DOCUMENT_DEPTH_FACTOR)
                assert deep is not None  # the arm ran at `depth` on the same questions
                doc_hits[arm.name], n_docs = document_hits(deep, qs.relevant, documents, depth)
        retrieved.append((qs, hits_by_arm))
        if doc_hits:
            assert n_docs is not None  # set with each arm's document hits
            by_document.append((qs, doc_hits, n_docs))

    per_question = {qs.name: _per_question_mrr(h, qs.n_relevant, params) for qs, h in retrieved}
    mrr_by_set = {name: {a: float(v.mean()) for a, v in arms.items()} for name, arms in per_question.items()}
    comparisons = list(comparisons)
    best_single = best_arm(mrr_by_set.get(select_on, {}), SINGLE_ARMS)
    if best_single is not None and ("hybrid", best_single) not in comparisons:
        comparisons.append(("hybrid", best_single))

    for qs, hits_by_arm in retrieved:
        n_relevant = qs.n_relevant
        metrics[qs.name] = _summarise_set(qs.name, hits_by_arm, n_relevant, qs.origins, params, comparisons)
        kinds = sorted(set(qs.origins))
        if len(kinds) > 1:
            origins = np.asarray(qs.origins)
            for kind in kinds:
                mask = origins == kind
                metrics[f"{qs.name}_{kind}"] = _summarise_set(
                    qs.name,
                    {a: h[mask] for a, h in hits_by_arm.items()},
                    n_relevant[mask],
                    [o for o in qs.origins if o == kind],
                    params,
                    comparisons,
                )
        result.hit_rate_at_k[qs.name] = _hit_rate_curve(hits_by_arm, params)
        ranks_by_arm = {a: first_relevant_rank(h) for a, h in hits_by_arm.items()}
        for i, qid in enumerate(qs.ids):
            row: dict[str, Any] = {"set": qs.name, "id": qid, "origin": qs.origins[i], "n_relevant": int(n_relevant[i])}
            row.update({f"rank_{a}": int(r[i]) for a, r in ranks_by_arm.items()})
            row["question"] = qs.texts[i] if qs.texts is not None else ""
            result.per_question.append(row)

    for qs, doc_hits, n_docs in by_document:
        metrics[f"{qs.name}_documents"] = _summarise_set(
            f"{qs.name} (documents)", doc_hits, n_docs, qs.origins, params, comparisons
        )
    if fusion is not None and any(isinstance(a, HybridArm) for a in arms):
        metrics["fusion"] = {**fusion, "best_single_on_val": best_single}
    if per_question.get(select_on):
        metrics["recommendation"] = recommend(
            metrics, per_question[select_on], mrr_by_set.get(report_on), params, select_on, report_on
        )
    return result


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves as dotted MLflow-safe keys: `test.adapter.hit_at_5`, `..._ci_low`/`_ci_high` for
    intervals; booleans as 0/1; strings dropped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        name = name.replace("@", "_at_").replace(".arms.", ".")
        if isinstance(value, Mapping):
            if key == "ci":
                for metric, pair in value.items():
                    base = f"{prefix}.{metric}".replace("@", "_at_").replace(".arms.", ".")
                    out[f"{base}_ci_low"], out[f"{base}_ci_high"] = float(pair[0]), float(pair[1])
            else:
                out.update(flat_metrics(value, name))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            out[f"{name}_low"], out[f"{name}_high"] = float(value[0]), float(value[1])
    return out


def headline_metrics(metrics: Mapping[str, Any], params: EvalParams) -> dict[str, Any]:
    """The few numbers `dvc metrics` and `dvc exp show` compare (metrics.json), from the full report: per test
    set, each arm's Hit@main_k and MRR@mrr_k and the Holm-adjusted p of adapter vs cosine; the arm validation
    recommends. Each leaf is a column of `dvc exp show`: validation's numbers, the other paired comparisons,
    intervals, other cut-offs and verdicts stay in report.json."""
    hit, mrr = f"hit@{params.main_k}", f"mrr@{params.mrr_k}"
    out: dict[str, Any] = {}
    for set_name, block in metrics.items():
        is_test_set = set_name.startswith("test") and isinstance(block, Mapping)
        if not is_test_set or not isinstance(block.get("arms"), Mapping):
            continue
        entry: dict[str, Any] = {"questions": block["questions"]}
        entry.update({arm: {k: m[k] for k in (hit, mrr) if k in m} for arm, m in block["arms"].items()})
        comparison = block.get("adapter_vs_cosine")
        if isinstance(comparison, Mapping):
            entry["adapter_vs_cosine"] = {
                f"p_holm_{k}": comparison[k]["p_holm"]
                for k in (hit, mrr)
                if isinstance(comparison.get(k), Mapping) and "p_holm" in comparison[k]
            }
        out[set_name] = entry
    if isinstance(metrics.get("recommendation"), Mapping):
        out["recommended_arm"] = metrics["recommendation"]["arm"]
    return out


def write_eval_outputs(result: EvalResult, params: EvalParams, out_dir: Path) -> list[Path]:
    """report.json (everything), metrics.json (its headline numbers, what DVC compares), hit_rate_at_k.csv
    (test set; k then one column per arm), per_question.csv and the two PNGs, each written atomically.
    Returns the paths written."""
    from ..io import write_json
    from ..plots import grouped_bar_chart, lines_against_k

    out_dir = Path(out_dir)
    written = [
        out_dir / "report.json",
        out_dir / "metrics.json",
        out_dir / "hit_rate_at_k.csv",
        out_dir / "per_question.csv",
    ]
    write_json(written[0], result.metrics)
    write_json(written[1], headline_metrics(result.metrics, params))
    curve = result.hit_rate_at_k.get("test", [])
    arm_names = [k for k in (curve[0] if curve else {}) if k != "k" and not k.endswith(("_low", "_high"))]
    write_csv(written[2], ["k", *arm_names], curve)
    rank_cols = sorted(
        {c for r in result.per_question for c in r if c.startswith("rank_")},
        key=lambda c: arm_order(c.removeprefix("rank_")),
    )
    write_csv(written[3], ["set", "id", "origin", "n_relevant", *rank_cols, "question"], result.per_question)

    main_key = f"hit@{params.main_k}"
    sets = [
        s
        for s, block in result.metrics.items()
        if s != "setup" and isinstance(block, Mapping) and isinstance(block.get("arms"), Mapping)
    ]
    arms = sorted({a for s in sets for a in result.metrics[s]["arms"]}, key=arm_order)
    nan = float("nan")
    groups = [f"{s}\n{result.metrics[s]['questions']} {result.metrics[s]['origin'].split(' (')[0]}" for s in sets]
    series = {a: [result.metrics[s]["arms"].get(a, {}).get(main_key, nan) for s in sets] for a in arms}
    intervals = {
        a: [tuple(result.metrics[s]["arms"].get(a, {}).get("ci", {}).get(main_key, (nan, nan))) for s in sets]
        for a in arms
    }
    bar_png = out_dir / "hit_rate_by_arm.png"
    grouped_bar_chart(
        bar_png,
        groups,
        series,
        intervals,
        title=f"Hit rate@{params.main_k} by arm ({params.confidence:.0%} bootstrap intervals)",
        ylabel=f"hit rate@{params.main_k}",
    )
    panels, bands = {}, {}
    for set_name, rows in result.hit_rate_at_k.items():
        names = [k for k in rows[0] if k != "k" and not k.endswith(("_low", "_high"))]
        label = f"{set_name} ({result.metrics[set_name]['questions']} {result.metrics[set_name]['origin']})"
        panels[label] = {a: [r[a] for r in rows] for a in sorted(names, key=arm_order)}
        bands[label] = {a: ([r[f"{a}_low"] for r in rows], [r[f"{a}_high"] for r in rows]) for a in names}
    curve_png = out_dir / "hit_rate_at_k.png"
    ks = [r["k"] for r in next(iter(result.hit_rate_at_k.values()), [])]
    lines_against_k(curve_png, panels, ks, bands, ylabel="hit rate@k")
    return [*written, bar_png, curve_png]


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    import csv

    from ..io import atomic_open

    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
