"""Tuning on a real PostgreSQL server: a tune stage with two worker processes and two `ragtune tune-worker`
processes on one study, the worker's refusal of a study whose data differ, and the storage URL handling."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from server_support import free_port, postgres_server
from test_training import learnable_data
from test_tuning import BASE, tune_params

from ragtune.adapter.study import STUDY_ATTR, data_fingerprint, open_storage, storage_url, study_fingerprint
from ragtune.adapter.tuning import run_study
from ragtune.cli import main
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import RagtuneError
from ragtune.records import Chunk, write_jsonl

INPUTS = ("inputs/questions.npz", "inputs/corpus.npz", "inputs/corpus.jsonl")  # relative, as the stage's are


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def write_inputs(root: Path, shift: float = 0.0) -> None:
    data = learnable_data(n_chunks=120, per_chunk=3)
    (root / "inputs").mkdir(parents=True)
    write_jsonl(root / INPUTS[2], [Chunk(id=c, text=f"text {i}") for i, c in enumerate(data.corpus_ids)])
    save_embeddings(root / INPUTS[1], data.corpus_ids, data.corpus_emb.numpy())
    save_embeddings(
        root / INPUTS[0],
        data.question_ids,
        data.question_emb.numpy() + shift,
        chunk_ids=[data.corpus_ids[g] for g in data.gold_rows.tolist()],
    )


def study_name(tune, root: Path) -> str:
    return f"{tune.study_name}-{study_fingerprint(tune, BASE, data_fingerprint(*(root / p for p in INPUTS)))}"


def tune_worker(url: str, name: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "RAGTUNE_LOG": "WARNING"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragtune.cli",
            "tune-worker",
            "--storage",
            url,
            "--study",
            name,
            "--wait",
            "120",
            "--threads",
            "1",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_stage_with_two_workers_and_two_tune_workers_share_one_postgresql_study(pg_url, tmp_path, monkeypatch):
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    tune = tune_params(n_trials=20, n_workers=2, storage=pg_url, study_name="shared")
    name = study_name(tune, tmp_path)
    # Workers started first wait for the study, as workers on other machines would.
    joiners = [tune_worker(pg_url, name, tmp_path) for _ in range(2)]
    result = run_study(tune, BASE, INPUTS, tmp_path / "unused")
    outputs = [p.communicate(timeout=300) for p in joiners]
    assert [p.returncode for p in joiners] == [0, 0], [err[-2000:] for _, err in outputs]
    assert result.study_name == name and not (tmp_path / "unused" / "optuna.journal").exists()

    study = optuna.load_study(study_name=name, storage=storage_url(pg_url))
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials)))  # no duplicate and no lost trial number
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert 20 <= len(trials) <= 20 + 3  # each of 4 processes may finish one trial in flight
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert result.best["value"] == max(t.value for t in complete)
    assert result.counts["complete"] + result.counts["pruned"] == len(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    joiner_ids = {w for w in workers if int(w.rsplit(":", 1)[1]) in {p.pid for p in joiners}}
    assert joiner_ids and len(workers) >= 3  # the tune-workers ran trials beside the stage's two
    assert all(f"{name}: " in out for out, _ in outputs)
    identity = study.user_attrs[STUDY_ATTR]
    assert identity["inputs"] == list(INPUTS) and identity["tune"]["storage"] is None  # no URL (password) stored


def test_tune_worker_refuses_a_study_whose_data_differ(pg_url, tmp_path, monkeypatch, capsys):
    stage_dir, other = tmp_path / "stage", tmp_path / "other"
    write_inputs(stage_dir)
    write_inputs(other, shift=1e-3)
    monkeypatch.chdir(stage_dir)
    tune = tune_params(n_trials=1, storage=pg_url, study_name="mismatch")
    result = run_study(tune, BASE, INPUTS, stage_dir / "unused")

    monkeypatch.chdir(other)
    assert main(["tune-worker", "--storage", pg_url, "--study", result.study_name]) == 2
    err = capsys.readouterr().err
    assert "training data differ from the study's" in err and data_fingerprint(*INPUTS) in err

    monkeypatch.chdir(tmp_path)  # no inputs here at all
    assert main(["tune-worker", "--storage", pg_url, "--study", result.study_name]) == 2
    assert "lacks its training data (inputs/questions.npz" in capsys.readouterr().err

    assert main(["tune-worker", "--storage", pg_url, "--study", "no-such-study"]) == 2
    assert "no study 'no-such-study'" in capsys.readouterr().err


def test_postgresql_urls_use_psycopg_and_errors_hide_the_password(tmp_path):
    assert storage_url("postgresql://u:p@db:5432/optuna") == "postgresql+psycopg://u:p@db:5432/optuna"
    assert storage_url("postgres://u@db/optuna") == "postgresql+psycopg://u@db/optuna"
    assert storage_url("postgresql+psycopg2://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert storage_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(RagtuneError) as err:  # nothing listens on a fresh free port
        open_storage(f"postgresql://optuna:s3cret@127.0.0.1:{free_port()}/optuna", tmp_path)
    assert "cannot open postgresql://optuna:***@127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
