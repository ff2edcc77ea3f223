"""The judge stage's files: answers.jsonl, scores.csv (one row per question, order and arm), the flat
metrics MLflow logs, the two charts, and the warning printed when the judge disagrees with itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import round_metric
from .items import JudgeItem
from .prompts import ARMS, JUDGE_METRICS, ORDERS, TEXT_METRICS


@dataclass
class JudgeResult:
    metrics: dict[str, Any]
    answers: list[dict[str, Any]] = field(default_factory=list)  # one row per (question, arm)
    scores: list[dict[str, Any]] = field(default_factory=list)  # one row per (question, arm)


def answer_rows(
    items: Sequence[JudgeItem],
    answers: Mapping[tuple[str, str], str],
    sufficient: Mapping[tuple[str, str], bool],
    failures: Sequence[Mapping[str, Any]],
) -> list[dict]:
    failed = {f["item"]: f for f in failures if f["kind"] == "answer"}
    rows = []
    for it in items:
        for arm in ARMS:
            key = (it.question_id, arm)
            f = failed.get(f"{it.question_id}/{arm}")
            rows.append(
                {
                    "question_id": it.question_id,
                    "arm": arm,
                    "question": it.question,
                    "chunk_ids": list(it.chunk_ids[arm]),
                    "answer": answers.get(key),
                    "context_sufficient": sufficient.get(key),
                    "failure": None if f is None else {"reason": f["reason"], "detail": f["detail"]},
                    "reference_kind": it.reference.kind,
                    "reference": it.reference.text,
                }
            )
    return rows


def score_rows(
    items: Sequence[JudgeItem],
    arm_scores: np.ndarray,
    per_answer: np.ndarray,
    text_values: np.ndarray,
    judged: np.ndarray,
) -> list[dict]:
    """Per (question, arm): mean judge scores, the score when shown first / second, and text scores."""
    rows = []
    n_orders = arm_scores.shape[1]
    for i, it in enumerate(items):
        for a, arm in enumerate(ARMS):
            row: dict[str, Any] = {"question_id": it.question_id, "arm": arm, "judged": bool(judged[i])}
            for j, m in enumerate(JUDGE_METRICS):
                row[m] = _cell(per_answer[i, a, j])
            # Order o shows ORDERS[o][0] first: this arm's score when it was first and when second.
            for o in range(n_orders):
                slot = "first" if ORDERS[o][0] == arm else "second"
                for j, m in enumerate(JUDGE_METRICS):
                    row[f"{m}_shown_{slot}"] = _cell(arm_scores[i, o, a, j])
            for j, m in enumerate(TEXT_METRICS):
                row[m] = _cell(text_values[i, a, j])
            rows.append(row)
    return rows


def _cell(x: float) -> float | None:
    return None if np.isnan(x) else round_metric(x)


def score_columns() -> list[str]:
    """Columns of scores.csv; without swap_order each arm has only one of its two `_shown_` slots."""
    return [
        "question_id",
        "arm",
        "judged",
        *JUDGE_METRICS,
        *[f"{m}_shown_{s}" for s in ("first", "second") for m in JUDGE_METRICS],
        *TEXT_METRICS,
    ]


def judge_warning(metrics: Mapping[str, Any], backend: str, model: str, threshold: float = 0.8) -> str | None:
    """A plain warning when the judge cannot be trusted: a small local model, or the two display orders
    disagreeing on the overall winner more often than 1 - threshold."""
    agreement = (metrics.get("order_agreement") or {}).get("overall_winner_rate")
    parts = []
    if backend == "llamacpp":
        parts.append(
            f"the judge is a small local model ({model}); its scores are a smoke test of the "
            "pipeline, not a measurement of answer quality"
        )
    if agreement is not None and agreement < threshold:
        parts.append(
            f"the two display orders agree on the overall winner for only {agreement:.0%} of "
            "questions, so the judge's preferences are largely position noise"
        )
    return "; ".join(parts) if parts else None


def flat_judge_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric headline values as MLflow keys under `judge.`: per arm and metric (with `_ci_low` /
    `_ci_high`), adapter-vs-cosine counts and p-values, order agreement, failures, usage."""
    out: dict[str, float] = {}
    for arm, block in metrics["arms"].items():
        for m, v in block.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"judge.{arm}.{m}"] = float(v)
        for m, ci in block.get("ci", {}).items():
            if ci is not None:
                out[f"judge.{arm}.{m}_ci_low"], out[f"judge.{arm}.{m}_ci_high"] = float(ci[0]), float(ci[1])
    for m, c in metrics["adapter_vs_cosine"].items():
        for k in ("wins", "ties", "losses", "sign_test_p", "diff"):
            if c.get(k) is not None:
                out[f"judge.adapter_vs_cosine.{m}.{k}"] = float(c[k])
    agreement = metrics["order_agreement"]
    for m, v in (agreement.get("rate") or {}).items():
        if v is not None:
            out[f"judge.order_agreement.{m}"] = float(v)
    for k in ("first_preferred", "second_preferred", "tie"):
        if metrics["position_preference"].get(k) is not None:
            out[f"judge.position_preference.{k}"] = float(metrics["position_preference"][k])
    out["judge.failures"] = float(metrics["failures"]["total"])
    out["judge.questions_judged"] = float(metrics["setup"]["judged"])
    for k, v in (metrics.get("usage") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"judge.usage.{k}"] = float(v)
    return out


