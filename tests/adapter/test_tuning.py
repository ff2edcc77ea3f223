"""Tuning: the declared search space, seeded studies, resume, workers, storage, MLflow per trial."""

import csv

import numpy as np
import optuna
import pytest
from test_training import learnable_data

from ragtune.adapter.config import SearchDim, TrainParams, TuneParams
from ragtune.adapter.splits import split_by_chunk
from ragtune.adapter.study import best_configuration, trial_rows, write_trials_csv
from ragtune.adapter.trials import STATE_TAG, MlflowTarget, Objective
from ragtune.adapter.tuning import run_study
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import ParamsError, RagtuneError
from ragtune.params import load_section
from ragtune.records import Chunk, write_jsonl
from ragtune.tracking import redact_url

BASE = TrainParams(max_epochs=3, patience=2, batch_size=64, hidden_dim=16, dropout=0.0)
SPACE = {
    "kind": SearchDim(type="categorical", choices=["mlp", "linear"]),
    "lr": SearchDim(type="float", low=1e-3, high=3e-2, log=True),
    "n_hidden_layers": SearchDim(type="int", low=0, high=1),
    "loss": SearchDim(type="categorical", choices=["in_batch", "full_corpus"]),
}


def tune_params(**kw):
    defaults = dict(
        n_trials=6,
        timeout_s=None,
        seed=3,
        search_space=SPACE,
        sampler_startup_trials=3,
        pruner_startup_trials=2,
        pruner_warmup_epochs=1,
    )
    return TuneParams(**{**defaults, **kw})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The embed and fetch outputs a study reads, as files (worker processes reload them)."""
    root = tmp_path_factory.mktemp("tune_inputs")
    data = learnable_data(n_chunks=120, per_chunk=3)
    texts = ["shared text" if i < 2 else f"text {i}" for i in range(len(data.corpus_ids))]
    write_jsonl(root / "corpus.jsonl", [Chunk(id=c, text=t) for c, t in zip(data.corpus_ids, texts)])
    save_embeddings(root / "corpus.npz", data.corpus_ids, data.corpus_emb.numpy())
    save_embeddings(
        root / "questions.npz",
        data.question_ids,
        data.question_emb.numpy(),
        chunk_ids=[data.corpus_ids[g] for g in data.gold_rows.tolist()],
    )
    return tuple(str(root / n) for n in ("questions.npz", "corpus.npz", "corpus.jsonl"))


def test_search_space_errors_name_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    cases = {
        "tune:\n  search_space:\n    learning_rate: {type: float, low: 0.1, high: 0.2}\n": "not tunable train keys",
        "tune:\n  search_space:\n    lr: {type: float, low: 0.0, high: 0.1, log: true}\n": "log-scale range needs low > 0",  # noqa: E501
        "tune:\n  search_space:\n    lr: {type: float, low: 0.1, high: 5.0}\n": "search_space.lr: 5.0 is not a valid train.lr",  # noqa: E501
        "tune:\n  search_space:\n    kind: {type: categorical}\n": "takes `choices` only",
        "tune:\n  search_space:\n    kind: {type: categorical, choices: [mlp, conv]}\n": "'conv' is not a valid train.kind",  # noqa: E501
        "tune:\n  n_trials: 0\n": "tune.n_trials:",
        "tune:\n  real_folds: 1\n": "tune.real_folds: Value error, 1 fold would validate on the questions it trains on",
        "tune:\n  search_space:\n    lr: {type: float, low: 0.1, hi: 0.2}\n": "tune.search_space.lr.hi: unknown key",
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(ParamsError) as err:
            load_section("tune", TuneParams, path)
        assert expected in str(err.value), text


def test_default_space_validates_and_covers_the_issue_levers():
    space = TuneParams().search_space
    assert {
        "kind",
        "loss",
        "hidden_dim",
        "n_hidden_layers",
        "dropout",
        "lr",
        "weight_decay",
        "temperature",
        "identity_weight",
        "batch_size",
    } <= set(space)
    assert space["lr"].log


def test_same_seed_same_study_and_best_json_fields(inputs, tmp_path):
    a = run_study(tune_params(resume=False), BASE, inputs, tmp_path / "a")
    b = run_study(tune_params(resume=False), BASE, inputs, tmp_path / "b")
    assert a.trials == b.trials  # no wall time in a row: trials.csv reruns byte for byte
    assert a.best == b.best and a.study_name == b.study_name
    assert a.counts["complete"] + a.counts["pruned"] == 6 and a.stopped_by == "n_trials"
    assert set(a.best["params"]) == set(SPACE)
    assert a.best["value"] >= a.best["baseline_val_hit@5"]  # raw cosine is in every trial's selection


def test_resume_continues_the_same_study(inputs, tmp_path):
    first = run_study(tune_params(n_trials=3), BASE, inputs, tmp_path)
    more = run_study(tune_params(n_trials=5), BASE, inputs, tmp_path)
    assert more.study_name == first.study_name
    assert len(more.trials) == 5 and more.trials[:3] == first.trials
    again = run_study(tune_params(n_trials=5), BASE, inputs, tmp_path)  # nothing left to do
    assert len(again.trials) == 5
    fresh = run_study(tune_params(n_trials=2, resume=False), BASE, inputs, tmp_path)
    assert len(fresh.trials) == 2
    changed = run_study(tune_params(n_trials=2), BASE.model_copy(update={"temperature": 0.1}), inputs, tmp_path)
    assert changed.study_name != first.study_name  # other base params: another study


def test_a_study_the_time_budget_stopped_says_so_and_resumes_to_n_trials(inputs, tmp_path, caplog):
    first = run_study(tune_params(n_trials=2), BASE, inputs, tmp_path)
    # A budget spent before the first new trial: the study keeps its 2 trials of the 5 asked for.
    cut = run_study(tune_params(n_trials=5, timeout_s=1e-9), BASE, inputs, tmp_path)
    assert cut.stopped_by == "timeout_s" and cut.counts["complete"] + cut.counts["pruned"] < 5
    assert cut.trials[:2] == first.trials
    assert "tune.timeout_s" in caplog.text and "of tune.n_trials=5" in caplog.text
    resumed = run_study(tune_params(n_trials=5), BASE, inputs, tmp_path)
    assert resumed.stopped_by == "n_trials" and len(resumed.trials) == 5 and resumed.trials[:2] == first.trials


def test_a_trial_left_running_by_a_killed_run_is_failed_on_resume(inputs, tmp_path):
    first = run_study(tune_params(n_trials=2), BASE, inputs, tmp_path)
    storage = optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    study.ask()  # a trial that was running when its process died
    resumed = run_study(tune_params(n_trials=3), BASE, inputs, tmp_path)
    assert [r["state"] for r in resumed.trials].count("fail") == 1
    assert resumed.counts["complete"] + resumed.counts["pruned"] == 3


def test_two_worker_processes_share_one_journal_file(inputs, tmp_path):
    result = run_study(tune_params(n_trials=4, n_workers=2), BASE, inputs, tmp_path)
    finished = result.counts["complete"] + result.counts["pruned"]
    assert 4 <= finished <= 5  # each worker stops once 4 have finished; one may be mid-trial
    assert result.counts["fail"] == 0 and result.counts["running"] == 0


def test_an_rdb_url_works_as_storage(inputs, tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_study(tune_params(n_trials=2, storage=url), BASE, inputs, tmp_path / "unused")
    assert len(result.trials) == 2 and (tmp_path / "optuna.db").is_file()
    assert not (tmp_path / "unused" / "optuna.journal").exists()


def test_redact_url_hides_the_password():
    assert (
        redact_url("postgresql://tuner:s3cret@db.example:5432/optuna")
        == "postgresql://tuner:***@db.example:5432/optuna"
    )
    assert redact_url("sqlite:///data/x.db") == "sqlite:///data/x.db"


def mlflow_parent(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp).info.run_id
    return client, MlflowTarget(uri, exp, parent, (("ragtune.git_commit", "abc"),))


def test_each_trial_is_a_nested_mlflow_run_with_its_curve(inputs, tmp_path):
    client, target = mlflow_parent(tmp_path)
    result = run_study(tune_params(n_trials=3, pruning=False), BASE, inputs, tmp_path / "s", mlflow_target=target)
    runs = client.search_runs([target.experiment_id], f"tags.mlflow.parentRunId = '{target.parent_run_id}'")
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[STATE_TAG] == "complete"
        assert run.data.tags["ragtune.git_commit"] == "abc"
        assert set(run.data.params) == set(SPACE)
        curve = client.get_metric_history(run.info.run_id, "val_hit_5")
        assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and curve
    assert sorted(r.data.tags["optuna.trial"] for r in runs) == ["0", "1", "2"]
    assert result.counts["complete"] == 3


def test_a_pruned_trial_is_tagged_pruned_not_failed(inputs, tmp_path):
    from ragtune.adapter.data import load_training_data

    client, target = mlflow_parent(tmp_path)
    data = load_training_data(*inputs)
    split = split_by_chunk(data, BASE.val_fraction, BASE.seed)
    # A threshold no Hit@5 reaches: every trial is pruned at its first report.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(Objective(BASE, SPACE, data, split, target), n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    runs = client.search_runs([target.experiment_id], f"tags.mlflow.parentRunId = '{target.parent_run_id}'")
    assert [(r.info.status, r.data.tags[STATE_TAG]) for r in runs] == [("FINISHED", "pruned")] * 2
    assert all(r.data.metrics["best_val_hit_5"] >= 0 for r in runs)
    rows = trial_rows(study)
    assert [r["state"] for r in rows] == ["pruned", "pruned"] and all(r["value"] >= 0 for r in rows)


def test_a_trial_that_raises_is_failed_in_mlflow(inputs, tmp_path):
    from ragtune.adapter.data import load_training_data

    client, target = mlflow_parent(tmp_path)
    data = load_training_data(*inputs)
    split = split_by_chunk(data, BASE.val_fraction, BASE.seed)
    empty = type(split)(train=split.train[:0], val=split.val)  # no training questions: DataError
    study = optuna.create_study(direction="maximize")
    with pytest.raises(RagtuneError):
        study.optimize(Objective(BASE, SPACE, data, empty, target), n_trials=1)
    (run,) = client.search_runs([target.experiment_id], f"tags.mlflow.parentRunId = '{target.parent_run_id}'")
    assert run.info.status == "FAILED" and run.data.tags[STATE_TAG] == "failed"


def test_best_configuration_breaks_hit_rate_ties_by_mrr():
    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    for lr, mrr in [(1e-3, 0.30), (1e-2, 0.35), (3e-2, 0.32)]:
        study.add_trial(
            optuna.trial.create_trial(value=0.5, params={"lr": lr}, distributions=dist, user_attrs={"val_mrr@10": mrr})
        )
    assert best_configuration(study)["params"] == {"lr": 1e-2}
    with pytest.raises(RagtuneError, match="no tuning trial finished"):
        best_configuration(optuna.create_study(direction="maximize"))


def test_trials_csv_has_the_plot_columns(inputs, tmp_path):
    result = run_study(tune_params(n_trials=4), BASE, inputs, tmp_path)
    write_trials_csv(tmp_path / "trials.csv", result.trials)
    with open(tmp_path / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert all(r["value"] != "" for r in rows)
    best = [float(r["best_so_far"]) for r in rows if r["best_so_far"]]
    assert best == sorted(best) and np.isclose(best[-1], result.best["value"], atol=1e-5)


def test_the_study_fingerprint_ignores_how_the_train_stage_ships_but_not_what_a_trial_trains():
    from ragtune.adapter.config import TuneParams
    from ragtune.adapter.study import study_fingerprint

    tune, base = TuneParams(), TrainParams()
    same = study_fingerprint(tune, base, "data")
    # refit and its selection patience, bagging, interpolation: after the trials, never inside one
    for change in ({"refit": False}, {"refit_patience": 3}, {"bagging": 3}, {"interpolation": 0.5}):
        assert study_fingerprint(tune, base.model_copy(update=change), "data") == same, change
    for change in ({"lr": 1e-3}, {"patience": 2}, {"real_val_fraction": 0.5}):
        assert study_fingerprint(tune, base.model_copy(update=change), "data") != same, change
    assert study_fingerprint(tune, base, "other data") != same
