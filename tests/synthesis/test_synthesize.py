"""The synthesize library: cache behaviour, failures, filters, test-chunk exclusion, prompt handling."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
from conftest import CountingBackend, make_chunks

from ragtune.cache import ContentCache
from ragtune.errors import RagtuneError
from ragtune.llm import LlmParams, make_backend
from ragtune.llm.ict import IctBackend, ict_queries
from ragtune.records import TestQuestion
from ragtune.synthesis.filters import FilterParams, check_question, clean
from ragtune.synthesis.run import SynthesizeParams, question_prompt, render_question_request, synthesize
from ragtune.textnorm import normalise_text


def run(chunks, backend, cache, tests=(), **params):
    return synthesize(chunks, list(tests), backend, cache, SynthesizeParams(**params))


def test_first_run_calls_each_training_chunk_once_and_rerun_calls_none(tmp_path, backend):
    chunks = make_chunks(6)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(chunks, backend, cache)
        assert len(backend.calls) == 6
        assert out.report["cache_misses"] == 6 and out.report["calls"] == 6
        assert out.report["questions_kept"] == 12
        assert out.report["tokens_in"] == 600 and out.report["cost_usd"] == pytest.approx(0.006)
        again = run(chunks, backend, cache)
    assert len(backend.calls) == 6  # zero new calls
    assert again.report["cache_hits"] == 6 and again.report["calls"] == 0
    assert [q.model_dump() for q in again.questions] == [q.model_dump() for q in out.questions]
    assert again.report["dataset_cost_usd"] == pytest.approx(0.006) and again.report["cost_usd"] == 0


def test_changing_one_chunk_costs_exactly_one_call(tmp_path, backend):
    chunks = make_chunks(6)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        run(chunks, backend, cache)
        chunks[3] = chunks[3].model_copy(update={"text": chunks[3].text + " Amended in 2025."})
        out = run(chunks, backend, cache)
    assert len(backend.calls) == 7
    assert backend.calls[-1].passage.endswith("Amended in 2025.")
    assert out.report["cache_hits"] == 5 and out.report["cache_misses"] == 1


def test_filter_params_are_not_in_the_key(tmp_path, backend):
    chunks = make_chunks(4)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        run(chunks, backend, cache)
        out = run(chunks, backend, cache, filters={"max_chars": 20, "min_chars": 2})
    assert len(backend.calls) == 4
    assert out.report["dropped"]["overlong"] == 8 and out.report["questions_kept"] == 0


def test_sampling_and_prompt_params_are_in_the_key(tmp_path, backend):
    chunks = make_chunks(3)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        run(chunks, backend, cache)
        run(chunks, backend, cache, questions_per_chunk=2)  # the rendered prompt changes
        assert len(backend.calls) == 6
        other = CountingBackend()
        other.identity = lambda: {"backend": "fake", "model": "fake-2"}  # another model
        run(chunks, other, cache)
        assert len(other.calls) == 3


def test_failures_are_recorded_counted_and_retried(tmp_path, backend):
    chunks = make_chunks(4)
    chunks[1] = chunks[1].model_copy(update={"text": chunks[1].text + " FAIL"})
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(chunks, backend, cache)
        assert out.report["failures"] == 1 and out.report["failures_by_reason"] == {"invalid_output": 1}
        assert out.failed_share == pytest.approx(0.25)
        assert not any(q.chunk_id == "c1" for q in out.questions)
        assert out.report["chunks_with_questions"] == 3  # the failed chunk is not a "zero questions" success
        # Each result is committed to the journal the moment it arrives (ragtune.cache).
        stored = [json.loads(v) for (v,) in sqlite3.connect(cache.journal).execute("SELECT value FROM items")]
        assert sorted(s["status"] for s in stored) == ["failed", "ok", "ok", "ok"]
        assert [s["reason"] for s in stored if s["status"] == "failed"] == ["invalid_output"]
        backend.fail = False  # the next run retries the failure, and only it
        again = run(chunks, backend, cache)
    assert len(backend.calls) == 5 and backend.calls[-1].passage.endswith("FAIL")
    assert again.report["failures"] == 0 and again.report["failures_retried_from_earlier_runs"] == 1
    assert again.report["chunks_with_questions"] == 4


@pytest.mark.parametrize(
    "reason, kept",
    [
        ("invalid_output", True),
        ("max_tokens", True),
        ("refusal", True),
        ("server_error", False),
        ("rate_limited", False),
    ],
)
def test_a_deterministic_backend_keeps_content_failures_and_retries_transport_ones(tmp_path, backend, reason, kept):
    """Sent again, a seeded local model would give the same broken reply: the rerun keeps that failure
    instead of paying for it on every run. A server error may have passed: it is retried."""
    chunks = make_chunks(3)
    chunks[1] = chunks[1].model_copy(update={"text": chunks[1].text + " FAIL"})
    backend.deterministic, backend.fail_reason = True, reason
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        first = run(chunks, backend, cache)
        again = run(chunks, backend, cache)
    assert len(backend.calls) == (3 if kept else 4)
    assert again.report["calls"] == (0 if kept else 1) and again.report["failures"] == first.report["failures"] == 1
    assert again.report["failures_kept_from_earlier_runs"] == int(kept)
    assert again.report["failures_retried_from_earlier_runs"] == int(not kept)
    assert [q.model_dump() for q in again.questions] == [q.model_dump() for q in first.questions]


def test_test_chunks_never_reach_the_generator_under_the_exclude_protocol(tmp_path, backend):
    chunks = make_chunks(6, test_ids=[2, 4])
    tests = [TestQuestion(id="t1", question="Who monitors penalties?", relevant_ids=["c2", "c4"])]
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(chunks, backend, cache, tests, test_chunks="exclude")
    assert sorted(r.passage for r in backend.calls) == sorted(c.text for c in chunks if c.split == "train")
    assert {q.chunk_id for q in out.questions} == {"c0", "c1", "c3", "c5"}
    assert out.test_questions == [] and out.report["chunks_test_for_synthetic_questions"] == 0


def test_uncovered_held_out_chunks_get_synthetic_test_questions_kept_apart(tmp_path, backend):
    chunks = make_chunks(6, test_ids=[1, 5])  # a jsonl corpus without a test file: no test questions
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(chunks, backend, cache, test_questions_per_chunk=1)
    assert len(backend.calls) == 6
    assert {q.chunk_id for q in out.questions} == {"c0", "c2", "c3", "c4"}
    assert [(t.relevant_ids, t.origin) for t in out.test_questions] == [(["c1"], "synthetic"), (["c5"], "synthetic")]
    assert out.report["test_questions_kept"] == 2


def test_filters_count_every_reason(tmp_path):
    answers = {
        "c0": [
            "What is the deadline?",
            "",
            "   ",
            "What is the deadline?",
            "x?",
            "Define " + "very " * 80 + "long?",
            "Rules apply here.",
            "What does the passage say about fees?",
        ],
        "c1": ["what is the DEADLINE", "What is the deadline ?", "Who pays the fee?", "Question 2: When is it due?"],
    }
    b = CountingBackend(questions=lambda req: answers["c0" if "case 0" in req.passage else "c1"])
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(make_chunks(2), b, cache, questions_per_chunk=8)
    assert [q.question for q in out.questions] == ["What is the deadline?", "Who pays the fee?", "When is it due?"]
    assert out.report["dropped"] == {
        "duplicate": 2,
        "empty": 2,
        "not_a_question": 2,
        "overlong": 1,
        "refers_to_source": 1,
        "too_short": 1,
    }
    assert out.report["questions_generated"] == 12 and out.report["questions_dropped"] == 9


def test_questions_beyond_the_limit_are_dropped_and_counted(tmp_path):
    b = CountingBackend(questions=lambda req: [f"Question number {i} here?" for i in range(7)])
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(make_chunks(1), b, cache, questions_per_chunk=3)
    assert len(out.questions) == 3 and out.report["dropped"] == {"over_limit": 4}


def test_max_chunks_caps_work_and_reports_it(tmp_path, backend):
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = run(make_chunks(10), backend, cache, max_chunks=4)
    assert len(backend.calls) == 4
    assert out.report["chunks_capped_out"] == 6 and out.report["chunks_requested"] == 4


def test_stop_event_interrupts_and_keeps_finished_chunks(tmp_path, backend):
    stop = threading.Event()
    orig = backend.generate

    def generate(reqs, on_result, stop_, state=None):
        def counted(r):
            on_result(r)
            if len(backend.calls) == 2:
                stop_.set()

        orig(reqs, counted, stop_, state)

    backend.generate = generate
    chunks = make_chunks(5)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = synthesize(chunks, [], backend, cache, SynthesizeParams(), stop=stop)
        assert out.report["interrupted"] and out.report["not_done"] == 3
        backend.generate = orig
        again = run(chunks, backend, cache)
    assert len(backend.calls) == 5 and again.report["cache_hits"] == 2


def test_prompt_file_renders_and_its_hash_is_in_the_key(tmp_path, backend):
    p = question_prompt("synthesize_v1")
    assert "{passage}" not in p.system and p.prompt_id.startswith("synthesize_v1@")
    user = render_question_request(p, "Braces {n} and {title} in text stay.", 4, None)
    assert (
        "at most 4 questions" in user
        and "Source:" not in user
        and user.endswith("Braces {n} and {title} in text stay.")
    )
    assert "Source: Art. 1" in render_question_request(p, "x", 2, "Art. 1")
    custom = tmp_path / "mine.txt"
    custom.write_text(p.text.replace("real user", "curious user"), encoding="utf-8")
    chunks = make_chunks(2)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        run(chunks, backend, cache)
        out = run(chunks, backend, cache, prompt=str(custom))
    assert len(backend.calls) == 4 and out.report["prompt_id"].startswith("mine@")
    with pytest.raises(RagtuneError, match="no prompt"):
        question_prompt("nope")


def test_clean_and_normalise():
    assert clean("  Question 1:  What   is it? ") == "What is it?"
    assert clean("2) Who pays?") == "Who pays?"
    assert normalise_text("What is the DEADLINE?") == normalise_text("what is the deadline")
    f = FilterParams()
    assert check_question("Rules apply.", f, want_question_mark=False) is None
    assert check_question("Rules apply.", f, want_question_mark=True) == "not_a_question"


def test_ict_is_deterministic_for_a_seed(tmp_path):
    text = make_chunks(1)[0].text + " Member States shall lay down penalties that are effective and proportionate."
    a = ict_queries(text, 2, seed=1, min_words=3, max_words=8)
    assert a == ict_queries(text, 2, seed=1, min_words=3, max_words=8)
    assert all(3 <= len(q.split()) <= 8 for q in a) and len(set(a)) == 2
    seeds = {tuple(ict_queries(text, 1, seed=s, min_words=3, max_words=8)) for s in range(10)}
    assert len(seeds) > 1  # the seed matters
    chunks = make_chunks(5)
    ict = make_backend(LlmParams(backend="ict", seed=3))
    assert isinstance(ict, IctBackend)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        one = run(chunks, ict, cache, questions_per_chunk=2)
        two = run(chunks, make_backend(LlmParams(backend="ict", seed=3)), cache, questions_per_chunk=2)
        assert len(cache) == 0  # nothing worth caching
    assert [q.question for q in one.questions] == [q.question for q in two.questions]
    assert one.report["calls"] == 0 and one.report["questions_kept"] > 0
    assert all(q.prompt_id == "none" and q.backend == "ict" for q in one.questions)


def test_mlflow_params_keep_max_tokens_but_drop_secret_looking_keys():
    from ragtune.tracking import flatten

    flat = flatten("", {"llm": LlmParams(), "x": {"hf_token": "s", "api_key": "s", "password": "s"}})
    assert "llm.max_tokens" in flat and "llm.anthropic.model" in flat
    assert not any(k.startswith("x.") for k in flat)