# `usage` entries that say what this run did, not what the judgements are: a rerun on a warm cache makes no
# calls and pays nothing for the same scores (results_cost_usd, what all the judged replies cost, stays).
USAGE_RUN_FACTS = (
    "calls",
    "cache_hits",
    "cache_misses",
    "failures_retried",
    "failures_kept",
    "tokens_in",
    "tokens_out",
    "cache_read",
    "cache_write",
    "cost_usd",
    "seconds",
)


def split_usage(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the metrics without this run's own usage facts, those facts) for report.json and run.json."""
    usage = dict(metrics.get("usage") or {})
    facts = {k: usage.pop(k) for k in USAGE_RUN_FACTS if k in usage}
    return {**metrics, "usage": usage}, facts


def headline_judge_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers `dvc metrics` compares (metrics.json), each a column of `dvc exp show`: per arm the
    overall score, failures, cost. The LLM-free scores, the paired test and order agreement are in report.json."""
    out: dict[str, Any] = {"questions_judged": metrics["setup"]["judged"]}
    out.update({arm: {"overall": block.get("overall")} for arm, block in metrics["arms"].items()})
    out["failures"] = metrics["failures"]["total"]
    out["cost_usd"] = (metrics.get("usage") or {}).get("results_cost_usd")
    return out


def write_judge_outputs(result: JudgeResult, out_dir: Path) -> list[Path]:
    """report.json (everything but this run's usage facts), metrics.json (its headline numbers), answers.jsonl,
    scores.csv and two grouped-bar PNGs (judge scores by arm, LLM-free scores by arm), each written
    atomically. Returns the paths written."""
    import csv

    from ..io import atomic_open, write_json
    from ..plots import grouped_bar_chart

    out_dir = Path(out_dir)
    report_path, metrics_path = out_dir / "report.json", out_dir / "metrics.json"
    answers_path, scores_path = out_dir / "answers.jsonl", out_dir / "scores.csv"
    report, _ = split_usage(result.metrics)
    write_json(report_path, report)
    write_json(metrics_path, headline_judge_metrics(report))
    with atomic_open(answers_path) as fh:
        for row in result.answers:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with atomic_open(scores_path) as fh:
        writer = csv.DictWriter(fh, fieldnames=score_columns(), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.scores)

    arms = result.metrics["arms"]
    conf = result.metrics["setup"]["confidence"]
    judged = result.metrics["setup"]["judged"]
    nan = float("nan")

    def series(metric_names: Sequence[str]) -> tuple[dict, dict]:
        vals = {a: [nan if arms[a][m] is None else arms[a][m] for m in metric_names] for a in ARMS}
        ivs = {a: [tuple(arms[a]["ci"][m]) if arms[a]["ci"][m] else (nan, nan) for m in metric_names] for a in ARMS}
        return vals, ivs

    judge_png = out_dir / "judge_scores.png"
    vals, ivs = series(JUDGE_METRICS)
    agreement = result.metrics["order_agreement"].get("overall_winner_rate")
    note = f"; orders agree {agreement:.0%}" if agreement is not None else ""
    grouped_bar_chart(
        judge_png,
        [m.replace("_", "\n") for m in JUDGE_METRICS],
        vals,
        ivs,
        title=f"LLM judge scores by arm ({judged} questions, {conf:.0%} bootstrap intervals{note})",
        ylabel="score (1-5, mean of both orders)",
        ylim=(0.0, 5.0),
        percent=False,
    )
    text_png = out_dir / "text_scores.png"
    vals, ivs = series(TEXT_METRICS)
    grouped_bar_chart(
        text_png,
        [m.replace("_", " ") for m in TEXT_METRICS],
        vals,
        ivs,
        title=f"Answer vs reference without an LLM ({conf:.0%} bootstrap intervals)",
        ylabel="score (0-1)",
        ylim=(0.0, 1.0),
        percent=False,
    )
    return [report_path, metrics_path, answers_path, scores_path, judge_png, text_png]
