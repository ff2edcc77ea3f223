"""The anthropic backend against a local server that speaks the Messages and Message Batches APIs."""

from __future__ import annotations

import threading
import time

import pytest
from fake_anthropic import FakeAnthropic

from ragtune.errors import RagtuneError
from ragtune.llm import LlmParams, make_backend
from ragtune.llm.anthropic_backend import AnthropicBackend, estimate_cost, retry_after_seconds
from ragtune.llm.base import GenRequest, Usage
from ragtune.llm.config import Price

KEY = "sk-ant-test-0123456789-DO-NOT-LEAK"


@pytest.fixture
def fake():
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def backend_for(fake, **anthropic) -> AnthropicBackend:
    params = LlmParams.model_validate(
        {
            "backend": "anthropic",
            "anthropic": {"base_url": fake.url, "retry_base_seconds": 0.01, "max_retries": 3, **anthropic},
        }
    )
    return make_backend(params)


def req(scenario: str = "ok", i: int = 0) -> GenRequest:
    return GenRequest(
        key=f"{i:064x}",
        system="You write questions.",
        passage=f"passage {i}",
        max_items=3,
        user=f"Write at most 3 questions. SCENARIO={scenario}\n\nOperators report incidents {i}.",
    )


def run(backend, requests, state=None):
    out = []
    backend.generate(requests, out.append, threading.Event(), state)
    return {r.key: r for r in out}


def test_success_sends_a_forced_tool_with_schema_and_cached_system_prompt(fake):
    r = run(backend_for(fake), [req()])[req().key]
    assert r.ok and len(r.questions) == 3 and r.questions[-1].endswith("say about incidents?")
    assert r.usage == Usage(tokens_in=120, tokens_out=30) and r.cost_usd == pytest.approx((120 * 1 + 30 * 5) / 1e6)
    (call,) = fake.message_calls()
    body = call["body"]
    assert body["model"] == "claude-haiku-4-5" and body["temperature"] == 0.7
    assert body["tool_choice"] == {"type": "tool", "name": "record_questions"}
    assert body["tools"][0]["input_schema"]["properties"]["questions"]["maxItems"] == 3
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    auth = call["headers"].get("x-api-key") or call["headers"].get("authorization", "")
    assert auth.endswith(KEY)  # the key goes to the API, and only there


@pytest.mark.parametrize("scenario", ["overloaded_once", "server_error_once"])
def test_529_and_5xx_are_retried(fake, scenario):
    b = backend_for(fake)
    r = run(b, [req(scenario)])[req().key]
    assert r.ok and r.attempts == 2 and b.retries == 1
    assert len(fake.message_calls()) == 2


def test_429_honours_retry_after(fake):
    b = backend_for(fake, retry_base_seconds=0.01)
    t0 = time.perf_counter()
    r = run(b, [req("rate_limited_once")])[req().key]
    assert r.ok and r.attempts == 2
    calls = fake.message_calls()
    assert len(calls) == 2 and calls[1]["t"] - calls[0]["t"] >= 0.95  # retry-after: 1, not the 0.01 s backoff
    assert time.perf_counter() - t0 >= 0.95


def test_persistent_5xx_gives_up_with_a_recorded_reason(fake):
    r = run(backend_for(fake, max_retries=2), [req("server_error_always")])[req().key]
    assert not r.ok and r.reason == "http_500" and "3 attempts" in r.detail
    assert len(fake.message_calls()) == 3


@pytest.mark.parametrize(
    "scenario,reason", [("bad_schema", "invalid_output"), ("max_tokens", "max_tokens"), ("refusal", "refusal")]
)
def test_bad_replies_are_failures_with_reasons(fake, scenario, reason):
    r = run(backend_for(fake), [req(scenario)])[req().key]
    assert not r.ok and r.reason == reason and r.questions == []
    assert r.usage.tokens_in == 120  # still paid for, still counted
    assert len(fake.message_calls()) == 1  # not retried within the run


def test_missing_key_fails_before_any_work(fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(RagtuneError, match="ANTHROPIC_API_KEY"):
        backend_for(fake)
    monkeypatch.setenv("MY_KEY", KEY)
    assert backend_for(fake, api_key_env="MY_KEY") is not None
    assert fake.requests == []


def test_rejected_key_stops_the_run_without_echoing_it(fake):
    with pytest.raises(RagtuneError, match="ANTHROPIC_API_KEY") as exc:
        run(backend_for(fake), [req("unauthorized")])
    assert KEY not in str(exc.value)


def test_concurrency_is_bounded(fake):
    fake.delay = 0.2
    b = backend_for(fake, concurrency=2)
    t0 = time.perf_counter()
    out = run(b, [req(i=i) for i in range(4)])
    assert len(out) == 4 and all(r.ok for r in out.values())
    assert 0.35 <= time.perf_counter() - t0 < 0.75  # two waves of two


class MemState(dict):
    def get_json(self, key):
        return self.get(key)

    def put_json(self, key, obj, meta=None):
        self[key] = obj


def test_batch_mode_polls_collects_and_costs_half(fake):
    state = MemState()
    requests = [req(i=0), req("refusal", i=1), req(i=2)]
    out = run(backend_for(fake, batch=True, batch_poll_seconds=0.05), requests, state)
    assert [out[r.key].ok for r in requests] == [True, False, True] and out[requests[1].key].reason == "refusal"
    assert out[requests[0].key].cost_usd == pytest.approx((120 * 1 + 30 * 5) / 1e6 * 0.5)
    assert fake.message_calls() == []
    posts = [r for r in fake.requests if r["path"] == "/v1/messages/batches"]
    assert len(posts) == 1 and [x["custom_id"] for x in posts[0]["body"]["requests"]] == [r.key for r in requests]
    assert state["anthropic/pending-batches/v1"] == []


def test_batch_interrupted_while_polling_is_collected_not_resubmitted(fake):
    fake.batch_polls = 10**6
    state = MemState()
    requests = [req(i=i) for i in range(3)]
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    out = []
    backend_for(fake, batch=True, batch_poll_seconds=0.05).generate(requests, out.append, stop, state)
    assert out == [] and len(state["anthropic/pending-batches/v1"]) == 1
    fake.batch_polls = 0
    again = run(backend_for(fake, batch=True, batch_poll_seconds=0.05), requests, state)
    assert all(r.ok for r in again.values()) and len(again) == 3
    assert len([r for r in fake.requests if r["path"] == "/v1/messages/batches"]) == 1  # paid once


def test_retry_after_parsing_and_cost():
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({}) is None
    price = Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.1)
    usage = Usage(tokens_in=1_000_000, tokens_out=0, cache_read=500_000, cache_write=250_000)
    assert estimate_cost(usage, price) == pytest.approx(0.25 * 1.0 + 0.5 * 0.1 + 0.25 * 1.25)
    assert estimate_cost(usage, None) is None
