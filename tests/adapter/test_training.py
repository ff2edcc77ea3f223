"""Training: data alignment, the chunk-level split, the loop, model selection and determinism; and the
tune and train stages end to end."""

import json

import numpy as np
import pytest
import torch

from ragtune.adapter.config import TrainParams, apply_overrides
from ragtune.adapter.data import build_training_data, load_training_data
from ragtune.adapter.model import QueryAdapter
from ragtune.adapter.splits import split_by_chunk, validation_metrics
from ragtune.adapter.training import EarlyStopping, train_adapter
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import DataError, ParamsError, RagtuneError
from ragtune.params import load_section
from ragtune.records import Chunk, TestQuestion, write_jsonl
from ragtune.search.dense import exact_top_k


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def learnable_data(n_chunks=240, dim=32, per_chunk=4, seed=0, noise=2.0, distortion=1.5, test_chunks=()):
    """Questions are noisy copies of their chunk seen through a fixed linear distortion: raw cosine
    is mediocre and an adapter can learn to undo the distortion. Chunks 0 and 1 share their text."""
    rng = np.random.default_rng(seed)
    corpus = _unit(rng.standard_normal((n_chunks, dim)))
    distort = np.eye(dim) + distortion * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    gold = np.repeat(np.arange(n_chunks), per_chunk)
    questions = _unit((corpus[gold] + noise * rng.standard_normal((len(gold), dim)) / np.sqrt(dim)) @ distort.T)
    ids = [f"c{i}" for i in range(n_chunks)]
    texts = ["shared text" if i < 2 else f"text {i}" for i in range(n_chunks)]
    q_ids = [f"q{j}" for j in range(len(gold))]
    return build_training_data(ids, corpus, texts, q_ids, questions, [ids[g] for g in gold], list(test_chunks))


FAST = dict(
    max_epochs=12, patience=3, batch_size=64, lr=3e-3, temperature=0.05, identity_weight=0.0, hidden_dim=32, dropout=0.0
)


@pytest.fixture(scope="module")
def data():
    return learnable_data()


@pytest.fixture(scope="module")
def split(data):
    return split_by_chunk(data, 0.2, seed=7)


def test_split_keeps_every_chunk_on_one_side_and_is_seeded(data, split):
    groups = data.text_group[data.gold_rows].numpy()
    assert not set(groups[split.train]) & set(groups[split.val])
    assert sorted(np.concatenate([split.train, split.val]).tolist()) == list(range(len(data.question_ids)))
    # chunks 0 and 1 have the same text: their questions land on the same side
    both = np.flatnonzero(np.isin(data.gold_rows.numpy(), [0, 1]))
    assert len(set(np.isin(both, split.val))) == 1
    again = split_by_chunk(data, 0.2, seed=7)
    other = split_by_chunk(data, 0.2, seed=8)
    assert np.array_equal(again.val, split.val) and not np.array_equal(other.val, split.val)
    assert 0.15 < len(split.val) / len(data.question_ids) < 0.25


def test_validation_metrics_match_a_per_question_loop(data, split):
    got = validation_metrics(None, data, split.val)
    groups = data.text_group.numpy()
    ranks = []
    for row in split.val:  # the slow way: one question at a time
        q = data.question_emb[row : row + 1]
        _, top = exact_top_k(q, data.corpus_emb, 10)
        gold_group = groups[int(data.gold_rows[row])]
        hit = [groups[j] == gold_group for j in top[0]]
        ranks.append(hit.index(True) + 1 if any(hit) else 0)
    ranks = np.array(ranks)
    assert got["hit@5"] == pytest.approx(np.mean((ranks > 0) & (ranks <= 5)))
    assert got["hit@1"] == pytest.approx(np.mean(ranks == 1))
    assert got["mrr@10"] == pytest.approx(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)))


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("loss", ["in_batch", "full_corpus"])
def test_training_beats_raw_cosine_on_learnable_data(data, split, kind, loss):
    result = train_adapter(TrainParams(kind=kind, loss=loss, **FAST), data, split)
    assert result.baseline["hit@5"] < 0.8
    assert result.best["hit@5"] > result.baseline["hit@5"] + 0.05
    assert result.best_epoch >= 1 and not result.adapter.training
    assert result.history[0]["epoch"] == 0 and result.history[0]["val_hit@5"] == result.baseline["hit@5"]
    assert validation_metrics(result.adapter, data, split.val) == result.best  # the selected state is returned


