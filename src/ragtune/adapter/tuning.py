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
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RagtuneError
from .config import TrainParams, TuneParams
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
from .trials import MlflowTarget, Objective

log = logging.getLogger(__name__)


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
    inputs: tuple[str | Path, ...],
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
