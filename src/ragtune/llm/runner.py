"""A cached runner over any backend: look every request up in a ContentCache, send only the misses,
commit each result the moment it arrives, and count what the run cost.

Requests carry their own cache key (the caller hashes backend identity, prompt and input into it).
A cached success is reused. A cached failure is sent again (the cause may have passed), except a content
failure (the reply itself was wrong: invalid output, cut at max_tokens, refused) from a deterministic backend,
which would give the same reply again: that one is kept, and reruns stop paying for it. Requests with the
same key are sent once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cache import ContentCache
from .base import Backend, GenRequest, GenResult, Usage

log = logging.getLogger(__name__)

# Failures of the reply's content, not of its transport (server errors, rate limits, batch expiry): a backend
# that answers one request always the same way gives them again.
CONTENT_FAILURES = frozenset({"invalid_output", "max_tokens", "refusal"})


@dataclass
class RunStats:
    """What one or more `run_cached` calls did. `cost_usd` is this run's spend (None if a model has no
    price); `results_cost_usd` is what every result used cost when it was made, cached ones included."""

    calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    failures_retried: int = 0  # failures recorded by an earlier run and sent again
    failures_kept: int = 0  # content failures of a deterministic backend from an earlier run, not resent
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0
    results_cost_usd: float | None = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "failures_retried": self.failures_retried,
            "failures_kept": self.failures_kept,
            **self.usage.as_dict(),
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
            "results_cost_usd": None if self.results_cost_usd is None else round(self.results_cost_usd, 6),
            "seconds": round(self.seconds, 2),
        }


def _add_cost(total: float | None, cost: float | None) -> float | None:
    return None if total is None or cost is None else total + cost


def run_cached(
    backend: Backend,
    cache: ContentCache,
    requests: Sequence[GenRequest],
    stats: RunStats | None = None,
    stop: threading.Event | None = None,
    meta: dict[str, Any] | None = None,
    progress: Any = None,
    on_result: Callable[[GenResult], None] | None = None,
) -> dict[str, GenResult]:
    """Results by key for `requests` (cache hits and fresh calls). Requests left undone because `stop`
    was set are missing from the result. `stats` (if given) is updated in place.

    `progress`, if given, is tqdm-like: its total is set to the number of calls to make and it is
    updated once per fresh result. `on_result` is called with each fresh result after it is committed
    (under the runner's lock, with `stats` already updated)."""
    stats = stats if stats is not None else RunStats()
    stop = stop or threading.Event()
    t0 = time.perf_counter()
    unique = {r.key: r for r in requests}
    results: dict[str, GenResult] = {}
    # A third-party backend that does not say is treated as sampling anew each time.
    deterministic = bool(getattr(backend, "deterministic", False))
    if backend.cacheable:
        for key, raw in cache.get_many(list(unique)).items():
            r = GenResult.from_json(key, json.loads(raw))
            if r.ok:
                results[key] = r
            elif deterministic and r.reason in CONTENT_FAILURES:
                results[key] = r
                stats.failures_kept += 1
            else:
                stats.failures_retried += 1
    stats.cache_hits += len(results)
    todo = [r for k, r in unique.items() if k not in results]
    stats.cache_misses += len(todo)
    lock = threading.Lock()

    def commit(r: GenResult) -> None:
        if backend.cacheable:  # commit at once: a crash loses at most the calls in flight
            cache.put_json(
                r.key,
                r.to_json(),
                meta={
                    "backend": backend.name,
                    "model": backend.model,
                    "status": "ok" if r.ok else "failed",
                    **(meta or {}),
                },
            )
        with lock:
            results[r.key] = r
            stats.calls += 1
            stats.usage.add(r.usage)
            stats.cost_usd = _add_cost(stats.cost_usd, r.cost_usd)
            if progress is not None:
                progress.update(1)
            if on_result is not None:
                on_result(r)

    if progress is not None:
        progress.total = len(todo)
        progress.refresh()
    if todo:
        log.info(
            "llm: %d requests to %s (%s), %d from the cache",
            len(todo),
            backend.name,
            backend.model,
            len(unique) - len(todo),
        )
        # The cache doubles as the state store: pending Message Batches survive a crash.
        backend.generate(todo, commit, stop, cache)
    for r in results.values():
        stats.results_cost_usd = _add_cost(stats.results_cost_usd, r.cost_usd)
    stats.seconds += time.perf_counter() - t0
    return results
