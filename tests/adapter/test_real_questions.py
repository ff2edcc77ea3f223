"""Labelled real training questions: the leakage refusal, fetch and embed, their rows in training (masks,
weights, mined negatives), real validation, eval's real validation set, and the learning curve."""

import json

import numpy as np
import pytest
import torch

from ragtune.adapter.bagging import train_bagged
from ragtune.adapter.config import TrainParams
from ragtune.adapter.data import build_training_data, with_real_questions, with_real_subset
from ragtune.adapter.losses import FullCorpusSoftmaxLoss, InBatchRankingLoss
from ragtune.adapter.real_questions import RealQuestions
from ragtune.adapter.splits import make_split, split_real
from ragtune.adapter.training import train_adapter
from ragtune.corpus.fetching import fetch_source, report
from ragtune.errors import DataError, ParamsError
from ragtune.evaluation.learning_curve import CurveArm, CurveParams, learning_curve, nested_subsets
from ragtune.params import FetchParams, JsonlSourceParams, load_section
from ragtune.records import TestQuestion, load_train_questions
from ragtune.textnorm import normalise_text


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --- the leakage rule and fetch ------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path):
    return write(tmp_path / "corpus.jsonl", [{"id": f"c{i}", "text": f"chunk {i}"} for i in range(20)])


@pytest.fixture
def test_file(tmp_path):
    return write(
        tmp_path / "test.jsonl", [{"id": "t1", "question": "What is the notice period?", "relevant_ids": ["c3"]}]
    )


def test_normalised_questions_ignore_case_punctuation_and_spacing():
    assert normalise_text("What is the  Notice period?") == normalise_text("what is the notice period")
    assert normalise_text("notice period") != normalise_text("notice periods")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "t1", "question": "Something else", "relevant_ids": ["c1"]}, "id 't1' is also a question of"),
        (
            {"id": "r9", "question": "what is the NOTICE period", "relevant_ids": ["c1"]},
            "'r9' has the same text as test question 't1'",
        ),
    ],
)
def test_a_training_question_that_is_also_a_test_question_is_refused(tmp_path, corpus, test_file, row, message):
    train = write(tmp_path / "train.jsonl", [{"id": "r1", "question": "Who pays?", "relevant_ids": ["c2"]}, row])
    params = FetchParams(source="jsonl", jsonl=JsonlSourceParams(corpus=corpus, test=test_file, train_questions=train))
    with pytest.raises(DataError) as err:
        fetch_source(params)
    assert f"{train}:2: " in str(err.value) and message in str(err.value)


def test_training_questions_are_validated_like_test_questions(tmp_path, corpus, test_file):
    train = write(tmp_path / "train.jsonl", [{"id": "r1", "question": "Who pays?", "relevant_ids": ["c99"]}])
    with pytest.raises(DataError, match=r"train.jsonl:1: relevant id\(s\) \['c99'\] not in the corpus"):
        load_train_questions(train, [], corpus_ids=[f"c{i}" for i in range(20)])


def test_fetch_passes_real_questions_on_and_counts_them(tmp_path, corpus, test_file):
    train = write(tmp_path / "train.jsonl", [{"id": "r1", "question": "Who pays?", "relevant_ids": ["c2", "c3"]}])
    params = FetchParams(source="jsonl", jsonl=JsonlSourceParams(corpus=corpus, test=test_file, train_questions=train))
    result = fetch_source(params)
    assert [q.id for q in result.train_questions] == ["r1"] and result.train_questions[0].origin == "human"
    assert report(params, result)["train_questions"] == 1
    # chunks a training question is about stay training chunks unless a test question is about them too
    assert {c.id for c in result.chunks if c.split == "test"} == {"c3"}


def test_without_a_test_file_no_chunk_of_a_real_question_is_held_out(tmp_path, corpus):
    taught = [f"c{i}" for i in range(15)]
    train = write(
        tmp_path / "train.jsonl",
        [{"id": f"r{i}", "question": f"q {i}", "relevant_ids": [c]} for i, c in enumerate(taught)],
    )
    params = FetchParams(
        source="jsonl", seed=3, jsonl=JsonlSourceParams(corpus=corpus, test_fraction=0.25, train_questions=train)
    )
    held = {c.id for c in fetch_source(params).chunks if c.split == "test"}
    assert len(held) == 5 and not held & set(taught)