def test_same_seed_same_data_gives_bit_identical_metrics_and_weights(data, split):
    params = TrainParams(kind="mlp", n_hidden_layers=2, **{**FAST, "dropout": 0.2, "max_epochs": 4})
    a = train_adapter(params, data, split)
    b = train_adapter(params, data, split)

    def metrics(history):  # everything but wall time; JSON so that NaN (epoch 0's loss) compares equal
        return json.dumps([{k: v for k, v in row.items() if k != "seconds"} for row in history])

    assert metrics(a.history) == metrics(b.history)
    for (name, x), (_, y) in zip(a.adapter.state_dict().items(), b.adapter.state_dict().items()):
        assert torch.equal(x, y), name
    c = train_adapter(params.model_copy(update={"seed": 43}), data, split)
    assert [r["train_loss"] for r in c.history[1:]] != [r["train_loss"] for r in a.history[1:]]


def test_model_selection_keeps_the_identity_when_training_only_hurts():
    # Questions equal their chunk: raw cosine is perfect, so nothing trained can beat epoch 0.
    rng = np.random.default_rng(1)
    corpus = _unit(rng.standard_normal((60, 16)))
    ids = [f"c{i}" for i in range(60)]
    data = build_training_data(
        ids,
        corpus,
        [f"t{i}" for i in range(60)],
        [f"q{i}" for i in range(120)],
        np.concatenate([corpus, corpus]),
        ids + ids,
    )
    split = split_by_chunk(data, 0.25, seed=0)
    result = train_adapter(
        TrainParams(
            lr=0.05, max_epochs=3, patience=2, batch_size=16, temperature=1.0, hidden_dim=8, identity_weight=0.0
        ),
        data,
        split,
    )
    assert result.baseline["hit@1"] == 1.0
    assert result.best_epoch == 0 and result.best == result.baseline
    q = data.question_emb[:10]
    torch.testing.assert_close(result.adapter(q), q, rtol=0, atol=1e-6)  # the untrained identity


def test_early_stopping_and_the_epoch_callback(data, split):
    seen = []
    params = TrainParams(**{**FAST, "max_epochs": 50, "patience": 2, "lr": 0.3})  # lr far too high: stalls
    result = train_adapter(params, data, split, on_epoch=lambda epoch, row: seen.append((epoch, row["val_hit@5"])))
    epochs_run = len(result.history) - 1
    assert epochs_run < 50 and epochs_run - result.best_epoch == 2
    assert [e for e, _ in seen] == list(range(1, epochs_run + 1))


def test_early_stopping_keeps_the_first_strictly_best_epoch_and_counts_the_rest():
    stopping = EarlyStopping({"hit@5": 0.5, "mrr@10": 0.3}, patience=2)
    assert stopping.update(1, {"hit@5": 0.5, "mrr@10": 0.4})  # MRR@10 breaks the Hit@5 tie
    assert not stopping.update(2, {"hit@5": 0.5, "mrr@10": 0.4})  # a tie is not better: the earlier epoch stays
    assert not stopping.exhausted
    assert not stopping.update(3, {"hit@5": 0.4, "mrr@10": 0.9})  # Hit@5 decides before MRR@10
    assert stopping.exhausted and stopping.best_epoch == 1 and stopping.best == {"hit@5": 0.5, "mrr@10": 0.4}


