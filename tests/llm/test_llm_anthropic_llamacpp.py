"""The anthropic backend (the real `anthropic` SDK) against an independent Messages-API server: the llama.cpp
server inside xllamacpp, serving the packaged SmolLM2 on 127.0.0.1 (`llm.anthropic.base_url`).

What it shows that the project's own fake server cannot: requests the SDK builds are accepted by a server
nobody here wrote, and replies, usage and prompt-cache counts are read back from it. What it cannot show:
llama.cpp ignores forced tool choice for a model without a tool-call template (SmolLM2 answers in text), so
every reply is a counted failure here (`invalid_output`, or `max_tokens` when the text runs long);
forced tools and Message Batches are tested against
the fake server (test_llm_anthropic.py)."""

from __future__ import annotations

import threading

import pytest
from server_support import free_port

from ragtune.llm import LlmParams, make_backend
from ragtune.llm.base import GenRequest
from ragtune.llm.llamacpp_backend import resolve_gguf


@pytest.fixture(scope="module")
def llama_url():
    import xllamacpp as xlc

    path, _ = resolve_gguf("packaged:smollm2-135m-instruct")
    cp = xlc.CommonParams()
    cp.model.path = str(path)
    cp.n_ctx = 4096
    cp.n_parallel = 1
    cp.warmup = False
    cp.verbosity = -1
    cp.use_jinja = True
    cp.port = free_port()
    cp.hostnames = ["127.0.0.1"]
    server = xlc.Server(cp)  # serves HTTP on cp.port while referenced
    yield f"http://127.0.0.1:{cp.port}"
    del server


def test_the_sdk_talks_to_llama_cpp_messages_api_and_a_reply_without_the_tool_is_a_counted_failure(
    llama_url, monkeypatch
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "local-server-needs-no-key")
    params = LlmParams.model_validate(
        {
            "backend": "anthropic",
            "max_tokens": 64,
            "anthropic": {"base_url": llama_url, "concurrency": 1, "max_retries": 1, "retry_base_seconds": 0.01},
        }
    )
    backend = make_backend(params)
    passage = "Operators of essential services shall notify the authority of significant incidents within 24 hours."
    requests = [
        GenRequest(
            key=f"{i:064x}",
            system="You write questions a user would ask about a passage.",
            passage=passage,
            max_items=2,
            user=f"Write at most 2 questions.\n\n{passage}",
        )
        for i in range(2)
    ]
    results: list = []
    backend.generate(requests, results.append, threading.Event(), None)
    assert sorted(r.key for r in results) == sorted(r.key for r in requests)
    for r in results:
        # SmolLM2 answers in text: a failure classified by the stop_reason the server sent back (end_turn:
        # no tool call; max_tokens: the text ran out of tokens first), never a question made up from text.
        assert not r.ok and r.questions == []
        assert (r.reason, r.detail.split(" (")[0] if r.reason == "invalid_output" else r.detail) in {
            ("invalid_output", "no record_questions tool call"),
            ("max_tokens", "the answer hit max_tokens=64"),
        }
        assert r.usage.tokens_in > 20 and r.usage.tokens_out > 0  # read from the server's usage block
    # The second request shares the first one's system prompt and passage: llama.cpp reuses that prefix and
    # reports it as cache_read_input_tokens, which the backend counts as cache reads.
    assert sum(r.usage.cache_read for r in results) > 0
