"""What every LLM backend shares: the request and result types, the output schema, and the protocol.

A backend turns `GenRequest`s (one per chunk) into `GenResult`s and hands each to a callback as soon
as it is finished, so the caller can commit it to the cache at once. A failed call is a `GenResult`
with `ok=False` and a short reason code (`rate_limited`, `max_tokens`, `refusal`, `invalid_output`,
…), never an empty success.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

# The one output shape every backend produces: {"questions": ["…", …]}.
TOOL_NAME = "record_questions"


def output_schema(max_items: int) -> dict[str, Any]:
    """JSON schema of a generator's answer: up to `max_items` strings under `questions`."""
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": max_items,
                "description": "The questions, each one self-contained and answerable from the passage.",
            }
        },
        "required": ["questions"],
        "additionalProperties": False,
    }


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    questions: list[StrictStr]


def parse_output(obj: Any) -> list[str]:
    """Validate a decoded answer against the schema; raise ValueError saying what is wrong."""
    try:
        return list(_Output.model_validate(obj).questions)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "answer"
        raise ValueError(f"{where}: {first['msg']}") from None


@dataclass(frozen=True)
class ToolSpec:
    """A caller-defined structured output (the judge's answers and scores): the backend forces this
    tool (Anthropic) or constrains decoding to its schema (llama.cpp) and returns the decoded input
    as `GenResult.output`, unvalidated: the caller checks it against its own model."""

    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class GenRequest:
    """One chunk to generate questions for. `key` is the cache key (64 hex chars, also the batch
    custom_id); `system` and `user` are the rendered prompt; `passage` is the raw chunk text (used by
    backends without a prompt, such as ICT).

    A generic structured request sets `tool` (and may set `max_tokens` / `temperature`, which then
    replace llm.max_tokens / llm.temperature for this request; the caller puts them in its key).
    `repeat_penalty` (> 1 penalises recently generated tokens) is sent only by backends whose
    `takes_repeat_penalty` is true; the caller keys it only for those."""

    key: str
    system: str
    user: str
    passage: str = ""
    max_items: int = 0
    tool: ToolSpec | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    repeat_penalty: float | None = None


def request_tool(req: GenRequest) -> ToolSpec:
    """The tool a request asks for: its own, or the question generator's."""
    if req.tool is not None:
        return req.tool
    return ToolSpec(TOOL_NAME, "Record the questions written for the passage.", output_schema(req.max_items))


def read_reply(req: GenRequest, obj: Any) -> dict[str, Any]:
    """GenResult fields from a decoded reply: `questions` for the generator (validated here), `output`
    for a generic tool (only required to be a JSON object). ValueError says what is wrong."""
    if req.tool is None:
        return {"questions": parse_output(obj)}
    if not isinstance(obj, dict):
        raise ValueError(f"the {req.tool.name} input is {type(obj).__name__}, not a JSON object")
    return {"output": obj}


@dataclass
class Usage:
    tokens_in: int = 0  # all input tokens, cached or not
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, other: Usage) -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write

    def as_dict(self) -> dict[str, int]:
        return {
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
        }


@dataclass
class GenResult:
    key: str
    ok: bool
    questions: list[str] = field(default_factory=list)
    reason: str | None = None  # failure reason code when not ok
    detail: str | None = None  # a short human-readable explanation (never a secret)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0  # None: the model has no price in params
    seconds: float = 0.0
    attempts: int = 1
    output: Any = None  # the decoded tool input of a generic structured request (GenRequest.tool)

    @classmethod
    def failure(cls, key: str, reason: str, detail: str | None = None, **kw: Any) -> GenResult:
        return cls(key=key, ok=False, reason=reason, detail=(detail or "")[:500] or None, **kw)

    def to_json(self) -> dict[str, Any]:
        out = {
            "status": "ok" if self.ok else "failed",
            "questions": self.questions,
            "reason": self.reason,
            "detail": self.detail,
            "usage": self.usage.as_dict(),
            "cost_usd": self.cost_usd,
            "seconds": round(self.seconds, 4),
            "attempts": self.attempts,
        }
        if self.output is not None:
            out["output"] = self.output
        return out

    @classmethod
    def from_json(cls, key: str, obj: dict[str, Any]) -> GenResult:
        return cls(
            key=key,
            ok=obj.get("status") == "ok",
            questions=list(obj.get("questions") or []),
            reason=obj.get("reason"),
            detail=obj.get("detail"),
            usage=Usage(**(obj.get("usage") or {})),
            cost_usd=obj.get("cost_usd"),
            seconds=float(obj.get("seconds") or 0.0),
            attempts=int(obj.get("attempts") or 1),
            output=obj.get("output"),
        )


OnResult = Callable[[GenResult], None]


class StateStore(Protocol):
    """Where a backend keeps what must survive a crash besides results (e.g. pending batch ids)."""

    def get_json(self, key: str) -> Any | None: ...

    def put_json(self, key: str, obj: Any, meta: Any = None) -> None: ...


class Backend(Protocol):
    """A question generator. `identity()` is everything about the backend that determines its
    output (kind, exact model, sampling params): it goes into every cache key."""

    name: str
    model: str
    cacheable: bool
    uses_prompt: bool
    # The same request always gets the same reply (a seeded local model on one slot): a content failure it
    # gave is kept in the cache instead of being sent again on every run (ragtune.llm.runner).
    deterministic: bool
    # Sends a request's `repeat_penalty` (a local model's sampler setting; the Anthropic API has none).
    takes_repeat_penalty: bool

    def identity(self) -> dict[str, Any]: ...

    def generate(
        self,
        requests: Sequence[GenRequest],
        on_result: OnResult,
        stop: threading.Event,
        state: StateStore | None = None,
    ) -> None: ...

    def close(self) -> None: ...
