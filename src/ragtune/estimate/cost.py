"""Tokens and USD of a planned stage: input counted per request, output bounded by max_tokens, prompt
caching and the batch discount applied as params say, each number with the range it can take.

Prompt caching (llm.anthropic.prompt_caching): the tools + system prefix of a group of requests is written
once and read by the rest, when it reaches the model's minimum cacheable length; concurrent first calls may
each write it (direct calls: up to llm.anthropic.concurrency writes) and Message Batches cache best-effort
(high end: every request writes). Output is unknown before a call: point half of max_tokens, low 0, high
max_tokens; a stage that re-asks after a broken reply (judge.schema_retries) may send each request again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..llm.anthropic_backend import estimate_cost
from ..llm.base import Usage
from ..llm.config import LlmParams
from .plan import Planned
from .tokens import Counts, min_cacheable_tokens

OUTPUT_POINT_SHARE = 0.5  # share of max_tokens a reply is assumed to use (the point estimate)


@dataclass
class Range:
    point: float
    low: float
    high: float

    def rounded(self, digits: int) -> Range:
        return Range(round(self.point, digits), round(self.low, digits), round(self.high, digits))


@dataclass
class StageEstimate:
    """One stage's estimate; token ranges are (point, low, high) totals over the requests to send."""

    stage: str
    backend: str
    model: str
    calls: int
    cached: int
    to_send: int
    input_tokens: Range
    output_tokens: Range
    cache_write_tokens: Range
    cache_read_tokens: Range
    usd: Range | None  # None: the model has no price in llm.prices
    counted_with: str
    input_error: float  # stated relative error of the counted input
    batch: bool
    prompt_caching: str  # on | off | below minimum (N tokens < M)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_stage(planned: Planned, counts: Counts, prefixes: dict[str, int], llm: LlmParams) -> StageEstimate:
    """`counts`: input tokens of each planned request as rendered; `prefixes`: tokens of each request's tools
    + system prefix, by `prefix_key`."""
    p = llm.anthropic
    err = counts.error
    tokens_in = [t + s.point for t, s in zip(counts.tokens, planned.slots)]
    in_low = [(t * (1 - err) + s.low) for t, s in zip(counts.tokens, planned.slots)]
    in_high = [(t * (1 + err) + s.high) for t, s in zip(counts.tokens, planned.slots)]
    out_max = [r.max_tokens or llm.max_tokens for r in planned.requests]
    sends = 1 + planned.retries  # the high end: every request re-asked

    groups: dict[str, int] = defaultdict(int)
    for r in planned.requests:
        groups[prefix_key(r)] += 1
    minimum = min_cacheable_tokens(p.model)
    write = Range(0, 0, 0)
    read = Range(0, 0, 0)
    caching = "off"
    if p.prompt_caching:
        caching = "on"
        for key, n in groups.items():
            size = prefixes[key]
            if size < minimum:
                caching = f"below minimum ({size} < {minimum} tokens: sent uncached)"
                continue
            worst_writes = n if p.batch else min(n, p.concurrency)
            lo, hi = size * (1 - err), size * (1 + err)
            write = Range(write.point + size, write.low + lo, write.high + worst_writes * hi * sends)
            read = Range(read.point + (n - 1) * size, read.low + (n - 1) * hi, read.high + (n - worst_writes) * lo)
    input_tokens = Range(sum(tokens_in), sum(in_low), sum(in_high) * sends)
    output = Range(sum(out_max) * OUTPUT_POINT_SHARE, 0, sum(out_max) * sends)
    price = llm.prices.get(p.model)
    factor = llm.batch_discount if p.batch else 1.0

    def usd(tin: float, tout: float, cw: float, cr: float) -> float | None:
        return estimate_cost(Usage(round(tin), round(tout), round(cr), round(cw)), price, factor)

    point = usd(input_tokens.point, output.point, write.point, read.point)
    usd_range = None
    if point is not None:
        # low: the fewest input tokens with the most read from the cache; high: the most, with the most writes
        low = usd(input_tokens.low, output.low, write.low, min(read.low, input_tokens.low - write.low))
        high = usd(input_tokens.high, output.high, write.high, read.high)
        assert low is not None and high is not None  # priced like the point
        usd_range = Range(point, low, high).rounded(6)
    return StageEstimate(
        stage=planned.stage,
        backend=planned.backend,
        model=planned.model,
        calls=planned.calls,
        cached=planned.cached,
        to_send=len(planned.requests),
        input_tokens=input_tokens.rounded(0),
        output_tokens=output.rounded(0),
        cache_write_tokens=write,
        cache_read_tokens=read,
        usd=usd_range,
        counted_with=counts.counted_with,
        input_error=round(err, 4),
        batch=p.batch,
        prompt_caching=caching,
        notes=list(planned.notes),
    )


def prefix_key(req: Any) -> str:
    """Requests with the same tools and system prompt share one cached prefix."""
    tool = req.tool.name if req.tool is not None else "questions"
    return f"{tool}\0{req.max_items}\0{req.system}"


def local_stage(stage: str, backend: str, calls: int | None, note: str) -> StageEstimate:
    """A stage that pays no API: a local model or no model (its calls, when known)."""
    zero = Range(0, 0, 0)
    return StageEstimate(
        stage, backend, "-", calls or 0, 0, calls or 0, zero, zero, zero, zero, zero, "-", 0.0, False, "-", [note]
    )


def total_usd(stages: Sequence[StageEstimate]) -> Range | None:
    if any(s.usd is None for s in stages):
        return None
    return Range(*(round(sum(getattr(s.usd, f) for s in stages), 6) for f in ("point", "low", "high")))