def test_replaying_a_whole_curve_selects_what_a_run_with_that_patience_selected(data, split):
    # the probe scripts read a patience's choice off one whole-curve run; it must be that run's own choice
    whole = train_adapter(TrainParams(**{**FAST, "patience": FAST["max_epochs"]}), data, split)
    assert len(whole.history) == FAST["max_epochs"] + 1
    assert EarlyStopping.replay(whole.history, FAST["max_epochs"]) == whole.best_epoch
    chosen = []
    for patience in (1, 2):
        cut = train_adapter(TrainParams(**{**FAST, "patience": patience}), data, split)
        assert EarlyStopping.replay(whole.history, patience) == cut.best_epoch
        chosen.append(cut.best_epoch)
    assert any(best != whole.best_epoch for best in chosen)  # some patience stopped before the best epoch


def test_an_exception_from_the_callback_stops_training(data, split):
    class Stop(Exception):
        pass

    def prune(epoch, row):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train_adapter(TrainParams(**FAST), data, split, on_epoch=prune)


def test_identity_penalty_keeps_the_adapter_closer_to_raw_cosine(data, split):
    free = train_adapter(TrainParams(**{**FAST, "max_epochs": 4, "patience": 10}), data, split)
    held = train_adapter(TrainParams(**{**FAST, "max_epochs": 4, "patience": 10, "identity_weight": 20.0}), data, split)
    q = data.question_emb[split.val]
    with torch.no_grad():
        drift_free = float((1 - (free.adapter(q) * q).sum(-1)).mean())
        drift_held = float((1 - (held.adapter(q) * q).sum(-1)).mean())
    assert drift_held < drift_free


def test_questions_about_test_chunks_are_dropped_and_counted():
    data = learnable_data(n_chunks=20, per_chunk=2, test_chunks=["c3", "c4"])
    assert data.dropped == {"test_chunk_questions": 4}
    assert len(data.question_ids) == 36
    assert not set(data.gold_rows.tolist()) & {3, 4}


def test_bad_inputs_name_the_problem():
    corpus = _unit(np.ones((3, 4)) + np.eye(3, 4))
    with pytest.raises(DataError, match="not in the corpus"):
        build_training_data(["a", "b", "c"], corpus, ["x", "y", "z"], ["q"], corpus[:1], ["nope"])
    with pytest.raises(DataError, match="same model"):
        build_training_data(["a", "b", "c"], corpus, ["x", "y", "z"], ["q"], np.ones((1, 5), np.float32), ["a"])
    with pytest.raises(DataError, match="no training questions"):
        build_training_data(["a", "b", "c"], corpus, ["x", "y", "z"], ["q"], corpus[:1], ["a"], ["a"])


def test_load_training_data_reads_the_embed_and_fetch_outputs(tmp_path):
    chunks = [Chunk(id=f"c{i}", text=f"text {i % 4}", split="test" if i == 5 else "train") for i in range(6)]
    write_jsonl(tmp_path / "corpus.jsonl", chunks)
    rng = np.random.default_rng(0)
    save_embeddings(tmp_path / "corpus.npz", [c.id for c in chunks], _unit(rng.standard_normal((6, 8))))
    save_embeddings(
        tmp_path / "questions.npz", ["q0", "q1", "q2"], _unit(rng.standard_normal((3, 8))), chunk_ids=["c0", "c4", "c5"]
    )
    data = load_training_data(tmp_path / "questions.npz", tmp_path / "corpus.npz", tmp_path / "corpus.jsonl")
    assert data.question_ids == ["q0", "q1"] and data.dropped["test_chunk_questions"] == 1
    assert data.text_group.tolist() == [0, 1, 2, 3, 0, 1]  # c4 repeats c0's text
    save_embeddings(tmp_path / "bare.npz", ["q0"], _unit(rng.standard_normal((1, 8))))
    with pytest.raises(DataError, match="chunk_ids"):
        load_training_data(tmp_path / "bare.npz", tmp_path / "corpus.npz", tmp_path / "corpus.jsonl")


