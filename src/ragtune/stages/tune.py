"""tune: Optuna search over the adapter's hyperparameters -> best.json, trials.csv, the study storage, and
run.json (the study name, seconds and MLflow run id; not committed)."""

import math

from ragtune.adapter.config import TrainParams, TuneParams
from ragtune.adapter.data import load_training_data
from ragtune.adapter.study import write_trials_csv
from ragtune.adapter.trials import MlflowTarget
from ragtune.adapter.tuning import real_fold_count, run_study
from ragtune.io import write_json
from ragtune.params import MlflowParams, load_section
from ragtune.stage import run_main, stage_paths, write_run_record
from ragtune.tracking import pipeline_tags, redact_url, stage_run


def main() -> None:
    paths = stage_paths("tune", __doc__)
    inputs, out = paths.training_inputs(), paths.tune_dir
    storage_dir = out / "storage"
    tune = load_section("tune", TuneParams)
    base = load_section("train", TrainParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    data = load_training_data(*inputs, round_trip_top_k=base.round_trip_top_k)
    url = tune.storage_url()  # from the environment when tune.storage_env names a variable
    storage_label = redact_url(url) if url else str(storage_dir / "optuna.journal")

    with stage_run("tune", mlflow_params, params={"tune": tune, "train": base}, datasets=paths.datasets()) as run:
        target = None
        if run.run_id is not None:  # run.active
            experiment_id = run.client.get_run(run.run_id).info.experiment_id
            tags = {k: v for k, v in pipeline_tags("tune").items() if k != "ragtune.stage"}
            target = MlflowTarget(mlflow_params.uri(), experiment_id, run.run_id, tuple(tags.items()))
        result = run_study(tune, base, inputs, storage_dir, target, data)
        best = result.best
        run.set_tags(
            {
                "optuna.study_name": result.study_name,
                "optuna.storage": storage_label,
                "ragtune.validation": "real" if data.has_real else "synthetic",
                "optuna.best_trial": best["trial"],
                "optuna.stopped_by": result.stopped_by,
            }
        )
        run.log_metrics(
            {
                "best_val_hit@5": best["value"],
                "best_val_mrr@10": best["val_mrr@10"],
                "baseline_val_hit@5": best["baseline_val_hit@5"],
                "seconds": result.seconds,
                **{f"n_{k}": v for k, v in result.counts.items()},
            }
        )
        run.log_points(
            [
                ("trial_objective", float(r["value"]), int(r["trial"]))
                for r in result.trials
                if isinstance(r["value"], float) and math.isfinite(r["value"])
            ]
        )

    if url and "://" in url:
        storage_dir.mkdir(parents=True, exist_ok=True)
        (storage_dir / "README.txt").write_text(
            f"study {result.study_name} is stored in {storage_label}\n", encoding="utf-8"
        )
    write_trials_csv(out / "trials.csv", result.trials)
    write_json(
        out / "best.json",
        {
            **best,
            "storage": storage_label,
            "validation": "real" if data.has_real else "synthetic",
            "validation_folds": max(1, real_fold_count(data, tune)),
            "trials": result.counts,
            "stopped_by": result.stopped_by,
        },
    )
    # `ragtune tune-worker --study` takes the study name from here.
    write_run_record(
        out, {"study": result.study_name, "seconds": round(result.seconds, 2), "mlflow_run_id": run.run_id}
    )
    print(
        f"tune: {result.counts['complete']} complete, {result.counts['pruned']} pruned in "
        f"{result.seconds:.0f} s; best trial {best['trial']}: val Hit@5 {best['value']:.4f} "
        f"(raw cosine {best['baseline_val_hit@5']:.4f})"
        + ("; stopped by tune.timeout_s before tune.n_trials" if result.stopped_by == "timeout_s" else "")
    )


if __name__ == "__main__":
    run_main(main)
