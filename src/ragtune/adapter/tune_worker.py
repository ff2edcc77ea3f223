"""`ragtune tune-worker`: trials for a study that a tune stage started, run from any machine.

The worker reads what it needs from the study itself (`study.STUDY_ATTR`: params, input paths, data and
code fingerprints), refuses before any trial when this checkout's data or code differ, and runs trials
until the study has `tune.n_trials` finished ones.
"""

from __future__ import annotations

import logging
import os
import time

from ..errors import RagtuneError
from ..tracking import redact_url
from .config import TuneParams
from .study import (
    STUDY_ATTR,
    check_identity,
    finished_trials,
    open_storage,
)
from .tuning import WorkerJob, run_worker

log = logging.getLogger(__name__)


def join_study(
    storage: str, study_name: str, worker: int | None = None, threads: int | None = None, wait_s: float = 0.0
) -> int:
    """`ragtune tune-worker`: run trials of a study that a tune stage started (on this machine or another)
    until it has `n_trials` finished trials, then return how many it has. Waits up to `wait_s` seconds for
    the study to appear, and refuses with a clear error when this machine's training data or code differ
    from the study's. Run it from a project root whose embed outputs match the stage's."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_storage(storage, ".")  # one connection pool for the wait and the final count
    deadline = time.time() + wait_s
    while True:
        try:
            study = optuna.load_study(study_name=study_name, storage=rdb)
            identity = study.user_attrs.get(STUDY_ATTR)
        except KeyError:
            identity = None
        if identity is not None:
            break
        if time.time() >= deadline:
            raise RagtuneError(
                f"no study {study_name!r} started by a ragtune tune stage in {redact_url(storage)} "
                f"(waited {wait_s:g} s); start the tune stage with tune.storage set to this URL, "
                "and use the study name data/tune/run.json or its log gives"
            )
        time.sleep(0.5)
    check_identity(identity, study_name)
    tune = TuneParams(**identity["tune"])
    job = WorkerJob(
        identity["tune"],
        identity["base"],
        tuple(identity["inputs"]),
        storage,
        ".",
        study_name,
        os.getpid() % 1000 + 1 if worker is None else worker,
        threads or (os.cpu_count() or 1),
        None,
        None,
    )
    run_worker(job)
    done = finished_trials(optuna.load_study(study_name=study_name, storage=rdb))
    log.info("tune-worker: study %s has %d of %d trials finished", study_name, done, tune.n_trials)
    return done
