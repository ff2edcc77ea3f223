"""eval: raw cosine, the trained adapter(s) and BM25 on the same test and validation questions, with
bootstrap intervals and paired tests; metrics.json, hit_rate_at_k.csv, per_question.csv and PNGs."""

import argparse
import logging
from pathlib import Path

from ragtune.evaluation import EvalParams, EvalPaths, flat_metrics, run_eval, write_eval_outputs
from ragtune.io import read_json
from ragtune.params import MlflowParams, load_section
from ragtune.stage import run_main
from ragtune.tracking import stage_run

OUT = Path("data/eval")
TRAIN_METRICS = Path("data/train/metrics.json")
log = logging.getLogger("eval")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    defaults = EvalPaths()
    ap.add_argument("--corpus", type=Path, default=defaults.corpus)
    ap.add_argument("--test", type=Path, default=defaults.test)
    ap.add_argument("--questions", type=Path, default=defaults.questions)
    ap.add_argument("--embed-dir", type=Path, default=defaults.embed_dir)
    ap.add_argument("--split", type=Path, default=defaults.split)
    ap.add_argument("--adapter", type=Path, default=defaults.adapter)
    ap.add_argument("--linear-adapter", type=Path, default=defaults.linear_adapter)
    args = ap.parse_args()

    params = load_section("eval", EvalParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    paths = EvalPaths(corpus=args.corpus, test=args.test, questions=args.questions, embed_dir=args.embed_dir,
                      split=args.split, adapter=args.adapter, linear_adapter=args.linear_adapter)
    result = run_eval(paths, params)
    written = write_eval_outputs(result, params, OUT)

    train_run_id = None
    if TRAIN_METRICS.is_file():
        train_run_id = read_json(TRAIN_METRICS).get("mlflow_run_id")
    flat = flat_metrics({k: v for k, v in result.metrics.items() if k != "setup"})
    tags = {"ragtune.train_run_id": train_run_id} if train_run_id else {}
    if result.metrics["setup"].get("protocol"):
        tags["ragtune.protocol"] = result.metrics["setup"]["protocol"]
    if train_run_id:
        tags["mlflow.parentRunId"] = train_run_id  # shows eval nested under the trained model's run
    with stage_run("eval", mlflow_params, params={"eval": params}, tags=tags) as run:
        run.log_metrics(flat)
        for path in written:
            run.log_artifact(path)
        if run.active and train_run_id:
            # The same numbers on the model's own run, so runs can be compared by their test scores.
            try:
                from ragtune.tracking import StageRun

                StageRun(train_run_id, run.client).log_metrics(flat)
            except Exception as exc:  # a train run from another tracking store must not fail eval
                log.warning("eval: could not log to train run %s: %s", train_run_id, exc)

    main_k = params.main_k
    for set_name in ("test", "test_documents", "val"):
        block = result.metrics.get(set_name)
        if not block:
            continue
        arms = ", ".join(f"{a} {m[f'hit@{main_k}']:.1%}" for a, m in block["arms"].items())
        print(f"eval {set_name} ({block['questions']} {block['origin']}): Hit@{main_k} {arms}")
        if "adapter_vs_cosine" in block:
            print(f"  {block['adapter_vs_cosine']['verdict']}")
    if "recommendation" in result.metrics:
        print(f"eval recommendation: {result.metrics['recommendation']['note']}")


if __name__ == "__main__":
    run_main(main)
