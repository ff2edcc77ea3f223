"""The training protocol (`synthesize.test_chunks`): which chunks reach synthesis and training, and the
rule that a synthetic test set's chunks are never trained on."""

import numpy as np
import pytest
from conftest import make_chunks

from ragtune.adapter.data import load_training_data
from ragtune.cache import ContentCache
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import ParamsError, RagtuneError
from ragtune.params import parse_section
from ragtune.records import SyntheticQuestion, TestQuestion, write_jsonl
from ragtune.synthesis.run import SynthesizeParams, check_no_leak, select_chunks, synthesize

HUMAN = [TestQuestion(id="t1", question="Who monitors penalties?", relevant_ids=["c2", "c4"])]


def ids(chunks):
    return [c.id for c in chunks]


def test_include_gives_human_test_chunks_training_questions_exclude_does_not():
    chunks = make_chunks(6, test_ids=[2, 4])
    include = select_chunks(chunks, HUMAN, SynthesizeParams(test_chunks="include"))
    assert ids(include.train) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert (include.test_included, include.test_excluded, include.forbidden) == (2, 0, frozenset())
    exclude = select_chunks(chunks, HUMAN, SynthesizeParams(test_chunks="exclude"))
    assert ids(exclude.train) == ["c0", "c1", "c3", "c5"]
    assert (exclude.test_included, exclude.test_excluded, exclude.forbidden) == (0, 2, frozenset({"c2", "c4"}))


def test_default_protocol_is_include():
    assert SynthesizeParams().test_chunks == "include"
    with pytest.raises(ParamsError, match="synthesize.test_chunks"):
        parse_section({"test_chunks": "all"}, "synthesize", SynthesizeParams)


@pytest.mark.parametrize("protocol", ["include", "exclude"])
def test_chunks_held_out_for_a_synthetic_test_set_stay_excluded(protocol):
    # A jsonl corpus without a test file: c1 and c5 are held out and get synthetic test questions.
    chunks = make_chunks(6, test_ids=[1, 5])
    sel = select_chunks(chunks, [], SynthesizeParams(test_chunks=protocol))
    assert ids(sel.train) == ["c0", "c2", "c3", "c4"] and ids(sel.synthetic_test) == ["c1", "c5"]
    assert sel.forbidden == {"c1", "c5"}
    # A test file that itself holds synthetic questions: their chunks stay out too.
    synthetic = [
        TestQuestion(id="s1", question="q?", relevant_ids=["c1"], origin="synthetic"),
        TestQuestion(id="h1", question="h?", relevant_ids=["c5"]),
    ]
    sel = select_chunks(chunks, synthetic, SynthesizeParams(test_chunks=protocol))
    assert "c1" not in ids(sel.train) and "c1" in sel.forbidden
    assert ("c5" in ids(sel.train)) == (protocol == "include")


def test_report_states_the_protocol_and_the_stage_check_refuses_a_leak(tmp_path, backend):
    chunks = make_chunks(6, test_ids=[2, 4])
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = synthesize(chunks, HUMAN, backend, cache, SynthesizeParams())
    assert out.report["protocol"] == "include" and out.report["chunks_test_with_training_questions"] == 2
    assert "include" in out.report["protocol_note"]
    assert {q.chunk_id for q in out.questions} >= {"c2", "c4"}
    leak = [SyntheticQuestion(id="x", chunk_id="c2", question="?", backend="b", model="m", prompt_id="p")]
    check_no_leak(leak, out.forbidden_chunk_ids)  # allowed under include
    with pytest.raises(RagtuneError, match="held-out test chunks"):
        check_no_leak(leak, frozenset({"c2"}))


def test_training_drops_questions_about_synthetic_test_chunks_only(tmp_path):
    chunks = make_chunks(6, test_ids=[2, 5])
    write_jsonl(tmp_path / "corpus.jsonl", chunks)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    save_embeddings(tmp_path / "corpus.npz", ids(chunks), emb)
    save_embeddings(tmp_path / "questions.npz", ["q0", "q2", "q5"], emb[[0, 2, 5]], chunk_ids=["c0", "c2", "c5"])
    # c2 carries a human test question (include: trained on), c5 a synthetic one (never trained on).
    write_jsonl(
        tmp_path / "test.jsonl",
        [
            TestQuestion(id="h", question="h?", relevant_ids=["c2"]),
            TestQuestion(id="s", question="s?", relevant_ids=["c5"], origin="synthetic"),
        ],
    )
    data = load_training_data(
        tmp_path / "questions.npz", tmp_path / "corpus.npz", tmp_path / "corpus.jsonl", tmp_path / "test.jsonl"
    )
    assert data.question_ids == ["q0", "q2"] and data.dropped["test_chunk_questions"] == 1
    # Without the test set the strict rule holds: every split=test chunk is held out.
    strict = load_training_data(tmp_path / "questions.npz", tmp_path / "corpus.npz", tmp_path / "corpus.jsonl")
    assert strict.question_ids == ["q0"]
