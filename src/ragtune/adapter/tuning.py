"""Hyperparameter search for the adapter: Optuna TPE (seeded) with per-epoch pruning.

The search space is declared in params.yaml (`tune.search_space`), one entry per `train` key:
`{type: float|int, low, high, log}` or `{type: categorical, choices: [...]}`. Each trial trains with
`ragtune.adapter.training.train_adapter` and is scored by its selected validation Hit@5 (never below raw
cosine, which is part of every trial's model selection). With labelled real training questions the score can
be cross-validated (`tune.real_folds: k`): one adapter per fold of the real questions, each validated on its own
fold, and Hit@5 pooled over every real question instead of the 30% slice that one split holds out (on ACORD, 18
questions). Off by default: on the development sets it cost k times the study and moved no test number.

Storage: a JournalStorage file by default (one machine, any number of worker processes), or any
RDB URL (e.g. PostgreSQL, for several machines). The study name carries a fingerprint of the search
space, the base params and the data, so rerunning with the same inputs resumes the same study and
changing any of them starts a new one.

MLflow: the caller opens the parent run; every trial gets a nested run opened by hand through
`MlflowClient` (params in one batch, the per-epoch curve in one batch). A pruned trial ends FINISHED
with the tag `ragtune.trial_state=pruned`; only a trial that raised ends FAILED.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..credentials import ENV_NAME, from_env
from ..errors import RagtuneError
from ..params import Section
from .data import TrainingData
from .splits import Split, make_split, real_fold_splits
from .study import (
    STUDY_ATTR,
    best_configuration,
    data_fingerprint,
    fail_stale_trials,
    finished_trials,
    open_storage,
    study_fingerprint,
    study_identity,
    trial_rows,
)
from .training import TUNABLE, TrainParams, apply_overrides, train_adapter

log = logging.getLogger(__name__)


# Which process ran a trial (a trial user attribute): workers on several machines share one study.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


STATE_TAG = "ragtune.trial_state"


Scalar = str | int | float | bool


class SearchDim(Section):
    """One hyperparameter's range (`float`/`int`, optionally on a log scale) or its `choices`."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Scalar] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SearchDim:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical dimension takes `choices` only")
        else:
            if self.low is None or self.high is None or self.choices is not None:
                raise ValueError(f"a {self.type} dimension takes `low` and `high` (no `choices`)")
            if self.low > self.high:
                raise ValueError(f"low {self.low} is above high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError("a log-scale range needs low > 0")
            if self.log and self.step is not None:
                raise ValueError("`step` and `log` cannot be combined")
            if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("an int dimension needs whole-number bounds")
        return self

    def extremes(self) -> list[Scalar]:
        """The values that must be valid `train` values for the whole range to be."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


DEFAULT_SEARCH_SPACE: dict[str, SearchDim] = {
    "kind": SearchDim(type="categorical", choices=["mlp", "linear"]),
    "loss": SearchDim(type="categorical", choices=["in_batch", "full_corpus"]),
    "hidden_dim": SearchDim(type="categorical", choices=[64, 128, 256]),
    "n_hidden_layers": SearchDim(type="int", low=0, high=2),
    "dropout": SearchDim(type="float", low=0.0, high=0.3),
    "lr": SearchDim(type="float", low=3e-5, high=3e-3, log=True),
    "weight_decay": SearchDim(type="float", low=1e-4, high=0.3, log=True),
    "temperature": SearchDim(type="float", low=0.01, high=0.2, log=True),
    "identity_weight": SearchDim(type="float", low=1e-3, high=3.0, log=True),
    "batch_size": SearchDim(type="categorical", choices=[64, 128, 256, 512]),
}


class TuneParams(Section):
    """params.yaml `tune`: how long to search, where the study lives, and the search space."""

    n_trials: int = Field(50, ge=1, le=100_000)
    timeout_s: float | None = Field(270.0, gt=0)
    seed: int = 42
    n_workers: int = Field(1, ge=1, le=256)
    # null: a journal file in data/tune/storage/; a path; or a database URL without a password. A URL with one
    # (postgresql://user:PASSWORD@host/db) is refused here: name the environment variable holding it in
    # storage_env instead, which then replaces storage.
    storage: str | None = None
    storage_env: str | None = Field(None, pattern=ENV_NAME)
    study_name: str = Field("ragtune", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    resume: bool = True
    pruning: bool = True
    pruner_startup_trials: int = Field(5, ge=0)
    pruner_warmup_epochs: int = Field(2, ge=0)
    sampler_startup_trials: int = Field(10, ge=0)
    real_folds: int = Field(0, ge=0, le=100)
    search_space: dict[str, SearchDim] = Field(default_factory=lambda: dict(DEFAULT_SEARCH_SPACE))

    @field_validator("real_folds")
    @classmethod
    def _real_folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError(
                "1 fold would validate on the questions it trains on; use 0 (one seeded "
                "train.real_val_fraction slice) or 2 and more"
            )
        return v

    def storage_url(self) -> str | None:
        """The storage to open: the URL in storage_env's variable, else storage (None: the default journal)."""
        if self.storage_env:
            return from_env(self.storage_env, "tune.storage_env", "postgresql://user:PASSWORD@host:5432/optuna")
        return self.storage

    @model_validator(mode="after")
    def _one_storage(self) -> TuneParams:
        if self.storage and self.storage_env:
            raise ValueError("set storage or storage_env, not both (storage_env's variable replaces storage)")
        return self

    @model_validator(mode="after")
    def _space_names_train_keys(self) -> TuneParams:
        unknown = sorted(set(self.search_space) - TUNABLE)
        if unknown:
            raise ValueError(f"search_space: {unknown} are not tunable train keys; tunable: {sorted(TUNABLE)}")
        for name, dim in self.search_space.items():
            for value in dim.extremes():
                try:
                    TrainParams(**{name: value})
                except ValueError as exc:
                    first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
                    raise ValueError(f"search_space.{name}: {value!r} is not a valid train.{name} ({first})") from None
        return self


def make_sampler(tune: TuneParams, worker: int = 0):
    import optuna

    # Each worker its own seed stream; constant_liar keeps parallel workers from sampling one point.
    return optuna.samplers.TPESampler(
        seed=tune.seed + worker, n_startup_trials=tune.sampler_startup_trials, constant_liar=tune.n_workers > 1
    )


def make_pruner(tune: TuneParams):
    import optuna

    if not tune.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=tune.pruner_warmup_epochs
    )


