"""k-fold over the test questions: fold assignment, fold isolation (a fold's questions never reach its
adapter's training or selection, nor tuning), the out-of-fold arm, and the train stage writing the folds."""

from pathlib import Path

import numpy as np
import pytest

from ragtune.adapter.bagging import train_bagged
from ragtune.adapter.config import TrainParams
from ragtune.adapter.data import build_training_data, with_real_questions
from ragtune.adapter.folds import assign_folds, train_folds, with_all_test_questions
from ragtune.adapter.real_questions import RealQuestions
from ragtune.evaluation.arms import OutOfFoldArm, adapter_arm, load_adapter_transform
from ragtune.evaluation.inputs import QuerySet

REPO = Path(__file__).resolve().parents[2]


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def questions(ids, keys=None):
    return RealQuestions(list(ids), np.zeros((len(ids), 4), np.float32), [np.array([0])] * len(ids), keys)


def test_folds_are_seeded_balanced_and_cover_every_question():
    ids = [f"t{i}" for i in range(23)]
    fold_of = assign_folds(questions(ids), 5, seed=1)
    assert set(fold_of) == set(ids)
    sizes = np.bincount(list(fold_of.values()))
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= 1
    assert fold_of == assign_folds(questions(ids), 5, seed=1) and fold_of != assign_folds(questions(ids), 5, seed=2)
    # distinct texts: the same folds as with no texts at all
    assert fold_of == assign_folds(questions(ids, [f"text {i}" for i in range(23)]), 5, seed=1)
    with pytest.raises(ValueError, match="2 <= k"):
        assign_folds(questions(ids[:3]), 4, seed=1)


def test_copies_of_a_question_share_its_fold():
    # a query log asks its popular questions again under new ids: copies must never train the adapter tested
    # on another copy
    keys = [
        "notice period",
        "cap on liability",
        "notice period",
        "governing law",
        "notice period",
        "cap on liability",
        *[f"other {i}" for i in range(14)],
    ]
    ids = [f"t{i}" for i in range(len(keys))]
    for seed in range(6):
        fold_of = assign_folds(questions(ids, keys), 4, seed=seed)
        for key in set(keys):
            assert len({fold_of[i] for i, k in zip(ids, keys) if k == key}) == 1
    # without keys the copies are dealt apart (so the keys are what keeps them together)
    assert any(len({assign_folds(questions(ids), 4, seed=s)[i] for i in ("t0", "t2", "t4")}) > 1 for s in range(6))
    with pytest.raises(ValueError, match="2 <= k"):  # 3 distinct questions cannot fill 4 folds
        assign_folds(questions(["a", "b", "c", "d"], ["x", "y", "x", "z"]), 4, seed=0)


