"""The Optuna study's storage and identity, and what is read back from it.

A study lives in a JournalStorage file (the default) or an RDB URL; its name carries a fingerprint of the
search space, base params, training data and the code that decides what a trial computes, so the same
inputs resume one study and anything else starts a new one. `best_configuration` and `trial_rows` read a
finished study back for data/tune/best.json and trials.csv.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import RagtuneError
from ..tracking import redact_url
from .config import TrainParams, TuneParams

DEFAULT_JOURNAL = "optuna.journal"
CONNECT_TIMEOUT_S = 10
HEARTBEAT_S = 30  # RDB storage: a running trial beats this often; one silent for 4 beats is failed
# The study's user attribute that lets a worker on another machine join it (`ragtune tune-worker`): the
# tune and base params (no storage URL: no password), the input paths and their fingerprint, the code's.
STUDY_ATTR = "ragtune.study"


def storage_url(url: str) -> str:
    """The SQLAlchemy URL for a storage URL: `postgresql://` (and `postgres://`) use psycopg 3, the driver of
    the `postgres` extra (`pip install 'ragtune[postgres]'`); a URL naming its driver is kept as written."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_storage(storage: str | None, default_dir: str | os.PathLike[str]):
    """None -> JournalStorage file `default_dir/optuna.journal`; a URL with `://` -> RDB storage (with
    heartbeats, so a trial whose worker died is failed and not waited for); anything else -> a journal
    file at that path."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if storage and "://" in storage:
        try:
            url = storage_url(storage)
            # An unreachable database fails within seconds, not after the TCP timeout.
            engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if url.startswith("postgresql") else None
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=4 * HEARTBEAT_S
            )
        except (ImportError, ModuleNotFoundError) as exc:
            raise RagtuneError(
                f"tune.storage: {redact_url(storage)} needs a database driver ({exc}); "
                "install it (pip install 'ragtune[postgres]' for PostgreSQL) or use the "
                "default file"
            ) from None
        except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: say which storage, no password
            raise RagtuneError(
                f"tune.storage: cannot open {redact_url(storage)}: {redact_url(str(exc).splitlines()[0])}"
            ) from None
    path = Path(storage) if storage else Path(default_dir) / DEFAULT_JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def data_fingerprint(*paths: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        if not os.path.exists(p):  # an optional input (real questions) that this workspace lacks
            h.update(f"absent:{p}".encode())
            continue
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def code_fingerprint() -> str:
    """Hash of the modules that decide what a trial computes: changed code means a new study."""
    package = Path(__file__).parents[1]
    h = hashlib.sha256()
    for name in (
        "adapter/model.py",
        "adapter/losses.py",
        "adapter/config.py",
        "adapter/data.py",
        "adapter/splits.py",
        "adapter/training.py",
        "adapter/trials.py",
        "adapter/tuning.py",
        "adapter/hard_negatives.py",
        "adapter/real_questions.py",
        "search/dense.py",
        "evaluation/ranking.py",
    ):
        h.update((package / name).read_bytes())
    return h.hexdigest()[:16]


def study_fingerprint(tune: TuneParams, base: TrainParams, data_hash: str) -> str:
    """Same search, base params, data and code -> same study (resumed); anything else -> a new one."""
    # how the train stage runs and ships, not what a trial computes
    run_keys = {"use_tuned", "compare_linear", "device", "bagging", "interpolation", "refit", "refit_patience"}
    blob = json.dumps(
        {
            "code": code_fingerprint(),
            "space": {k: v.model_dump(mode="json") for k, v in sorted(tune.search_space.items())},
            "base": {k: v for k, v in base.model_dump(mode="json").items() if k not in run_keys},
            "seed": tune.seed,
            "pruning": [tune.pruning, tune.pruner_startup_trials, tune.pruner_warmup_epochs],
            "sampler_startup_trials": tune.sampler_startup_trials,
            "real_folds": tune.real_folds,
            "data": data_hash,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def study_identity(tune: TuneParams, base: TrainParams, inputs: tuple[str, ...], data_hash: str) -> dict[str, Any]:
    """What `STUDY_ATTR` holds: enough for a worker elsewhere to rebuild every trial of the study."""
    return {
        "tune": {**tune.model_dump(mode="json"), "storage": None},
        "base": base.model_dump(mode="json"),
        "inputs": [str(p) for p in inputs],
        "data": data_hash,
        "code": code_fingerprint(),
    }


def check_identity(identity: dict[str, Any], study_name: str) -> None:
    """Refuse to join a study whose inputs or code differ from this machine's (the trials would not be the
    study's trials)."""
    missing = [p for p in identity["inputs"][:3] if not os.path.exists(p)]
    if missing:
        raise RagtuneError(
            f"study {study_name}: this machine lacks its training data ({', '.join(missing)}); run "
            "the worker from the project root after `dvc pull` or `dvc repro embed`"
        )
    local = data_fingerprint(*identity["inputs"])
    if local != identity["data"]:
        raise RagtuneError(
            f"study {study_name}: this machine's training data differ from the study's (fingerprint "
            f"{local} here, {identity['data']} in the study); run the worker on the same fetch, "
            "synthesize and embed outputs (`dvc pull`, or the same params and `dvc repro embed`)"
        )
    if code_fingerprint() != identity["code"]:
        raise RagtuneError(
            f"study {study_name}: this machine's ragtune code differs from the study's (code "
            f"{code_fingerprint()} here, {identity['code']} in the study); check out the same commit"
        )


def fail_stale_trials(study) -> int:
    """Mark RUNNING trials left by a killed run as FAILED so a resumed study does not count them.
    Only for the single-machine journal file: on a shared RDB they may be another machine's."""
    import optuna

    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(stale)


def finished_trials(study) -> int:
    import optuna

    return len(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    )


def best_configuration(study) -> dict[str, Any]:
    """The best complete trial by (Hit@5, MRR@10): Hit@5 ties are common on small validation sets."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise RagtuneError("no tuning trial finished; raise tune.timeout_s or tune.n_trials")
    best = max(complete, key=lambda t: (t.value, t.user_attrs.get("val_mrr@10", 0.0), -t.number))
    attrs = best.user_attrs
    return {
        "trial": best.number,
        "value": best.value,
        "params": dict(best.params),
        "val_mrr@10": attrs.get("val_mrr@10"),
        "val_hit@1": attrs.get("val_hit@1"),
        "val_hit@10": attrs.get("val_hit@10"),
        "best_epoch": attrs.get("best_epoch"),
        "baseline_val_hit@5": attrs.get("baseline_val_hit@5"),
    }


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trial for trials.csv: objective (a pruned trial: the best Hit@5 it reached),
    best so far among complete trials, state, epochs, params. No wall time: trials.csv is committed, and a
    rerun must leave it unchanged (each trial's MLflow run has its seconds)."""
    rows = []
    best_so_far = float("nan")
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "fail"}.get(t.state.name, t.state.name.lower())
        value = t.value if t.value is not None else t.user_attrs.get("best_val_hit@5", float("nan"))
        if state == "complete" and not (value <= best_so_far):
            best_so_far = value
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": value,
                "best_so_far": best_so_far,
                "epochs": len(t.intermediate_values),
                **{f"param_{k}": v for k, v in sorted(t.params.items())},
            }
        )
    return rows


def write_trials_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    import csv

    from ..io import atomic_open

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(r.get(k)) for k in columns})


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else v