def suggest(trial, space: dict[str, SearchDim]) -> dict[str, Any]:
    """Draw one value per dimension, in the declared order."""
    out: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(dim.choices or []))
        elif dim.type == "int":
            out[name] = trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high), step=dim.step, log=dim.log)
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
        if self.client is None:
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
        attrs = {
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


def real_fold_count(data: TrainingData, tune: TuneParams) -> int:
    """The folds of real questions a trial validates on: `tune.real_folds` when the data has real
    questions, else 0 (one split). Never 1: the params refuse it."""
    return tune.real_folds if data.has_real else 0


def tuning_splits(data: TrainingData, base: TrainParams, tune: TuneParams) -> list[Split]:
    """What a trial validates on: `real_fold_count` folds of the real questions, or with none
    `make_split`'s one split (the synthetic split by chunk, or one real slice)."""
    k = real_fold_count(data, tune)
    return real_fold_splits(data, k, base.seed) if k else [make_split(data, base, base.seed)]


def _stop_callback(n_trials: int):
    import optuna

    # Counts finished trials in the storage, so resumed studies and several workers share one budget.
    return optuna.study.MaxTrialsCallback(
        n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker process needs (picklable): it reloads the data itself."""

    tune: dict[str, Any]
    base: dict[str, Any]
    inputs: tuple[str, ...]  # questions.npz, corpus.npz, corpus.jsonl[, test.jsonl[, train_questions.jsonl, real.npz]]
    storage: str | None
    storage_dir: str
    study_name: str
    worker: int
    threads: int
    deadline: float | None  # time.time() at which to stop starting trials
    mlflow_target: MlflowTarget | None


def run_worker(job: WorkerJob, data: TrainingData | None = None) -> None:
    import optuna
    import torch

    from .data import load_training_data

    torch.set_num_threads(job.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not logging.getLogger().handlers:  # a spawned worker starts without the stage's logging set-up
        logging.basicConfig(
            level=os.environ.get("RAGTUNE_LOG", "INFO"),
            format=f"%(asctime)s %(levelname)s worker-{job.worker}: %(message)s",
        )
    tune, base = TuneParams(**job.tune), TrainParams(**job.base)
    if data is None:
        data = load_training_data(*job.inputs, round_trip_top_k=base.round_trip_top_k)
    splits = tuning_splits(data, base, tune)
    study = optuna.load_study(
        study_name=job.study_name,
        storage=open_storage(job.storage, job.storage_dir),
        sampler=make_sampler(tune, job.worker),
        pruner=make_pruner(tune),
    )
    if finished_trials(study) >= tune.n_trials:
        return
    timeout = None if job.deadline is None else max(0.0, job.deadline - time.time())
    if timeout == 0.0:
        return
    study.optimize(
        Objective(base, tune.search_space, data, splits, job.mlflow_target),
        timeout=timeout,
        callbacks=[_stop_callback(tune.n_trials), _log_trial],
    )


def _log_trial(study, trial) -> None:
    value = trial.value if trial.value is not None else trial.user_attrs.get("best_val_hit@5")
    log.info(
        "trial %d %s: val Hit@5 %s %s",
        trial.number,
        trial.state.name.lower(),
        "n/a" if value is None else f"{value:.4f}",
        trial.params,
    )


@dataclass
class StudyResult:
    study: Any
    study_name: str
    best: dict[str, Any]
    trials: list[dict[str, Any]]
    seconds: float
    counts: dict[str, int]
    # "n_trials": the study reached tune.n_trials finished trials; "timeout_s": the time budget stopped it
    # first, so how many trials ran (hence the best) depends on this machine's speed
    stopped_by: str


def run_study(
    tune: TuneParams,
    base: TrainParams,
    inputs: tuple[str, ...],
    storage_dir: str | os.PathLike[str],
    mlflow_target: MlflowTarget | None = None,
    data: TrainingData | None = None,
) -> StudyResult:
    """Create or resume the study, run `n_workers` processes against one storage until `n_trials`
    trials have finished (or the timeout), and return the best configuration."""
    import optuna

    from .data import load_training_data

    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if data is None:
        data = load_training_data(*inputs, round_trip_top_k=base.round_trip_top_k)
    data_hash = data_fingerprint(*inputs)
    fingerprint = study_fingerprint(tune, base, data_hash)
    study_name = f"{tune.study_name}-{fingerprint}"
    url = tune.storage_url()
    storage = open_storage(url, storage_dir)
    if not tune.resume:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:
            pass
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(tune),
        pruner=make_pruner(tune),
        load_if_exists=True,
    )
    study.set_user_attr(STUDY_ATTR, study_identity(tune, base, tuple(map(str, inputs)), data_hash))
    if not (url and "://" in url):
        n_stale = fail_stale_trials(study)
        if n_stale:
            log.warning("marked %d trial(s) left running by an interrupted run as failed", n_stale)
    done = finished_trials(study)
    if done:
        log.info("resuming study %s: %d of %d trials already finished", study_name, done, tune.n_trials)
    deadline = None if tune.timeout_s is None else time.time() + tune.timeout_s
    cores = os.cpu_count() or 1
    jobs = [
        WorkerJob(
            tune.model_dump(mode="json"),
            base.model_dump(mode="json"),
            tuple(map(str, inputs)),
            url,
            str(storage_dir),
            study_name,
            w,
            max(1, cores // tune.n_workers),
            deadline,
            mlflow_target,
        )
        for w in range(tune.n_workers)
    ]
    if tune.n_workers == 1:
        _run_worker_in_process(jobs[0], data)
    else:
        # spawn, not fork: a forked child inherits torch's OpenMP thread pool in an unusable state.
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=run_worker, args=(job,), name=f"tune-worker-{job.worker}") for job in jobs]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.name for p in procs if p.exitcode != 0]
        if bad:
            raise RagtuneError(f"tune worker(s) {bad} exited with an error; see the log above")
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = trial_rows(study)
    counts = {s: sum(1 for t in trials if t["state"] == s) for s in ("complete", "pruned", "fail", "running")}
    best = best_configuration(study)
    finished = finished_trials(study)  # the count the workers stop at
    stopped_by = "n_trials" if finished >= tune.n_trials else "timeout_s"
    if stopped_by == "timeout_s":
        log.warning(
            "tune.timeout_s (%s s) stopped the study after %d of tune.n_trials=%d finished trials: the "
            "best depends on this machine's speed. `dvc repro -f tune` resumes the study; "
            "tune.timeout_s: null makes it run to n_trials",
            tune.timeout_s,
            finished,
            tune.n_trials,
        )
    return StudyResult(study, study_name, best, trials, time.perf_counter() - t0, counts, stopped_by)


def _run_worker_in_process(job: WorkerJob, data: TrainingData) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        run_worker(job, data)
    finally:
        torch.set_num_threads(threads)


__all__ = ["TuneParams", "SearchDim", "run_study", "StudyResult", "MlflowTarget"]