def world(n_chunks=60, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    corpus = _unit(rng.standard_normal((n_chunks, dim)))
    ids = [f"c{i}" for i in range(n_chunks)]
    gold = np.repeat(np.arange(n_chunks), 2)
    syn = build_training_data(
        ids,
        corpus,
        [f"text {i}" for i in range(n_chunks)],
        [f"s{j}" for j in range(len(gold))],
        _unit(corpus[gold] + 0.2 * rng.standard_normal((len(gold), dim))),
        [ids[g] for g in gold],
    )
    logs = RealQuestions(
        ["log0", "log1", "log2"], _unit(rng.standard_normal((3, dim))), [np.array([1]), np.array([2]), np.array([3])]
    )
    tests = RealQuestions(
        [f"t{i}" for i in range(12)], _unit(rng.standard_normal((12, dim))), [np.array([i + 10]) for i in range(12)]
    )
    return with_real_questions(syn, logs), tests


def test_a_folds_questions_never_reach_its_adapters_training_or_selection():
    data, tests = world()
    fold_of = assign_folds(tests, 3, seed=4)
    seen = []

    def spy(params, subset):
        seen.append(set(subset.real.ids))
        result = train_bagged(params, subset)
        # selection: every member's validation questions come from this subset's real questions
        for split in result.splits:
            assert set(subset.real.ids[i] for i in split.val_real) <= seen[-1]
        return result

    params = TrainParams(max_epochs=2, batch_size=32, kind="linear", hard_negatives=0, bagging=2)
    results = train_folds(params, data, tests, fold_of, train=spy)
    assert [r.fold for r in results] == [0, 1, 2]
    for r, real_ids in zip(results, seen):
        own = {q for q, f in fold_of.items() if f == r.fold}
        assert real_ids == set(r.trained_on)
        assert not own & real_ids  # nothing of its own fold
        assert {"log0", "log1", "log2"} <= real_ids  # the user's other real questions
        assert set(tests.ids) - own <= real_ids  # every other fold's
    shipped = with_all_test_questions(data, tests)
    assert set(shipped.real.ids) == {"log0", "log1", "log2", *tests.ids}


def test_tuning_reads_no_test_questions():
    """The tune stage's inputs are the synthetic and real training questions only: under k-fold no test
    question can reach any fold's hyperparameters."""
    from ragtune.paths import PipelinePaths
    from ragtune.project.pipeline import stage

    layout = PipelinePaths()
    inputs = [str(p) for p in layout.training_inputs()]
    assert "data/embed/test.npz" not in inputs
    assert inputs[4:] == ["data/fetch/train_questions.jsonl", "data/embed/real.npz"]
    tune_deps = [d.path(layout) for d in stage("tune").deps]
    assert "data/embed/test.npz" not in tune_deps and set(inputs) <= set(tune_deps)


def test_the_out_of_fold_arm_adapts_each_question_with_its_own_folds_adapter():
    rng = np.random.default_rng(0)
    corpus = _unit(rng.standard_normal((10, 4)))
    queries = QuerySet(
        "test", ["a", "b", "c", "v"], _unit(rng.standard_normal((4, 4))), [np.array([0])] * 4, ["human"] * 4
    )
    # fold f's "adapter" sends every query to chunk f; the shipped one to chunk 9
    to_chunk = lambda row: lambda q: np.repeat(corpus[row : row + 1], len(q), axis=0)  # noqa: E731
    arm = OutOfFoldArm("adapter", corpus, to_chunk(9), {"a": 0, "b": 1, "c": 0}, [to_chunk(0), to_chunk(1)])
    top = arm.retrieve(queries, 1)[:, 0]
    assert top.tolist() == [0, 1, 0, 9]  # "v" is in no fold (a validation question): the shipped adapter


@pytest.mark.slow
def test_train_stage_k_fold_writes_fold_adapters_that_eval_uses(tmp_path):
    import json

    import yaml
    from pipeline_support import run_stages

    from ragtune.embeddings_npz import save_embeddings
    from ragtune.io import read_json
    from ragtune.records import Chunk, TestQuestion, write_jsonl

    data, tests = world(n_chunks=60, dim=384, seed=3)
    syn = np.flatnonzero(data.row_real < 0)
    write_jsonl(
        tmp_path / "data/fetch/corpus.jsonl",
        [Chunk(id=c, text=f"Clause {i} on notice.") for i, c in enumerate(data.corpus_ids)],
    )
    write_jsonl(tmp_path / "data/fetch/train_questions.jsonl", [])
    # t1 asks t0's question again (another case and a question mark): the two must share a fold
    human = [
        TestQuestion(
            id=q, question="Question T0?" if q == "t1" else f"question {q}", relevant_ids=[data.corpus_ids[r[0]]]
        )
        for q, r in zip(tests.ids, tests.relevant)
    ]
    synthetic = TestQuestion(id="syn0", question="held out", relevant_ids=["c59"], origin="synthetic")
    write_jsonl(tmp_path / "data/synthesize/test.jsonl", [*human, synthetic])
    save_embeddings(tmp_path / "data/embed/corpus.npz", data.corpus_ids, data.corpus_emb.numpy())
    save_embeddings(
        tmp_path / "data/embed/questions.npz",
        [data.question_ids[i] for i in syn],
        data.question_emb[syn].numpy(),
        chunk_ids=[data.corpus_ids[g] for g in data.gold_rows[syn].tolist()],
    )
    save_embeddings(tmp_path / "data/embed/real.npz", [], np.zeros((0, 384), np.float32))
    save_embeddings(tmp_path / "data/embed/test.npz", [*tests.ids, "syn0"], np.concatenate([tests.emb, tests.emb[:1]]))
    (tmp_path / "data/embed/info.json").write_text(json.dumps({"model": "packaged:all-MiniLM-L6-v2"}))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = {k: params[k] for k in ("embedding", "train")}
    params["train"].update(use_tuned=False, max_epochs=2, bagging=1, kind="linear", folds=3)
    params["mlflow"] = {"enabled": False}
    run_stages(tmp_path, params, "train")

    folds = read_json(tmp_path / "models/adapter/folds/folds.json")
    assert folds["k"] == 3 and set(folds["fold_of"]) == set(tests.ids)  # the synthetic test question is in no fold
    assert folds["fold_of"]["t0"] == folds["fold_of"]["t1"]
    sizes = np.bincount(list(folds["fold_of"].values()), minlength=3)
    assert sorted(sizes.tolist()) == [4, 4, 4] or sorted(sizes.tolist()) == [3, 4, 5]  # 11 distinct, dealt 4/4/3
    assert folds["real_questions_per_fold"] == (len(tests.ids) - sizes).tolist()  # every other fold's questions
    metrics = read_json(tmp_path / "data/train/report.json")
    assert metrics["folds"]["k"] == 3
    # The shipped adapter trains on every test question and selects on synthetic questions, which are also
    # eval's validation set (the recommendation): no test question validates anything.
    split = read_json(tmp_path / "data/train/split.json")
    assert metrics["validation"] == split["validation"] == "synthetic"
    assert split["val"] and not set(split["val"]) & set(tests.ids) and set(tests.ids) <= set(split["train"])
    from ragtune.evaluation.inputs import load_validation_set

    val = load_validation_set(
        tmp_path / "data/train/split.json",
        tmp_path / "data/embed/questions.npz",
        data.corpus_ids,
        real_path=tmp_path / "data/fetch/train_questions.jsonl",
    )
    assert val.ids == split["val"] and set(val.origins) == {"synthetic"}

    arm = adapter_arm("adapter", data.corpus_emb.numpy(), tmp_path / "models/adapter")
    assert isinstance(arm, OutOfFoldArm)
    queries = QuerySet("test", tests.ids, tests.emb, tests.relevant, ["human"] * 12)
    adapted = arm.adapt(queries)
    for i, q in enumerate(tests.ids):
        own = load_adapter_transform(tmp_path / f"models/adapter/folds/fold-{folds['fold_of'][q]}")
        assert np.allclose(adapted[i], own(tests.emb[i : i + 1])[0], atol=1e-6)

    # 12 test questions but 11 distinct: 12 folds cannot each hold a question of their own
    params["train"]["folds"] = 12
    with pytest.raises(AssertionError, match="train.folds is 12 but .* has 11 distinct human test question"):
        run_stages(tmp_path, params, "train")

    # back to folds: 0 removes the fold adapters, so eval cannot pick up stale ones
    params["train"]["folds"] = 0
    run_stages(tmp_path, params, "train")
    assert not (tmp_path / "models/adapter/folds").exists()
    assert not isinstance(adapter_arm("adapter", data.corpus_emb.numpy(), tmp_path / "models/adapter"), OutOfFoldArm)