def test_train_params_errors_name_the_dotted_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: -1\n  kind: conv\n  hidden_dimm: 3\n")
    with pytest.raises(ParamsError) as err:
        load_section("train", TrainParams, path)
    msg = str(err.value)
    assert "train.lr:" in msg and "train.kind:" in msg and "train.hidden_dimm: unknown key" in msg


def test_apply_overrides_validates_tuned_values():
    base = TrainParams()
    assert apply_overrides(base, {"lr": 0.01, "kind": "linear"}).kind == "linear"
    with pytest.raises(RagtuneError, match="unknown train key"):
        apply_overrides(base, {"learning_rate": 0.01}, source="best.json")
    with pytest.raises(ParamsError, match="train.dropout"):
        apply_overrides(base, {"dropout": 2.0}, source="best.json")


def test_summary_is_json_serialisable(data, split):
    result = train_adapter(TrainParams(**{**FAST, "max_epochs": 2}), data, split)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["val_hit@5"] >= summary["baseline_val_hit@5"] and summary["epochs_run"] <= 2
    assert isinstance(result.adapter, QueryAdapter)


@pytest.mark.slow
def test_tune_and_train_stages_end_to_end(tmp_path):
    """ragtune.stages.tune then ragtune.stages.train in a scratch directory: every declared output, the MLflow
    runs, the export's self-check, and the tuned trial reproduced exactly by the train stage."""
    from pathlib import Path

    import yaml
    from pipeline_support import run_stages

    from ragtune.io import read_json

    repo = Path(__file__).resolve().parents[2]
    data = learnable_data(n_chunks=80, dim=384, per_chunk=3, seed=4)
    (tmp_path / "data/embed").mkdir(parents=True)
    chunks = [
        Chunk(
            id=c,
            text=f"Article {i}. Member States shall report incident {i} to the authority.",
            split="test" if i == 79 else "train",
        )
        for i, c in enumerate(data.corpus_ids)
    ]
    write_jsonl(tmp_path / "data/fetch/corpus.jsonl", chunks)
    # Chunk 79 is held out for a synthetic test question: its training questions must be dropped.
    write_jsonl(
        tmp_path / "data/synthesize/test.jsonl",
        [TestQuestion(id="t0", question="incident 79?", relevant_ids=[data.corpus_ids[79]], origin="synthetic")],
    )
    save_embeddings(tmp_path / "data/embed/corpus.npz", data.corpus_ids, data.corpus_emb.numpy())
    save_embeddings(
        tmp_path / "data/embed/questions.npz",
        data.question_ids,
        data.question_emb.numpy(),
        chunk_ids=[data.corpus_ids[g] for g in data.gold_rows.tolist()],
    )
    (tmp_path / "data/embed/info.json").write_text(json.dumps({"model": "packaged:all-MiniLM-L6-v2"}))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params = {k: params[k] for k in ("embedding", "tune", "train")}
    params["tune"].update(n_trials=4, timeout_s=None)
    params["train"].update(max_epochs=3, compare_linear=True, bagging=2)
    params["tune"]["search_space"] = {
        "kind": {"type": "categorical", "choices": ["mlp"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    }
    params["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "e2e"}
    run_stages(tmp_path, params, "tune", "train")

    best = read_json(tmp_path / "data/tune/best.json")
    assert best["trials"]["complete"] + best["trials"]["pruned"] == 4 and set(best["params"]) == {"kind", "lr"}
    assert best["stopped_by"] == "n_trials"
    assert (tmp_path / "data/tune/storage/optuna.journal").is_file()
    assert (tmp_path / "data/tune/trials.csv").read_text().startswith("trial,state,value,best_so_far")
    metrics = read_json(tmp_path / "data/train/report.json")
    assert metrics["val_hit@5"] == best["value"]  # same seed, same data: the tuned trial, bit for bit
    assert metrics["export_max_abs_diff"] <= 1e-5 and "seconds" not in metrics
    # metrics.json: the headline numbers only; the run's seconds and MLflow run id are in run.json
    assert read_json(tmp_path / "data/train/metrics.json") == {
        k: metrics[k] for k in ("val_hit@5", "val_mrr@10", "baseline_val_hit@5", "baseline_val_mrr@10")
    }
    train_run = read_json(tmp_path / "data/train/run.json")
    assert train_run["mlflow_run_id"] and train_run["seconds"] > 0
    assert read_json(tmp_path / "data/tune/run.json")["study"].startswith("ragtune-") and "study" not in best
    assert metrics["linear"]["kind"] == "linear" and metrics["dropped_test_chunk_questions"] == 3
    split = read_json(tmp_path / "data/train/split.json")
    assert len(split["train"]) + len(split["val"]) == 237 and not set(split["train"]) & set(split["val"])
    assert split["seeds"] == [42, 43] and [m["seed"] for m in metrics["members"]] == [42, 43]
    for model in ("models/adapter", "models/linear_adapter"):
        assert (tmp_path / model / "config.json").is_file()
        assert (tmp_path / model / "sentence_transformer" / "router_config.json").is_file()
        assert sorted(p.name for p in (tmp_path / model / "members").iterdir()) == ["seed-42", "seed-43"]
    # The tuned MLP has hidden layers: its bagged adapter is a two-member ensemble, exported as one module.
    assert read_json(tmp_path / "models/adapter/config.json")["members"] == 2
    assert read_json(tmp_path / "models/linear_adapter/config.json")["members"] == 1  # averaged into one map
    history = (tmp_path / "data/train/history.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,val_hit@1,val_hit@5,val_hit@10,val_mrr@10"  # no wall time: committed

    from mlflow import MlflowClient

    client = MlflowClient(params["mlflow"]["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    stages = sorted(r.data.tags.get("ragtune.stage") for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert stages == ["train", "tune"]
    train_run = client.get_run(next(r.info.run_id for r in runs if r.data.tags.get("ragtune.stage") == "train"))
    # Its dataset inputs: this fixture writes the questions only as embeddings, so no questions.jsonl is logged.
    assert {d.dataset.name for d in train_run.inputs.dataset_inputs} == {"fetch/corpus", "synthesize/test"}
    assert sum("mlflow.parentRunId" in r.data.tags for r in runs) == 4


def test_round_trip_filter_drops_llm_questions_whose_chunk_raw_cosine_misses():
    # Four chunks on the axes; q0 points at its chunk c0, q1 points at c3 but claims c1 (an LLM question
    # off its passage), q2 is the same off-target question from the no-model backend (exempt).
    corpus = np.eye(4, dtype=np.float32)
    questions = np.array([[1, 0, 0, 0], [0, 0, 0.2, 1], [0, 0, 0.2, 1]], dtype=np.float32)
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    args = (["c0", "c1", "c2", "c3"], corpus, ["a", "b", "c", "d"], ["q0", "q1", "q2"], questions, ["c0", "c1", "c1"])
    kept = build_training_data(*args, question_backends=["anthropic", "anthropic", "ict"], round_trip_top_k=2)
    assert kept.question_ids == ["q0", "q2"] and kept.dropped["round_trip"] == 1
    deeper = build_training_data(*args, question_backends=["anthropic", "anthropic", "ict"], round_trip_top_k=4)
    assert deeper.question_ids == ["q0", "q1", "q2"] and deeper.dropped["round_trip"] == 0
    off = build_training_data(*args, question_backends=["anthropic", "anthropic", "ict"], round_trip_top_k=None)
    assert off.question_ids == ["q0", "q1", "q2"] and "round_trip" not in off.dropped
    # q0 is its chunk's exact vector: a near-copy, counted.
    assert kept.stats["near_copy_questions"] == 1
