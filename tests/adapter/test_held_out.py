"""Selection never reads a question its model trained on: the held-out adapter vectors of the real validation
questions (train side), and eval scoring the adapter and the hybrid on them from those vectors only."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ragtune.adapter.bagging import train_bagged
from ragtune.adapter.config import TrainParams
from ragtune.adapter.held_out import HeldOut, held_out_vectors, load_held_out, save_held_out
from ragtune.adapter.model import adapt_queries
from ragtune.adapter.splits import real_validation_metrics
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import RagtuneError
from ragtune.evaluation.arms import identity
from ragtune.evaluation.run import run_eval
from ragtune.io import write_json
from ragtune.records import TestQuestion, write_jsonl

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_evaluation import FAST as EVAL_FAST  # noqa: E402
from test_evaluation import make_pipeline  # noqa: E402
from test_real_questions import FAST, distorted_world  # noqa: E402


@pytest.fixture(scope="module")
def bagged_world():
    data = distorted_world(n_chunks=200, dim=8, n_real=150)
    return data, train_bagged(TrainParams(**FAST, bagging=3, real_weight=3.0), data)


def test_each_held_out_vector_is_from_a_member_that_never_trained_on_its_question(bagged_world):
    data, bagged = bagged_world
    held = held_out_vectors(bagged, data)
    assert all(m.refit for m in bagged.members)  # train.refit: every member then trained on every real question
    for seed, member, split in zip(bagged.seeds, bagged.members, bagged.splits):
        rows = [i for i, s in enumerate(held.members) if s == seed]
        ids = [held.ids[i] for i in rows]
        assert ids == [data.real.ids[q] for q in split.val_real]
        trained = {data.real.ids[q] for q in data.row_real[split.train] if q >= 0}
        assert not set(ids) & trained  # what the member selected on, it never trained on
        emb = data.real.emb[split.val_real]
        np.testing.assert_allclose(held.emb[rows], adapt_queries(member.selected_adapter, emb), atol=1e-6)
        # the shipped (refit) member gives other vectors, and fits these questions better: it trained on them
        assert not np.allclose(held.emb[rows], adapt_queries(member.adapter, emb), atol=1e-4)
        assert (
            real_validation_metrics(member.adapter, data, split.val_real)["mrr@10"]
            > real_validation_metrics(member.selected_adapter, data, split.val_real)["mrr@10"]
        )
    covered = set().union(*({data.real.ids[q] for q in s.val_real} for s in bagged.splits))
    assert set(held.question_ids()) == covered


def test_a_question_held_out_by_several_members_gets_their_normalised_mean(tmp_path):
    a, b = np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32)
    held = HeldOut(["q1", "q2", "q1"], [42, 42, 43], np.stack([a, b, b]))
    merged = held.merged()
    np.testing.assert_allclose(merged["q1"], (a + b) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(merged["q2"], b)
    save_held_out(tmp_path / "held_out.npz", held)
    back = load_held_out(tmp_path / "held_out.npz")
    assert back.ids == held.ids and back.members == held.members and np.array_equal(back.emb, held.emb)
    assert load_held_out(tmp_path / "missing.npz") is None
    with pytest.raises(ValueError, match="held-out rows disagree"):
        HeldOut(["q1"], [42, 43], a[None])


def test_synthetic_validation_holds_out_no_real_vectors(bagged_world):
    data, _ = bagged_world
    synthetic = train_bagged(TrainParams(**FAST, bagging=2), data, validation="synthetic")
    held = held_out_vectors(synthetic, data)
    assert held.ids == [] and held.emb.shape == (0, data.dim)


# --- eval: the selection reads the held-out vectors, never the shipped adapter's ---------------------


def _with_real_validation(paths, tmp_path, n_real=24):
    """The fixture pipeline with labelled real questions (near their chunk, like the test questions) and a
    real validation split; returns (paths, real ids, their embeddings, their relevant rows)."""
    from dataclasses import replace

    from ragtune.embeddings_npz import load_embeddings

    ids, corpus_emb = load_embeddings(paths.embed_dir / "corpus.npz")
    rng = np.random.default_rng(3)
    rel = rng.choice(len(ids), size=n_real, replace=False)
    emb = corpus_emb[rel] + 0.6 * rng.normal(size=(n_real, corpus_emb.shape[1]))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    real_ids = [f"r{i:03d}" for i in range(n_real)]
    real_path = tmp_path / "data/fetch/train_questions.jsonl"
    write_jsonl(
        real_path,
        [
            TestQuestion(id=q, question=f"a real question on topic{r}", relevant_ids=[ids[r]])
            for q, r in zip(real_ids, rel)
        ],
    )
    save_embeddings(paths.embed_dir / "real.npz", real_ids, emb)
    write_json(paths.split, {"validation": "real", "refit": True, "train": [], "val": real_ids[:8]})
    held = tmp_path / "data/train/held_out.npz"
    # Held-out vectors: the members as selected had learnt nothing here (raw cosine's direction).
    save_held_out(held, HeldOut(real_ids, [42] * n_real, emb))
    return replace(paths, real_questions=real_path, held_out=held), real_ids, emb, corpus_emb[rel]


def test_selection_on_real_questions_reads_no_score_of_a_model_that_trained_on_them(tmp_path):
    paths, real_ids, real_emb, gold_emb = _with_real_validation(make_pipeline(tmp_path), tmp_path)
    paths.adapter.mkdir(parents=True)
    # The shipped adapter trained on the real questions (refit): it maps each onto its relevant chunk.
    memorised = {e.tobytes(): g for e, g in zip(real_emb, gold_emb)}

    def shipped(query_emb):
        return np.stack([memorised.get(q.tobytes(), q) for q in np.asarray(query_emb, np.float32)])

    m = run_eval(paths, EVAL_FAST, lambda _: shipped, tmp_path / "data/fetch/report.json").metrics
    val = m["val"]
    assert val["questions"] == len(real_ids) and val["origin"] == "human"  # every held-out question, not split's 8
    # Scored from the held-out vectors, the adapter is raw cosine there; the shipped one would score 1.0.
    assert val["arms"]["adapter"] == val["arms"]["cosine"] and val["arms"]["adapter"]["mrr@20"] < 0.9
    assert val["arms"]["hybrid"] == val["arms"]["hybrid_cosine"]
    rec = m["recommendation"]
    assert rec["basis"] == "labels" and rec["labelled"]["questions"] == len(real_ids)
    assert rec["labelled"]["scores"]["adapter"] == pytest.approx(rec["labelled"]["scores"]["cosine"], abs=1e-4)
    # The control: the same eval with the shipped adapter's vectors as "held out" picks the adapter at 1.0.
    leaked = HeldOut(real_ids, [42] * len(real_ids), shipped(real_emb))
    save_held_out(paths.held_out, leaked)
    m2 = run_eval(paths, EVAL_FAST, lambda _: shipped, tmp_path / "data/fetch/report.json").metrics
    assert m2["val"]["arms"]["adapter"]["mrr@20"] == 1.0 and m2["recommendation"]["arm"] in ("adapter", "hybrid")


def test_real_validation_without_held_out_vectors_is_an_error(tmp_path):
    paths, *_ = _with_real_validation(make_pipeline(tmp_path), tmp_path)
    paths.adapter.mkdir(parents=True)
    paths.held_out.unlink()
    with pytest.raises(RagtuneError, match=r"held_out\.npz: no held-out adapter vectors .*\(dvc repro train\)"):
        run_eval(paths, EVAL_FAST, lambda _: identity, tmp_path / "data/fetch/report.json")


def test_the_refit_members_keep_their_selected_state(bagged_world):
    data, bagged = bagged_world
    q = torch.as_tensor(data.real.emb[:5])
    for m in bagged.members:
        assert m.held_out_adapter is m.selected_adapter and not torch.allclose(m.adapter(q), m.selected_adapter(q))
    unfit = train_bagged(TrainParams(**FAST, bagging=1, refit=False), data)
    assert unfit.members[0].selected_adapter is None and unfit.members[0].held_out_adapter is unfit.members[0].adapter
