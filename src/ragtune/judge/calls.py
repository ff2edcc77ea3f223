"""The judge's LLM seam: calls in, parsed replies out, each cached and retried on a broken schema.

`complete_with_retries` asks again with the validation error appended (`RETRYABLE` reasons only), then
records a counted failure; `make_complete` puts the content-addressed LLM cache in front of a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..cache import content_key
from .prompts import ANSWER_TOOL, JUDGE_TOOL, with_feedback

# Reasons a reply may be worth asking again with the validation error spelled out. Transport errors
# (429, 5xx) are retried inside the backend and, if they persist, on the next run.
RETRYABLE = frozenset({"invalid_output", "max_tokens"})


@dataclass(frozen=True)
class LlmCall:
    """One structured request: `item` names it in reports (e.g. `q7/adapter`, `q7/cosine_first`)."""

    kind: Literal["answer", "judge"]
    item: str
    system: str
    user: str
    tool: str
    schema: dict[str, Any]
    max_tokens: int
    temperature: float
    prompt_sha256: str
    repeat_penalty: float = 1.0  # 1: none; sent (and keyed) only to a backend that takes it


@dataclass
class LlmReply:
    """The tool input of a successful call, or a failure reason code with a short explanation."""

    ok: bool
    output: Any = None
    reason: str | None = None
    detail: str | None = None


# Sends calls (each answered at most once; cached items cost nothing) and returns replies in order.
Complete = Callable[[Sequence[LlmCall]], list[LlmReply]]


@dataclass
class Outcome:
    """Where a call ended after its schema retries: parsed value or failure, and how many attempts."""

    value: Any = None
    reason: str | None = None
    detail: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


def complete_with_retries(
    calls: Sequence[LlmCall], parse: Callable[[Any], Any], complete: Complete, retries: int
) -> list[Outcome]:
    """Run `calls` in rounds: a reply that fails `parse` (or the backend's own schema check, or stops
    at max_tokens) is asked again with the error appended, up to `retries` times; then it is a failure
    with its reason. Each round goes through `complete` as one batch."""
    outcomes = [Outcome() for _ in calls]
    pending = list(range(len(calls)))
    current = list(calls)
    for attempt in range(retries + 1):
        if not pending:
            break
        replies = complete([current[i] for i in pending])
        retry: list[int] = []
        for i, reply in zip(pending, replies):
            out = outcomes[i]
            out.attempts = attempt + 1
            if reply.ok:
                try:
                    out.value, out.reason, out.detail = parse(reply.output), None, None
                    continue
                except ValueError as exc:
                    out.reason, out.detail = "invalid_output", f"reply breaks the schema: {exc}"
            else:
                out.reason, out.detail = reply.reason or "failed", reply.detail
            if out.reason in RETRYABLE and attempt < retries:
                base = calls[i]
                current[i] = replace(base, user=with_feedback(base.user, out.detail or out.reason, base.tool))
                retry.append(i)
        pending = retry
    return outcomes


_CACHE_VERSION = "judge/v1"
_TOOL_DESCRIPTIONS = {
    ANSWER_TOOL: "Submit the answer to the question, written from the context only.",
    JUDGE_TOOL: "Submit the 1-5 scores of Answer 1 and Answer 2 on every criterion.",
}


def llm_cache_key(identity: Mapping[str, Any], call: LlmCall) -> str:
    """sha256 of everything that determines a reply: the backend (kind, exact model, seed), the prompt
    file's hash, the rendered messages, the tool and its schema, and this call's sampling params."""
    # The call's own max_tokens and temperature replace the llm section's, so those are not in the key.
    backend = {k: v for k, v in identity.items() if k not in ("max_tokens", "temperature")}
    # A penalty of 1 (none, and every call before it existed) adds nothing, so those keys stay as they were.
    penalty = () if call.repeat_penalty == 1.0 else (("repeat_penalty", call.repeat_penalty),)
    return content_key(
        _CACHE_VERSION,
        backend,
        call.kind,
        call.prompt_sha256,
        call.system,
        call.user,
        call.tool,
        call.schema,
        call.max_tokens,
        call.temperature,
        *penalty,
    )


def gen_requests(backend: Any, calls: Sequence[LlmCall]) -> list[Any]:
    """The structured GenRequests (with their cache keys) that `backend` is sent for `calls`: what the judge
    sends and `ragtune estimate` prices, built in one place."""
    from ..llm import GenRequest, ToolSpec

    identity = backend.identity()
    if not backend.takes_repeat_penalty:  # answered as if there were none: same key, nothing sent
        calls = [replace(c, repeat_penalty=1.0) for c in calls]
    return [
        GenRequest(
            key=llm_cache_key(identity, c),
            system=c.system,
            user=c.user,
            tool=ToolSpec(c.tool, _TOOL_DESCRIPTIONS.get(c.tool, c.tool), c.schema),
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            repeat_penalty=None if c.repeat_penalty == 1.0 else c.repeat_penalty,
        )
        for c in calls
    ]


def make_complete(backend: Any, cache: Any, stats: Any) -> Complete:
    """A `Complete` over the shared LLM layer: each call becomes a structured GenRequest, answered from
    the cache or by `backend` through `ragtune.llm.run_cached` (each reply committed as it arrives)."""
    from ..llm import run_cached

    def complete(calls: Sequence[LlmCall]) -> list[LlmReply]:
        requests = gen_requests(backend, calls)
        results = run_cached(backend, cache, requests, stats, meta={"stage": "judge"})
        replies = []
        for req in requests:
            r = results.get(req.key)
            if r is None:
                replies.append(LlmReply(False, reason="not_done", detail="the run stopped before this call"))
            elif r.ok:
                replies.append(LlmReply(True, r.output))
            else:
                replies.append(LlmReply(False, reason=r.reason, detail=r.detail))
        return replies

    return complete
