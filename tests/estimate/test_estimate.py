"""`ragtune estimate` against the fake Messages server with the API's usage (tests/fake_anthropic.py,
count_usage): the estimate made before a run holds the usage and cost that run then reports, with the API's
count_tokens and with the local estimate; cached requests cost nothing; prompt caching and the judge too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_chunks, write_project
from fake_anthropic import FakeAnthropic

from ragtune.estimate import format_estimate, run_estimate

KEY = "sk-ant-estimate-test-0123"


@pytest.fixture
def fake():
    server = FakeAnthropic(count_usage=True).start()
    yield server
    server.stop()


def llm(fake, **kw):
    return {"backend": "anthropic", "anthropic": {"base_url": fake.url, "concurrency": 1, **kw}}


def run_synthesize(project: Path) -> dict:
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "RAGTUNE_LOG": "WARNING"}
    proc = subprocess.run(
        [sys.executable, "-m", "ragtune.stages.synthesize"], cwd=project, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((project / "data/synthesize/run.json").read_text())


def within(value: float, rng) -> bool:
    return rng.low - 1e-9 <= value <= rng.high + 1e-9


def test_synthesize_estimate_holds_the_usage_of_the_run(tmp_path, fake, monkeypatch):
    project = write_project(tmp_path / "p", make_chunks(12), llm=llm(fake))
    monkeypatch.chdir(project)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    api = run_estimate()
    local = run_estimate(local=True)
    counted = [r for r in fake.requests if r["path"] == "/v1/messages/count_tokens"]
    assert len(counted) == 12 + 2 and not fake.message_calls()  # every request and the prefix (2); no message
    s, s_local = api.stages[0], local.stages[0]
    assert (s.stage, s.calls, s.cached, s.to_send, s.counted_with) == ("synthesize", 12, 0, 12, "count_tokens")
    assert s_local.counted_with == "local" and s_local.input_error == 0.35
    # the judge runs on the same backend; before synthesize it reads fetch's (here empty) test set
    assert api.stages[1].stage == "judge" and api.stages[1].calls == 0

    usage = run_synthesize(project)
    assert usage["calls"] == 12
    assert abs(s.input_tokens.point - usage["tokens_in"]) <= s.input_error * usage["tokens_in"]
    assert abs(s_local.input_tokens.point - usage["tokens_in"]) <= s_local.input_error * usage["tokens_in"]
    assert within(usage["tokens_out"], s.output_tokens)
    assert within(usage["cost_usd"], s.usd) and within(usage["cost_usd"], s_local.usd)
    # haiku caches prefixes of 4,096 tokens and more: this one is sent uncached, as the estimate says
    assert usage["tokens_cache_write"] == s.cache_write_tokens.point == 0
    assert "below minimum" in s.prompt_caching
    table = format_estimate(api)
    assert "synthesize" in table and "count_tokens" in table and "below minimum" in table

    again = run_estimate(local=True).stages[0]  # every request is in the LLM cache now: nothing to pay
    assert (again.cached, again.to_send, again.usd.point, again.usd.high) == (12, 0, 0.0, 0.0)


def test_prompt_caching_and_batch_discount(tmp_path, fake, monkeypatch):
    prompt = tmp_path / "long_prompt.txt"
    rules = " ".join(f"Rule {i}: write questions a compliance officer would type about duty {i}." for i in range(120))
    prompt.write_text(f"=== system ===\n{rules}\n=== user ===\nWrite {{n}} questions about:\n{{passage}}\n")
    synth = {"prompt": str(prompt), "filters": {"require_question_mark": False}}
    project = write_project(
        tmp_path / "p",
        make_chunks(8),
        llm=llm(fake, model="claude-sonnet-4-5", batch=True, batch_poll_seconds=0.05),
        synthesize=synth,
    )
    monkeypatch.chdir(project)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    s = run_estimate().stages[0]
    assert s.prompt_caching == "on" and s.batch
    usage = run_synthesize(project)
    # one write of the tools + system prefix, then reads (the fake caches every batch request, best case)
    assert usage["tokens_cache_write"] == pytest.approx(s.cache_write_tokens.point, rel=0.01)
    assert usage["tokens_cache_read"] == pytest.approx(s.cache_read_tokens.point, rel=0.01)
    assert within(usage["tokens_cache_write"], s.cache_write_tokens)
    assert within(usage["cost_usd"], s.usd)
    # half price in batches: the same estimate without them costs twice as much
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["llm"]["anthropic"]["batch"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "data/cache/llm.sqlite").unlink()  # as `dvc exp run` resets it: the journal still holds every answer
    assert run_estimate().stages[0].usd.point == 0
    # Nothing cached at all: neither the tracked file nor its journal (ragtune.cache).
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "empty-journal"))
    direct = run_estimate().stages[0]
    assert direct.usd.point == pytest.approx(2 * s.usd.point, rel=1e-3)


def test_judge_estimate_holds_the_judge_run(tmp_path, monkeypatch):
    from test_judge_llm import JudgeServer, make_pipeline

    from ragtune.judge.config import JudgeParams
    from ragtune.judge.run import run_judge
    from ragtune.llm import LlmParams
    from ragtune.params import EmbeddingParams

    server = JudgeServer(count_usage=True).start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        paths = make_pipeline(Path("."))
        Path("data/fetch/test.jsonl").write_text(paths.test.read_text())  # as fetch leaves it
        llm_section = llm(server)
        judge = {"bootstrap_resamples": 500, "top_k": 2, "max_questions": None}
        Path("params.yaml").write_text(yaml.safe_dump({"llm": llm_section, "judge": judge}))
        Path("models/adapter").rename("adapter.away")  # before train: contexts approximated
        rough = run_estimate().stages[1]
        Path("adapter.away").rename("models/adapter")
        est = run_estimate().stages[1]
        assert est.stage == "judge" and est.cached == 0 and est.to_send > 0
        assert any("approximated" in n for n in rough.notes) and not any("approximated" in n for n in est.notes)
        result = run_judge(
            paths,
            JudgeParams(**judge),
            LlmParams.model_validate(llm_section),
            EmbeddingParams(),
            Path("data/cache/judge_llm.sqlite"),
            None,
        )
        usage = result.metrics["usage"]
        assert usage["calls"] <= est.to_send
        assert within(usage["tokens_in"], est.input_tokens) and within(usage["tokens_out"], est.output_tokens)
        assert within(usage["cost_usd"], est.usd)
        assert within(usage["tokens_in"], rough.input_tokens) and within(usage["cost_usd"], rough.usd)
        again = run_estimate().stages[1]  # answers and judgements cached: exact, and free
        assert again.to_send == 0 and again.cached == usage["calls"] and again.usd.high == 0.0
    finally:
        server.stop()
