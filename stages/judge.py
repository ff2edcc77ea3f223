"""judge: short answers from the cosine and adapter top-k contexts, scored 1-5 on six criteria by an
LLM judge in both display orders, plus token F1 and embedding similarity; metrics.json, answers.jsonl,
scores.csv, PNGs and MLflow. Every LLM reply goes through data/cache/judge_llm.sqlite: a rerun costs no calls."""

import argparse
import logging
from pathlib import Path

from ragtune.io import read_json
from ragtune.judge import JudgeParams, JudgePaths, flat_judge_metrics, run_judge, write_judge_outputs
from ragtune.llm import LlmParams
from ragtune.params import EmbeddingParams, MlflowParams, load_section
from ragtune.stage import run_main
from ragtune.tracking import StageRun, stage_run

OUT = Path("data/judge")
LLM_CACHE = Path("data/cache/judge_llm.sqlite")
EMBEDDING_CACHE = Path("data/cache/judge_embeddings.sqlite")
TRAIN_METRICS = Path("data/train/metrics.json")
log = logging.getLogger("judge")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    defaults = JudgePaths()
    ap.add_argument("--corpus", type=Path, default=defaults.corpus)
    ap.add_argument("--test", type=Path, default=defaults.test)
    ap.add_argument("--embed-dir", type=Path, default=defaults.embed_dir)
    ap.add_argument("--adapter", type=Path, default=defaults.adapter)
    args = ap.parse_args()

    params = load_section("judge", JudgeParams)
    llm_params = load_section("llm", LlmParams)
    embedding_params = load_section("embedding", EmbeddingParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    paths = JudgePaths(corpus=args.corpus, test=args.test, embed_dir=args.embed_dir, adapter=args.adapter)
    result = run_judge(paths, params, llm_params, embedding_params, LLM_CACHE, EMBEDDING_CACHE)
    written = write_judge_outputs(result, OUT)

    m = result.metrics
    train_run_id = read_json(TRAIN_METRICS).get("mlflow_run_id") if TRAIN_METRICS.is_file() else None
    tags = {"ragtune.llm_backend": m["setup"]["backend"]}
    if train_run_id:
        tags.update({"ragtune.train_run_id": train_run_id, "mlflow.parentRunId": train_run_id})
    flat = flat_judge_metrics(m)
    with stage_run("judge", mlflow_params, params={"judge": params, "llm": llm_params}, tags=tags) as run:
        run.log_metrics(flat)
        for path in written:
            run.log_artifact(path)
        if run.active and train_run_id:
            try:  # the same numbers on the model's own run, beside eval's
                StageRun(train_run_id, run.client).log_metrics(flat)
            except Exception as exc:  # a train run from another tracking store must not fail the judge
                log.warning("judge: could not log to train run %s: %s", train_run_id, exc)

    s, arms, usage = m["setup"], m["arms"], m["usage"]
    agreement = m["order_agreement"].get("overall_winner_rate")
    cost = "unknown" if usage.get("cost_usd") is None else f"${usage['cost_usd']:.4f}"
    print(f"judge ({s['backend']} {s['model']}): {s['judged']}/{s['questions']} questions judged, "
          f"overall cosine {_fmt(arms['cosine']['overall'])} vs adapter {_fmt(arms['adapter']['overall'])}; "
          f"token F1 {_fmt(arms['cosine']['token_f1'])} vs {_fmt(arms['adapter']['token_f1'])}; "
          f"orders agree {_fmt(agreement, pct=True)}; {m['failures']['total']} failures; "
          f"{usage['calls']} calls ({usage['cache_hits']} cached), cost {cost}")
    if m.get("warning"):
        print(f"judge: WARNING: {m['warning']}")


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0%}" if pct else f"{x:.2f}"


if __name__ == "__main__":
    run_main(main)
