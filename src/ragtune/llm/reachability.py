"""Fail fast on an endpoint that never answers: when the first calls of a run all fail to connect, the run
stops within seconds with an error naming the URL param, instead of retrying every call with backoff for
minutes (hours on a large corpus) before failing anyway."""

from __future__ import annotations

import threading

from ..credentials import redact
from ..errors import RagtuneError


class ReachabilityGuard:
    """Counts connection failures until the server first answers (any HTTP status is an answer). At `limit`
    failures with no answer, `connection_failed` raises; `limit` 0 never does. Safe to share between threads."""

    def __init__(self, limit: int, url: str, param: str, hint: str):
        self.limit, self.url, self.param, self.hint = limit, url, param, hint
        self.answered = False
        self.failures = 0
        self._lock = threading.Lock()

    def answer(self) -> None:
        """The server answered: connection failures from now on are retried as usual."""
        self.answered = True

    def connection_failed(self, detail: str) -> None:
        with self._lock:
            if self.answered or not self.limit:
                return
            self.failures += 1
            if self.failures < self.limit:
                return
        raise RagtuneError(
            f"{self.param}: the first {self.failures} calls to {redact(self.url)} all failed to connect, and "
            f"nothing has answered ({redact(detail)}). Check that the server is up and that the URL is right "
            f"({self.hint}), and your network or proxy. Finished calls are kept: a rerun resumes"
        )