def test_bad_params_name_the_key(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  real_val_fraction: 1.5\n  folds: 1\ncurve:\n  sizes: [0, -5]\n")
    with pytest.raises(ParamsError) as err:
        load_section("train", TrainParams, tmp_path / "params.yaml")
    assert "train.real_val_fraction: Input should be less than 1" in str(err.value)
    assert "train.folds: Value error, 1 fold leaves nothing to train on" in str(err.value)
    with pytest.raises(ParamsError, match=r"curve.sizes: .*sizes must be >= 0"):
        load_section("curve", CurveParams, tmp_path / "params.yaml")


# --- training rows, masks and weights ------------------------------------------------------------


def small_data(n_chunks=6, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    corpus = _unit(rng.standard_normal((n_chunks, dim)))
    ids = [f"c{i}" for i in range(n_chunks)]
    questions = _unit(corpus[[0, 1, 2]] + 0.1 * rng.standard_normal((3, dim)))
    syn = build_training_data(
        ids, corpus, [f"text {i}" for i in range(n_chunks)], ["s0", "s1", "s2"], questions, ["c0", "c1", "c2"]
    )
    real = RealQuestions(["r0", "r1"], _unit(rng.standard_normal((2, dim))), [np.array([3, 4]), np.array([5])])
    return syn, real


def test_real_questions_become_one_row_per_relevant_chunk():
    syn, real = small_data()
    data = with_real_questions(syn, real)
    assert data.question_ids == ["s0", "s1", "s2", "r0", "r0", "r1"]
    assert data.gold_rows.tolist() == [0, 1, 2, 3, 4, 5]
    assert data.row_real.tolist() == [-1, -1, -1, 0, 0, 1]
    assert data.relevant.tolist() == [[0, -1], [1, -1], [2, -1], [3, 4], [3, 4], [5, -1]]
    assert torch.equal(data.question_emb[3], data.question_emb[4])
    assert data.stats["real_questions"] == 2 and data.stats["real_rows"] == 3
    assert with_real_subset(data, np.array([1])).question_ids == ["s0", "s1", "s2", "r1"]
    assert with_real_subset(data, np.array([], dtype=int)).row_real is None


def test_a_questions_other_relevant_chunks_are_not_its_in_batch_negatives():
    syn, real = small_data()
    data = with_real_questions(syn, real)
    rows = torch.tensor([3, 4, 0])  # r0 -> c3, r0 -> c4, s0 -> c0
    adapted = data.question_emb[rows]
    loss_fn = InBatchRankingLoss(0.1)
    got = loss_fn(adapted, data.gold_rows[rows], data.corpus_emb, data.text_group, None, data.relevant[rows])
    logits = adapted @ data.corpus_emb[data.gold_rows[rows]].T / 0.1
    logits[0, 1] = logits[1, 0] = float("-inf")  # c4 is relevant to row 0's question and c3 to row 1's
    want = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(got, want)
    plain = loss_fn(adapted, data.gold_rows[rows], data.corpus_emb, data.text_group)
    assert not torch.allclose(got, plain)  # without the relevance mask they would be negatives

    full = FullCorpusSoftmaxLoss(0.1)(
        adapted, data.gold_rows[rows], data.corpus_emb, data.text_group, None, data.relevant[rows]
    )
    all_logits = adapted @ data.corpus_emb.T / 0.1
    all_logits[0, 4] = all_logits[1, 3] = float("-inf")
    assert torch.allclose(full, torch.nn.functional.cross_entropy(all_logits, data.gold_rows[rows]))


def test_row_weights_make_a_weighted_mean_of_the_row_losses():
    syn, real = small_data()
    data = with_real_questions(syn, real)
    rows = torch.tensor([0, 1, 5])
    adapted = data.question_emb[rows]
    loss_fn = InBatchRankingLoss(0.1)
    logits = adapted @ data.corpus_emb[data.gold_rows[rows]].T / 0.1
    per_row = torch.nn.functional.cross_entropy(logits, torch.arange(3), reduction="none")
    weights = torch.tensor([1.0, 1.0, 4.0])
    got = loss_fn(adapted, data.gold_rows[rows], data.corpus_emb, data.text_group, None, None, weights)
    assert torch.allclose(got, (per_row * weights).sum() / 6.0)


def test_mined_negatives_never_include_a_chunk_relevant_to_the_question():
    from ragtune.adapter.hard_negatives import MiningRule

    rng = np.random.default_rng(1)
    corpus = _unit(rng.standard_normal((40, 16)))
    ids = [f"c{i}" for i in range(40)]
    base = build_training_data(ids, corpus, [f"t{i}" for i in range(40)], ["s0"], corpus[:1], ["c0"])
    # the real question sits between chunks 10..14, all relevant to it
    query = _unit(corpus[10:15].mean(axis=0, keepdims=True))
    data = with_real_questions(base, RealQuestions(["r0"], query, [np.arange(10, 15)]))
    negatives = data.hard_negatives(MiningRule(count=8, min_rank=1, max_rank=30, relative_margin=0.0))
    for row in np.flatnonzero(data.row_real == 0):
        assert not set(negatives[row].tolist()) & set(range(10, 15))
    assert (negatives[data.row_real == 0] >= 0).any()


# --- real validation -------------------------------------------------------------------------------


def distorted_world(n_chunks=120, dim=24, n_real=60, seed=2):
    """Synthetic questions are clean copies of their chunk (nothing to learn); real questions see their
    chunk through a fixed distortion, which only the real rows can teach."""
    rng = np.random.default_rng(seed)
    corpus = _unit(rng.standard_normal((n_chunks, dim)))
    ids = [f"c{i}" for i in range(n_chunks)]
    gold = np.repeat(np.arange(n_chunks), 2)
    syn_q = _unit(corpus[gold] + 0.3 * rng.standard_normal((len(gold), dim)) / np.sqrt(dim))
    syn = build_training_data(
        ids,
        corpus,
        [f"text {i}" for i in range(n_chunks)],
        [f"s{j}" for j in range(len(gold))],
        syn_q,
        [ids[g] for g in gold],
    )
    distort = np.eye(dim) + 1.2 * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    targets = rng.choice(n_chunks, size=n_real, replace=False)
    real_q = _unit((corpus[targets] + 1.0 * rng.standard_normal((n_real, dim)) / np.sqrt(dim)) @ distort.T)
    real = RealQuestions([f"r{i}" for i in range(n_real)], real_q, [np.array([t]) for t in targets])
    return with_real_questions(syn, real)


FAST = dict(
    max_epochs=15,
    patience=4,
    batch_size=64,
    lr=3e-3,
    temperature=0.05,
    identity_weight=0.0,
    hidden_dim=32,
    dropout=0.0,
    kind="linear",
    hard_negatives=0,
)


def test_real_split_holds_whole_questions_out_and_is_seeded():
    data = distorted_world()
    params = TrainParams(**FAST, real_val_fraction=0.25)
    split = make_split(data, params, 7)
    assert split.validation == "real" and len(split.val) == 0 and len(split.val_real) == 15
    assert not np.isin(data.row_real[split.train], split.val_real).any()
    assert (data.row_real[split.train] < 0).sum() == (data.row_real < 0).sum()  # every synthetic row trains
    assert np.array_equal(split.val_real, split_real(data, 0.25, 7).val_real)
    assert not np.array_equal(split.val_real, split_real(data, 0.25, 8).val_real)


def with_keys(data, keys):
    """`data` with its real questions given the normalised texts `keys` (copies of one question share a key)."""
    from dataclasses import replace

    return with_real_questions(with_real_subset(data, []), replace(data.real, keys=keys))


def test_copies_of_a_real_question_are_held_out_together():
    from ragtune.adapter.splits import real_fold_splits

    data = distorted_world(n_real=40)
    # a query log: question 0 asked four times, question 1 three times (under other ids), the rest once
    keys = [f"q{i}" for i in range(40)]
    for i in (5, 9, 17):
        keys[i] = "q0"
    for i in (11, 30):
        keys[i] = "q1"
    copies = with_keys(data, keys)
    groups = [np.flatnonzero(np.array(keys) == k) for k in ("q0", "q1")]
    for seed in range(8):
        splits = [split_real(copies, 0.25, seed), *real_fold_splits(copies, 3, seed)]
        for split in splits:
            trained = set(copies.row_real[split.train][copies.row_real[split.train] >= 0].tolist())
            for group in groups:  # all of a question's copies validate, or none does
                assert np.isin(group, split.val_real).all() or not np.isin(group, split.val_real).any()
                assert not (np.isin(group, split.val_real).any() and set(group.tolist()) & trained)
    # without keys the same seeds deal some copies apart (what the keys prevent)
    assert any(
        0 < np.isin(group, split_real(data, 0.25, seed).val_real).sum() < len(group)
        for seed in range(8)
        for group in groups
    )
    # 35 distinct questions: a quarter of them (9) validate, with their copies
    assert len(np.unique(np.array(keys)[split_real(copies, 0.25, 0).val_real])) == 9
    # distinct keys split exactly as no keys did
    distinct = with_keys(data, [f"q{i}" for i in range(40)])
    assert np.array_equal(split_real(distinct, 0.25, 7).val_real, split_real(data, 0.25, 7).val_real)
    assert all(
        np.array_equal(a.val_real, b.val_real)
        for a, b in zip(real_fold_splits(distinct, 3, 7), real_fold_splits(data, 3, 7))
    )
    with pytest.raises(DataError, match="40 real training questions \\(35 distinct\\); set it to at most 35"):
        real_fold_splits(copies, 36, 7)


def test_loaded_real_questions_know_their_copies_by_normalised_text(tmp_path):
    from ragtune.adapter.real_questions import load_real_questions
    from ragtune.embeddings_npz import save_embeddings
    from ragtune.records import write_jsonl

    rows = [
        TestQuestion(id="a", question="What is the notice period?", relevant_ids=["c1"]),
        TestQuestion(id="b", question="what is the  notice period", relevant_ids=["c2"]),
        TestQuestion(id="c", question="Who pays?", relevant_ids=["c1"]),
    ]
    write_jsonl(tmp_path / "q.jsonl", rows)
    save_embeddings(tmp_path / "q.npz", ["a", "b", "c"], np.eye(3, 4, dtype=np.float32))
    real = load_real_questions(tmp_path / "q.jsonl", tmp_path / "q.npz", ["c0", "c1", "c2"])
    assert real.groups().tolist() == [0, 0, 1]
    assert real.take([2, 1]).groups().tolist() == [0, 1]


def test_tuning_folds_hold_every_real_question_out_exactly_once():
    from ragtune.adapter.config import TuneParams
    from ragtune.adapter.splits import real_fold_splits
    from ragtune.adapter.tuning import tuning_splits

    data = distorted_world(n_real=61)
    splits = real_fold_splits(data, 3, 7)
    held = np.concatenate([s.val_real for s in splits])
    assert sorted(held.tolist()) == list(range(61)) and sorted(s.n_validation for s in splits) == [20, 20, 21]
    for s in splits:
        assert not np.isin(data.row_real[s.train], s.val_real).any()  # a fold never trains on itself
        others = np.flatnonzero(~np.isin(data.row_real, s.val_real))
        assert np.array_equal(s.train, others)  # every other row trains
    assert all(np.array_equal(a.val_real, b.val_real) for a, b in zip(splits, real_fold_splits(data, 3, 7)))
    assert not np.array_equal(splits[0].val_real, real_fold_splits(data, 3, 8)[0].val_real)
    params = TrainParams(**FAST)
    assert [s.n_validation for s in tuning_splits(data, params, TuneParams(real_folds=3))] == [21, 20, 20]
    (one,) = tuning_splits(data, params, TuneParams(real_folds=0))  # off: one real_val_fraction slice
    assert np.array_equal(one.val_real, make_split(data, params, params.seed).val_real)
    synthetic = with_real_subset(data, np.array([], dtype=int))
    (syn,) = tuning_splits(synthetic, params, TuneParams(real_folds=3))  # no real questions: synthetic split
    assert syn.validation == "synthetic"
    with pytest.raises(DataError, match="tune.real_folds is 80 but there are 61 real training questions"):
        real_fold_splits(data, 80, 7)


def test_a_cross_validated_trial_scores_every_real_question_once():
    import optuna

    from ragtune.adapter.config import SearchDim
    from ragtune.adapter.splits import real_fold_splits
    from ragtune.adapter.trials import Objective

    data = distorted_world(n_real=61)
    params = TrainParams(**FAST, real_weight=3.0)
    splits = real_fold_splits(data, 3, 7)
    space = {"lr": SearchDim(type="float", low=1e-3, high=1e-2, log=True)}
    trial = optuna.trial.FixedTrial({"lr": 3e-3})
    value = Objective(params, space, data, splits)(trial)
    runs = [train_adapter(params, data, s) for s in splits]
    hits = sum(r.best["hit@5"] * s.n_validation for r, s in zip(runs, splits))  # questions found, per fold
    assert value == pytest.approx(hits / 61)
    baseline = sum(r.baseline["hit@5"] * s.n_validation for r, s in zip(runs, splits)) / 61
    assert trial.user_attrs["baseline_val_hit@5"] == pytest.approx(baseline)
    assert trial.user_attrs["fold_best_epochs"] == [r.best_epoch for r in runs]
    single = optuna.trial.FixedTrial({"lr": 3e-3})
    assert Objective(params, space, data, splits[0])(single) == pytest.approx(runs[0].best["hit@5"])


def test_selection_on_real_validation_learns_what_only_real_questions_teach():
    from ragtune.adapter.splits import real_validation_metrics

    data = distorted_world(n_chunks=200, dim=8, n_real=150)
    params = TrainParams(**FAST, real_weight=3.0)
    split = make_split(data, params, 42)
    result = train_adapter(params, data, split)
    # the baseline and the selected state are measured on the held-out real questions
    assert result.baseline == real_validation_metrics(None, data, split.val_real)
    assert result.best == real_validation_metrics(result.adapter, data, split.val_real)
    assert result.best["mrr@10"] > result.baseline["mrr@10"] + 0.05
    synthetic = with_real_subset(data, np.array([], dtype=int))
    synthetic_only = train_adapter(params, synthetic, make_split(synthetic, params, 42))
    assert real_validation_metrics(synthetic_only.adapter, data, split.val_real)["mrr@10"] < result.best["mrr@10"]


def test_fewer_than_two_real_questions_cannot_validate():
    syn, real = small_data()
    one = with_real_questions(syn, RealQuestions(["r0"], real.emb[:1], real.relevant[:1]))
    with pytest.raises(DataError, match="at least 2 distinct ones are needed"):
        split_real(one, 0.3, 0)
    # two ids, one question asked twice: nothing distinct is left to validate on
    twice = with_real_questions(syn, RealQuestions(["r0", "r1"], real.emb[:2], real.relevant[:2], ["same", "same"]))
    with pytest.raises(DataError, match="2 real training question\\(s\\), 1 distinct"):
        split_real(twice, 0.3, 0)


# --- the learning curve -----------------------------------------------------------------------------


def test_learning_curve_subsets_are_nested_seeded_and_end_with_all():
    points = nested_subsets(60, [0, 1, 10, 25, 100], seed=3)
    assert [n for n, _ in points] == [0, 10, 25, 60]
    for (_, small), (_, big) in zip(points, points[1:]):
        assert set(small) <= set(big)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(points, nested_subsets(60, [0, 1, 10, 25, 100], 3)))
    assert not np.array_equal(points[1][1], nested_subsets(60, [10], 4)[0][1])
    assert [n for n, _ in nested_subsets(0, [0, 25], 3)] == [0]
    # copies (one distinct question asked under several ids): sizes count distinct questions, a point holds
    # every copy of each, and without copies the points are the ones above
    groups = np.array([*range(60), 0, 0, 7, 31])
    with_copies = nested_subsets(60, [0, 1, 10, 25, 100], 3, groups)
    assert [n for n, _ in with_copies] == [0, 10, 25, 60]
    for (n, keep), (_, plain) in zip(with_copies, points):
        assert len(np.unique(groups[keep])) == n
        assert set(keep.tolist()) == set(np.flatnonzero(np.isin(groups, plain)).tolist())
    assert np.array_equal(with_copies[-1][1], np.arange(64))
    assert all(
        np.array_equal(a, b)
        for (_, a), (_, b) in zip(points, nested_subsets(60, [0, 1, 10, 25, 100], 3, np.arange(60)))
    )


def test_learning_curve_trains_each_point_on_its_subset_only():
    from ragtune.evaluation.inputs import QuerySet
    from ragtune.evaluation.metrics import EvalParams

    data = distorted_world(n_real=40)
    seen: list[list[str]] = []

    def spy_train(params, subset):
        seen.append(
            sorted(
                {subset.question_ids[i] for i in np.flatnonzero(subset.row_real >= 0)}
                if subset.row_real is not None
                else []
            )
        )
        return train_bagged(params, subset)

    rng = np.random.default_rng(9)
    test = QuerySet(
        "test",
        [f"t{i}" for i in range(30)],
        _unit(rng.standard_normal((30, 24))),
        [np.array([i]) for i in range(30)],
        ["human"] * 30,
    )
    cosine = CurveArm(np.zeros(30), np.zeros(30))
    rows = learning_curve(
        TrainParams(**{**FAST, "max_epochs": 2}),
        data,
        test,
        data.corpus_emb.numpy(),
        {"cosine": cosine},
        EvalParams(bootstrap_resamples=200),
        CurveParams(sizes=[0, 10, 20]),
        train=spy_train,
    )
    assert [r["n_real"] for r in rows] == [0, 10, 20, 40]
    assert [len(s) for s in seen] == [0, 10, 20, 40]
    assert all(set(a) <= set(b) for a, b in zip(seen, seen[1:]))
    assert not any(q.startswith("t") for s in seen for q in s)  # test questions never train
    row = rows[-1]
    assert row["adapter_hit@5_low"] <= row["adapter_hit@5"] <= row["adapter_hit@5_high"]
    assert row["cosine_hit@5"] == 0.0 and 0.0 <= row["p_mrr@20_vs_cosine"] <= 1.0


def test_the_curve_evaluates_the_shipped_adapter_at_its_last_point_instead_of_training_it_again():
    from ragtune.evaluation.inputs import QuerySet
    from ragtune.evaluation.metrics import EvalParams

    data = distorted_world(n_real=40)
    params = TrainParams(**{**FAST, "max_epochs": 2})
    trained: list[int] = []

    def spy_train(p, subset):
        trained.append(int((subset.row_real >= 0).sum()) if subset.row_real is not None else 0)
        return train_bagged(p, subset)

    rng = np.random.default_rng(9)
    test = QuerySet(
        "test",
        [f"t{i}" for i in range(30)],
        _unit(rng.standard_normal((30, 24))),
        [np.array([i]) for i in range(30)],
        ["human"] * 30,
    )
    args = (
        data,
        test,
        data.corpus_emb.numpy(),
        {"cosine": CurveArm(np.zeros(30), np.zeros(30))},
        EvalParams(bootstrap_resamples=200),
        CurveParams(sizes=[0, 10]),
    )
    retrained = learning_curve(params, *args, train=spy_train)
    rows_trained = len(trained)
    reused = learning_curve(params, *args, train=spy_train, shipped=train_bagged(params, data).adapter)
    assert trained[rows_trained:] == [0, 10]  # points 0 and 10 only: the all point is not trained
    # the all point's data is the train stage's: the reused adapter scores exactly what retraining did
    assert reused == retrained
    other = learning_curve(params, *args, shipped=train_bagged(params.model_copy(update={"seed": 7}), data).adapter)
    assert other[:-1] == retrained[:-1] and other[-1] != retrained[-1]  # and it is the one evaluated


# --- the train and curve stages, and eval's validation set, end to end --------------------------------


@pytest.mark.slow
def test_train_and_curve_stages_with_real_questions(tmp_path):
    """ragtune.stages.train and ragtune.stages.curve in a scratch directory with labelled real questions: real
    validation is used and stated, eval reads the real validation set, and the curve's points are nested."""
    from pathlib import Path

    import yaml
    from pipeline_support import run_stages

    from ragtune.embeddings_npz import save_embeddings
    from ragtune.evaluation.inputs import load_validation_set
    from ragtune.io import read_json
    from ragtune.records import Chunk, write_jsonl

    repo = Path(__file__).resolve().parents[2]
    data = distorted_world(n_chunks=80, dim=384, n_real=40, seed=5)
    syn_rows = np.flatnonzero(data.row_real < 0)
    chunks = [
        Chunk(id=c, text=f"Clause {i}: the supplier shall give notice {i}.") for i, c in enumerate(data.corpus_ids)
    ]
    write_jsonl(tmp_path / "data/fetch/corpus.jsonl", chunks)
    real = data.real
    write_jsonl(
        tmp_path / "data/fetch/train_questions.jsonl",
        [
            TestQuestion(id=q, question=f"real question {q}", relevant_ids=[data.corpus_ids[r] for r in rel])
            for q, rel in zip(real.ids, real.relevant)
        ],
    )
    rng = np.random.default_rng(0)
    test_ids = [f"t{i}" for i in range(20)]
    write_jsonl(
        tmp_path / "data/synthesize/test.jsonl",
        [
            TestQuestion(id=t, question=f"test question {t}", relevant_ids=[data.corpus_ids[i]])
            for i, t in enumerate(test_ids)
        ],
    )
    save_embeddings(tmp_path / "data/embed/corpus.npz", data.corpus_ids, data.corpus_emb.numpy())
    save_embeddings(
        tmp_path / "data/embed/questions.npz",
        [data.question_ids[i] for i in syn_rows],
        data.question_emb[syn_rows].numpy(),
        chunk_ids=[data.corpus_ids[g] for g in data.gold_rows[syn_rows].tolist()],
    )
    save_embeddings(tmp_path / "data/embed/real.npz", real.ids, real.emb)
    test_emb = _unit(rng.standard_normal((20, 384)))
    save_embeddings(tmp_path / "data/embed/test.npz", test_ids, test_emb)
    (tmp_path / "data/embed/info.json").write_text(json.dumps({"model": "packaged:all-MiniLM-L6-v2"}))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params = {k: params[k] for k in ("embedding", "train", "eval", "curve")}
    params["train"].update(use_tuned=False, max_epochs=3, bagging=2, kind="linear")
    params["eval"]["bootstrap_resamples"] = 200
    params["curve"]["sizes"] = [0, 10, 20]
    params["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "e2e"}
    run_stages(tmp_path, params, "train", "curve")

    metrics = read_json(tmp_path / "data/train/report.json")
    split = read_json(tmp_path / "data/train/split.json")
    assert metrics["validation"] == split["validation"] == "real"
    # train.refit (the default): the members retrained on their validation questions, and split.json says so
    assert metrics["refit"] is True and split["refit"] is True
    # interpolation auto: selection saw real questions, so the adapter ships as trained (alpha 1)
    assert metrics["interpolation"] == read_json(tmp_path / "models/adapter/config.json")["interpolation"] == 1.0
    assert metrics["n_val_questions"] == len(split["val"]) == 12 and set(split["val"]) <= set(real.ids)
    assert not set(split["val"]) & set(split["train"])
    val = load_validation_set(
        tmp_path / "data/train/split.json",
        tmp_path / "data/embed/questions.npz",
        data.corpus_ids,
        real_path=tmp_path / "data/fetch/train_questions.jsonl",
    )
    assert val.ids == split["val"] and val.origins == ["human"] * 12
    assert val.texts[0] == f"real question {split['val'][0]}"
    i = real.ids.index(split["val"][0])
    assert np.allclose(val.query_emb[0], real.emb[i]) and val.relevant[0].tolist() == real.relevant[i].tolist()
    # the held-out vectors eval selects on: each bagged member's own validation slice, from before its refit
    from ragtune.adapter.held_out import load_held_out

    held = load_held_out(tmp_path / "data/train/held_out.npz")
    assert sorted(set(held.members)) == split["seeds"] and set(split["val"]) <= set(held.question_ids())
    assert [q for q, m in zip(held.ids, held.members) if m == split["seeds"][0]] == split["val"]
    assert held.emb.shape == (2 * 12, 384) and set(held.ids) <= set(real.ids)

    curve = read_json(tmp_path / "data/curve/metrics.json")
    assert [p["n_real"] for p in curve["points"]] == [0, 10, 20, 40] and curve["real_questions"] == 40
    # the all point is the train stage's adapter, evaluated, not trained again
    from ragtune.adapter.model import adapt_queries, load_query_adapter

    assert curve["last_point_is_shipped_adapter"] is True
    shipped = adapt_queries(load_query_adapter(tmp_path / "models/adapter"), test_emb)
    top5 = np.argsort(-(shipped @ data.corpus_emb.numpy().T), axis=1)[:, :5]
    assert curve["points"][-1]["adapter_hit@5"] == round(float((top5 == np.arange(20)[:, None]).any(1).mean()), 4)
    header = (tmp_path / "data/curve/learning_curve.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["n_real", "adapter_hit@5"] and "bm25_mrr@20" in header
    assert (tmp_path / "data/curve/learning_curve.png").stat().st_size > 1000


def test_auto_real_weight_balances_real_and_synthetic_rows():
    from ragtune.adapter.training import real_row_weight

    rows = np.array([-1] * 90 + [0, 0, 1, 2, 3, 3, 4, 5, 6, 7])  # 90 synthetic rows, 10 real
    assert real_row_weight("auto", rows) == 9.0
    assert real_row_weight(2.5, rows) == 2.5
    assert real_row_weight("auto", np.array([0, 1])) == 1.0 and real_row_weight("auto", np.array([-1, -1])) == 1.0
    # in the loss: the real rows' total weight equals the synthetic rows'
    weights = np.where(rows >= 0, real_row_weight("auto", rows), 1.0)
    assert weights[rows >= 0].sum() == weights[rows < 0].sum()


def test_synthetic_validation_can_keep_every_real_row_in_training():
    data = distorted_world()
    params = TrainParams(**FAST)
    split = make_split(data, params, 7, validation="synthetic")
    assert split.validation == "synthetic" and len(split.val)
    assert (data.row_real[split.val] < 0).all()  # only synthetic rows validate
    assert set(np.flatnonzero(data.row_real >= 0)) <= set(split.train)  # every real row trains
    assert sorted(np.concatenate([split.train, split.val]).tolist()) == list(range(len(data.question_ids)))


# --- refit on every real question after selection -----------------------------------------------------


def test_refit_retrains_on_the_validation_questions_for_the_selected_epochs():
    from ragtune.adapter.splits import Split, real_validation_metrics
    from ragtune.adapter.training import refit_adapter

    data = distorted_world(n_chunks=200, dim=8, n_real=150)
    params = TrainParams(**FAST, real_weight=3.0)
    split = make_split(data, params, 42)
    selected = train_adapter(params, data, split)
    assert selected.best_epoch > 0 and not selected.refit
    refit = refit_adapter(params, data, selected)
    # the same run from the same start on every row, for exactly the selected epochs, the last state kept
    every = Split(train=np.arange(len(data.question_ids)), val=np.zeros(0, dtype=np.int64))
    direct = train_adapter(params, data, every, epochs=selected.best_epoch)
    assert len(direct.history) == selected.best_epoch + 1 and direct.best_epoch == selected.best_epoch
    q = torch.as_tensor(data.real.emb)
    assert torch.equal(refit.adapter(q), direct.adapter(q))
    assert not torch.allclose(refit.adapter(q), selected.adapter(q))
    # the validation questions trained: the refit adapter fits them better than the one they selected
    assert (
        real_validation_metrics(refit.adapter, data, split.val_real)["mrr@10"]
        > real_validation_metrics(selected.adapter, data, split.val_real)["mrr@10"]
    )
    # what selection measured is kept, and the result says it was refit
    assert refit.refit and refit.best == selected.best and refit.history == selected.history


def test_refit_keeps_raw_cosine_when_selection_did():
    import dataclasses

    from ragtune.adapter.model import build_adapter
    from ragtune.adapter.training import refit_adapter

    data = distorted_world()
    params = TrainParams(**FAST)
    selected = train_adapter(params, data, make_split(data, params, 1))
    # selection kept epoch 0, the untrained start (raw cosine): nothing is retrained
    kept_start = dataclasses.replace(
        selected, adapter=build_adapter(params.adapter_config(data.dim), params.seed), best_epoch=0
    )
    refit = refit_adapter(params, data, kept_start)
    assert refit.refit and refit.adapter is kept_start.adapter


def test_bagged_members_are_refit_only_after_real_validation():
    data = distorted_world()
    on = train_bagged(TrainParams(**FAST, bagging=2, refit=True), data)
    off = train_bagged(TrainParams(**FAST, bagging=2, refit=False), data)
    assert all(m.refit for m in on.members) and not any(m.refit for m in off.members)
    assert on.summary()["refit"] and not off.summary()["refit"]
    q = torch.as_tensor(data.real.emb)
    assert not torch.allclose(on.adapter(q), off.adapter(q))
    # synthetic validation (k-fold's shipped adapter) has no held-out real questions to take back
    synthetic = train_bagged(TrainParams(**FAST, bagging=2, refit=True), data, validation="synthetic")
    assert not any(m.refit for m in synthetic.members)


def test_a_member_to_be_refit_selects_its_epochs_on_the_whole_curve_unless_refit_patience_says():
    data = distorted_world()
    whole = train_bagged(TrainParams(**{**FAST, "patience": 1}, bagging=2), data)
    # refit_patience null (the default): every epoch up to max_epochs is validated, the best one trains the refit
    for member in whole.members:
        curve = [(row["val_hit@5"], row["val_mrr@10"]) for row in member.history]
        assert len(curve) == FAST["max_epochs"] + 1
        assert member.best_epoch == max(range(len(curve)), key=lambda e: (curve[e], -e))
    assert any(m.best_epoch > 1 for m in whole.members)
    stopped = train_bagged(TrainParams(**{**FAST, "patience": 1}, bagging=2, refit_patience=1), data)
    assert all(len(m.history) - 1 == m.best_epoch + 1 < FAST["max_epochs"] for m in stopped.members)

    # the same runs, cut where patience 1 stopped them
    def curves(members, lengths):
        return [[row["val_mrr@10"] for row in m.history[:n]] for m, n in zip(members, lengths)]

    lengths = [len(m.history) for m in stopped.members]
    assert curves(stopped.members, lengths) == curves(whole.members, lengths)
    # without refit (or with synthetic validation) train.patience stops selection as it always did
    unfit = train_bagged(TrainParams(**{**FAST, "patience": 1}, bagging=2, refit=False), data)
    assert [len(m.history) for m in unfit.members] == [len(m.history) for m in stopped.members]
