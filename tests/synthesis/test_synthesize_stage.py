"""The synthesize stage as a process: crash and resume with real signals, and the API key never leaking."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_chunks, write_project
from fake_anthropic import FakeAnthropic

KEY = "sk-ant-test-LEAKCHECK-7f3a9c"
STAGE = ["-m", "ragtune.stages.synthesize"]


@pytest.fixture
def fake():
    server = FakeAnthropic().start()
    yield server
    server.stop()


def anthropic_llm(fake: FakeAnthropic, **kw) -> dict:
    return {
        "backend": "anthropic",
        "anthropic": {"base_url": fake.url, "concurrency": 1, "retry_base_seconds": 0.01, **kw},
    }


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    e.update({"ANTHROPIC_API_KEY": KEY, "RAGTUNE_LOG": "DEBUG", "PYTHONUNBUFFERED": "1", **extra})
    return e


def start(project: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *STAGE],
        cwd=project,
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_calls(fake: FakeAnthropic, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while len(fake.message_calls()) < n:
        assert time.time() < deadline, "the stage made too few calls"
        time.sleep(0.02)


def questions(project: Path) -> list[dict]:
    return [json.loads(line) for line in (project / "data/synthesize/questions.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_midway_resumes_without_paying_twice(tmp_path, fake, sig):
    n = 12
    fake.delay = 0.15
    project = write_project(tmp_path / "p", make_chunks(n), llm=anthropic_llm(fake))
    proc = start(project)
    wait_for_calls(fake, 4)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    first = len(fake.message_calls())
    assert 4 <= first < n
    if sig == signal.SIGTERM:
        assert "finishing the calls in flight" in out and "rerun resumes" in out

    proc = start(project)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    total = len(fake.message_calls())
    paid = {c["body"]["messages"][0]["content"] for c in fake.message_calls()}
    assert len(paid) == n  # every chunk was generated
    if sig == signal.SIGTERM:
        assert total == n  # the in-flight call was committed before exiting: nothing paid twice
    else:
        assert total <= n + 1  # a hard kill can lose at most the one call in flight (concurrency 1)
    report = json.loads((project / "data/synthesize/run.json").read_text())
    assert report["cache_hits"] == first - (total - n) and report["calls"] == total - first
    assert {q["chunk_id"] for q in questions(project)} == {f"c{i}" for i in range(n)}

    proc = start(project)  # a third run: all from the cache
    proc.communicate(timeout=60)
    assert len(fake.message_calls()) == total


@pytest.mark.slow
def test_api_key_appears_in_no_output_log_file_or_mlflow_param(tmp_path, fake):
    chunks = make_chunks(5)
    chunks[2] = chunks[2].model_copy(update={"text": chunks[2].text + " SCENARIO=rate_limited_once"})
    chunks[3] = chunks[3].model_copy(update={"text": chunks[3].text + " SCENARIO=refusal"})
    project = write_project(
        tmp_path / "p",
        chunks,
        llm=anthropic_llm(fake, concurrency=2),
        synthesize={"max_failed_share": 0.5},
        mlflow={"enabled": True, "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "leakcheck"},
    )
    proc = subprocess.run([sys.executable, *STAGE], cwd=project, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = {
        **json.loads((project / "data/synthesize/report.json").read_text()),
        **json.loads((project / "data/synthesize/run.json").read_text()),
    }
    assert report["failures_by_reason"] == {"refusal": 1} and report["retries"] == 1
    assert report["calls"] == 5 and report["tokens_in"] == 600 and report["cost_usd"] > 0  # 6 requests, 5 results
    assert (
        "failures by reason {'refusal': 1}; the next run retries them, except a deterministic backend's content "
        "failures (invalid_output, max_tokens, refusal), which are kept"
    ) in proc.stdout

    assert KEY not in proc.stdout + proc.stderr
    assert "DEBUG" in proc.stderr  # the check ran with the most verbose logging
    for f in [*project.rglob("*"), tmp_path / "mlflow.db"]:
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    con = sqlite3.connect(tmp_path / "mlflow.db")
    params = dict(con.execute("SELECT key, value FROM params").fetchall())
    metrics = {k for (k,) in con.execute("SELECT DISTINCT key FROM metrics")}
    con.close()
    assert params["llm.backend"] == "anthropic" and params["synthesize.questions_per_chunk"] == "5"
    assert not any(KEY in v for v in params.values())
    assert {"questions_kept", "cost_usd", "cache_misses", "failures_by_reason.refusal", "tokens_in"} <= metrics


@pytest.mark.slow
def test_missing_key_stops_before_any_work(tmp_path, fake):
    project = write_project(tmp_path / "p", make_chunks(3), llm=anthropic_llm(fake))
    e = env()
    del e["ANTHROPIC_API_KEY"]
    proc = subprocess.run([sys.executable, *STAGE], cwd=project, env=e, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert fake.requests == [] and not (project / "data/cache/llm.sqlite").exists()


@pytest.mark.slow
def test_test_set_is_fetchs_questions_then_synthetic_ones_for_uncovered_held_out_chunks(tmp_path):
    from ragtune.records import TestQuestion

    human = TestQuestion(id="h1", question="Who monitors data subject access rights?", relevant_ids=["c1"])
    project = write_project(tmp_path / "p", make_chunks(6, test_ids=[1, 4]), [human], llm={"backend": "ict"})
    proc = subprocess.run([sys.executable, *STAGE], cwd=project, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tests = [json.loads(x) for x in (project / "data/synthesize/test.jsonl").read_text().splitlines()]
    assert [(t["id"], t["relevant_ids"], t["origin"]) for t in tests] == [
        ("h1", ["c1"], "human"),
        ("synthetic-test-c4-0", ["c4"], "synthetic"),
    ]
    # The human question's chunk c1 gets training questions (protocol include); c4, held out for a synthetic
    # test question, never does.
    assert {q["chunk_id"] for q in questions(project)} == {"c0", "c1", "c2", "c3", "c5"}
    report = json.loads((project / "data/synthesize/report.json").read_text())
    assert report["protocol"] == "include" and "stay excluded" in report["protocol_note"]
