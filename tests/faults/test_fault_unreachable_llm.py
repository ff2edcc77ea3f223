"""Fault case 3 (issue 30): an LLM endpoint that never answers stops the stage after the first few calls
(`llm.anthropic.fail_fast_calls`), with an error naming `llm.anthropic.base_url`, instead of retrying every call
six times with backoff; a server that has answered once is retried as before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
from conftest import make_chunks, write_project
from fake_anthropic import FakeAnthropic

from ragtune.errors import RagtuneError
from ragtune.llm.reachability import ReachabilityGuard

STAGE = ["-m", "ragtune.stages.synthesize"]


class HangUp:
    """A TCP server that accepts each connection and closes it at once: no HTTP answer ever. Counts them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


def synthesize(project, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *STAGE],
        cwd=project,
        env={**os.environ, "ANTHROPIC_API_KEY": "sk-test", "RAGTUNE_LOG": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_unreachable_llm_endpoint_stops_after_the_first_calls_naming_the_param(tmp_path):
    server = HangUp()
    try:
        # Default retries (6, with backoff from 1 s): without fail-fast, 12 chunks would take minutes.
        llm = {"backend": "anthropic", "anthropic": {"base_url": server.url, "concurrency": 2}}
        project = write_project(tmp_path / "p", make_chunks(12), llm=llm)
        proc = synthesize(project)
    finally:
        server.close()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "llm.anthropic.base_url: the first 3 calls to http://127.0.0.1:" in proc.stderr
    assert "Check that the server is up and that the URL is right" in proc.stderr
    # Three failed connections decide; the two calls in flight may each try once more as the run stops.
    assert 3 <= server.connections <= 5


def test_fail_fast_can_be_turned_off_and_never_trips_once_the_server_answered(tmp_path):
    guard = ReachabilityGuard(2, "http://x", "llm.anthropic.base_url", "check it")
    guard.connection_failed("refused")
    with pytest.raises(RagtuneError, match="the first 2 calls to http://x all failed to connect"):
        guard.connection_failed("refused")
    answered = ReachabilityGuard(2, "http://x", "p", "h")
    answered.answer()
    for _ in range(10):
        answered.connection_failed("reset")  # a server that answered before: retried with backoff as usual
    off = ReachabilityGuard(0, "http://x", "p", "h")
    for _ in range(10):
        off.connection_failed("refused")

    fake = FakeAnthropic().start()  # a real server that answers: the stage runs through
    try:
        llm = {"backend": "anthropic", "anthropic": {"base_url": fake.url, "fail_fast_calls": 1}}
        project = write_project(tmp_path / "ok", make_chunks(4), llm=llm)
        proc = synthesize(project)
    finally:
        fake.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
