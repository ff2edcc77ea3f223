"""Input tokens of Messages requests before they are sent: the API's own count (`messages.count_tokens`,
when a key is set) or a local estimate, each with the relative error it is stated to have.

A request body is what `AnthropicBackend.request_params` builds (model, system, messages, tools,
tool_choice, ...); only the fields that count_tokens takes are counted.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

# Tokens of the tool-use system prompt the API adds to a request with tools (Anthropic's tool-use pricing
# table for Claude 4.x models): 313 with tool_choice any/tool, 346 with auto/none.
TOOL_PROMPT_TOKENS = {"tool": 313, "any": 313, "auto": 346, "none": 346}
# Anthropic's rule of thumb for Claude: a token is about 3.5 English characters. Claude's tokenizer is not
# public, so the local estimate's error cannot be measured here; it is stated as +-35% (prose runs nearer
# 4 characters a token, JSON schemas and numbers nearer 2).
LOCAL_CHARS_PER_TOKEN = 3.5
LOCAL_ERROR = 0.35
# count_tokens "should be considered an estimate" (Anthropic): billed input may differ by a few tokens.
API_ERROR = 0.01
COUNTED_FIELDS = ("model", "system", "messages", "tools", "tool_choice")
# Shortest prefix the API caches; a shorter one is sent uncached without an error (Anthropic's prompt
# caching docs). By model name prefix; other models: 1024.
MIN_CACHEABLE = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-sonnet-4-6": 2048,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}


def min_cacheable_tokens(model: str) -> int:
    return next((n for prefix, n in MIN_CACHEABLE.items() if model.startswith(prefix)), 1024)


def countable(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Messages body that count_tokens takes (no max_tokens, sampling or metadata)."""
    return {k: body[k] for k in COUNTED_FIELDS if k in body}


def prefix_tokens(counter: Counter, body: dict[str, Any]) -> int:
    """Tokens of `body`'s tools + system prefix (what a system cache_control caches): `body` with a one-character
    user message, less that message alone (its framing included)."""
    dot = [{"role": "user", "content": "."}]
    with_prefix = counter.count({**countable(body), "messages": dot})
    return max(0, with_prefix - counter.count({"model": body["model"], "messages": dot}))


class Counter(Protocol):
    name: str
    error: float  # stated relative error of a count

    def count(self, body: dict[str, Any]) -> int: ...


class LocalCounter:
    """Characters / 3.5 over the texts the model reads, plus the tool-use system prompt; no network."""

    name = "local"
    error = LOCAL_ERROR

    def count(self, body: dict[str, Any]) -> int:
        chars = 0
        system = body.get("system") or ""
        chars += len(system) if isinstance(system, str) else sum(len(b.get("text", "")) for b in system)
        for m in body.get("messages") or []:
            content = m["content"]
            chars += len(content) if isinstance(content, str) else sum(len(b.get("text", "")) for b in content)
        tools = body.get("tools") or []
        for t in tools:
            chars += len(t["name"]) + len(t.get("description") or "") + len(json.dumps(t["input_schema"]))
        overhead = TOOL_PROMPT_TOKENS[(body.get("tool_choice") or {"type": "auto"})["type"]] if tools else 0
        return math.ceil(chars / LOCAL_CHARS_PER_TOKEN) + overhead


class ApiCounter:
    """The Messages API's own count (`client.messages.count_tokens`): free, rate-limited separately from
    messages; `with_retries` wraps each call (the backend's retry loop on 429/5xx)."""

    name = "count_tokens"
    error = API_ERROR

    def __init__(self, client: Any, with_retries: Callable[[Callable[[], Any]], Any] | None = None):
        self.client = client
        self.with_retries = with_retries or (lambda fn: fn())

    def count(self, body: dict[str, Any]) -> int:
        kw = countable(body)
        return int(self.with_retries(lambda: self.client.messages.count_tokens(**kw)).input_tokens)


@dataclass
class Counts:
    """Input tokens per request (counted, or scaled from the local estimate), and their relative error."""

    tokens: list[int]
    error: float
    counted_with: str
    counted: int  # requests the counter itself counted (the rest scaled by the sample's ratio)


def count_requests(
    bodies: Sequence[dict[str, Any]], counter: Counter, sample: int | None, concurrency: int = 4, seed: int = 0
) -> Counts:
    """Count every body, or, past `sample` bodies with the API counter, a seeded sample of them: the rest get
    the local estimate times the sample's api/local ratio, with the largest per-request deviation of that
    ratio in the sample as their error (a bound on the total's error, which averages out)."""
    if not bodies:
        return Counts([], counter.error, counter.name, 0)
    if isinstance(counter, LocalCounter) or sample is None or len(bodies) <= sample:
        return Counts(_count_all(counter, bodies, concurrency), counter.error, counter.name, len(bodies))
    local = LocalCounter()
    estimates = [local.count(b) for b in bodies]
    picked = sorted(random.Random(seed).sample(range(len(bodies)), sample))
    exact = dict(zip(picked, _count_all(counter, [bodies[i] for i in picked], concurrency)))
    ratio = sum(exact.values()) / max(1, sum(estimates[i] for i in picked))
    spread = max(abs(exact[i] / max(1, estimates[i]) / ratio - 1) for i in picked)
    tokens = [exact.get(i, round(estimates[i] * ratio)) for i in range(len(bodies))]
    scaled = sum(t for i, t in enumerate(tokens) if i not in exact)
    error = (counter.error * sum(exact.values()) + max(spread, counter.error) * scaled) / max(1, sum(tokens))
    return Counts(tokens, error, f"{counter.name} (sample of {sample}, rest scaled)", sample)


def _count_all(counter: Counter, bodies: Sequence[dict[str, Any]], concurrency: int) -> list[int]:
    if isinstance(counter, LocalCounter) or concurrency <= 1:
        return [counter.count(b) for b in bodies]
    with ThreadPoolExecutor(concurrency, thread_name_prefix="count-tokens") as ex:
        return list(ex.map(counter.count, bodies))
