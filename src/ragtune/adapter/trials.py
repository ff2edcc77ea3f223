"""One tuning trial: a configuration drawn from the search space, trained on each validation split, scored by
its selected validation Hit@5 (pooled over every split's questions), reported per epoch for pruning, and logged
as a nested MLflow run (params in one batch, the per-epoch curve in one batch). A pruned trial's run ends
FINISHED with the tag `ragtune.trial_state=pruned`; only a trial that raised ends FAILED.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SearchDim, TrainParams, apply_overrides
from .data import TrainingData
from .splits import Split
from .training import train_adapter

# Which process ran a trial (a trial user attribute): workers on several machines share one study.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


STATE_TAG = "ragtune.trial_state"


def suggest(trial, space: dict[str, SearchDim]) -> dict[str, Any]:
    """Draw one value per dimension, in the declared order."""
    out: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(dim.choices or []))
        elif dim.type == "int":
            low, high = dim.bounds()
            out[name] = trial.suggest_int(name, int(low), int(high), step=int(dim.step or 1), log=dim.log)
        else:
            low, high = dim.bounds()
            out[name] = trial.suggest_float(name, float(low), float(high), step=dim.step, log=dim.log)
    return out


@dataclass(frozen=True)
class MlflowTarget:
    """Where nested trial runs go: picklable, so worker processes can open their own client."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: tuple[tuple[str, str], ...] = ()


class TrialRun:
    """A nested MLflow run for one trial, opened by hand; everything is logged in batches."""

    def __init__(self, target: MlflowTarget | None, trial_number: int, params: dict[str, Any]):
        self.client = None
        self.run_id: str | None = None
        if target is None:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(target.tracking_uri)
        tags = {
            "mlflow.parentRunId": target.parent_run_id,
            "ragtune.stage": "tune",
            "optuna.trial": str(trial_number),
            **dict(target.tags),
        }
        run = self.client.create_run(target.experiment_id, tags=tags, run_name=f"trial-{trial_number:03d}")
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def finish(self, history: list[dict[str, float]], state: str, summary: dict[str, float]) -> None:
        if self.client is None or self.run_id is None:  # no target: both are None
            return
        from ..tracking import log_points

        points = [
            (k, float(v), int(row["epoch"]))
            for row in history
            for k, v in row.items()
            if k != "epoch" and v is not None and math.isfinite(float(v))
        ]
        points += [(k, float(v), 0) for k, v in summary.items() if math.isfinite(float(v))]
        log_points(self.client, self.run_id, points, tags={STATE_TAG: state})
        self.client.set_terminated(self.run_id, "FAILED" if state == "failed" else "FINISHED")


def pooled_metrics(per_split: Sequence[dict[str, float]], sizes: Sequence[int]) -> dict[str, float]:
    """Validation metrics of several splits as one: each a mean over its questions, so weighted by `sizes`."""
    total = sum(sizes)
    return {k: sum(m[k] * n for m, n in zip(per_split, sizes)) / total for k in per_split[0]}


class Objective:
    """Optuna objective: train one configuration on each validation split (one, or `tune.real_folds`
    folds of the real questions), report the first split's per-epoch validation Hit@5 (the pruner compares
    those), and return the selected Hit@5 pooled over every split's validation questions."""

    def __init__(
        self,
        base: TrainParams,
        space: dict[str, SearchDim],
        data: TrainingData,
        splits: Split | Sequence[Split],
        mlflow_target: MlflowTarget | None = None,
    ):
        self.base, self.space, self.data = base, space, data
        self.splits = (splits,) if isinstance(splits, Split) else tuple(splits)
        self.mlflow_target = mlflow_target

    def __call__(self, trial) -> float:
        import optuna

        overrides = suggest(trial, self.space)
        trial.set_user_attr("worker", WORKER_ID)
        params = apply_overrides(self.base, overrides, source=f"trial {trial.number}")
        run = TrialRun(self.mlflow_target, trial.number, overrides)
        history: list[dict[str, float]] = []

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            history.append(row)
            trial.report(row["val_hit@5"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        t0 = time.perf_counter()
        try:
            results = [
                train_adapter(params, self.data, split, on_epoch=on_epoch if i == 0 else None)
                for i, split in enumerate(self.splits)
            ]
        except optuna.TrialPruned:
            best_seen = max(r["val_hit@5"] for r in history)
            trial.set_user_attr("best_val_hit@5", best_seen)
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            run.finish(history, "pruned", {"best_val_hit@5": best_seen})
            raise
        except Exception:
            run.finish(history, "failed", {})
            raise
        sizes = [s.n_validation for s in self.splits]
        best = pooled_metrics([r.best for r in results], sizes)
        summary = {f"val_{k}": v for k, v in best.items()}
        epochs = [r.best_epoch for r in results]
        attrs: dict[str, Any] = {
            **summary,
            "best_epoch": int(np.median(epochs)),
            "seconds": sum(r.seconds for r in results),
            "baseline_val_hit@5": pooled_metrics([r.baseline for r in results], sizes)["hit@5"],
        }
        if len(results) > 1:
            attrs["fold_best_epochs"] = epochs
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        run.finish(
            results[0].history[1:],
            "complete",  # best_*: the selected epoch, apart from the curves
            {**{f"best_{k}": v for k, v in summary.items()}, "best_epoch": attrs["best_epoch"]},
        )
        return best["hit@5"]
