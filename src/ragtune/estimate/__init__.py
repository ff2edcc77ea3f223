"""`ragtune estimate`: tokens and USD of the synthesize and judge stages under the current params, before any
call. Input tokens come from the API's count_tokens when the key is set (else a local estimate with its
stated error), for exactly the requests the stages would send (their own builders, ragtune.estimate.plan),
less those the LLM caches already answer; ragtune.estimate.cost prices them with caching and batch discount.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .cost import StageEstimate, estimate_stage, local_stage, prefix_key, total_usd
from .plan import Planned, offline_backend, plan_judge, plan_synthesize
from .tokens import ApiCounter, Counter, LocalCounter, count_requests, prefix_tokens

SYNTH_CACHE = Path("data/cache/llm.sqlite")
JUDGE_CACHE = Path("data/cache/judge_llm.sqlite")
FETCH = Path("data/fetch")


@dataclass
class Estimate:
    stages: list[StageEstimate]
    counter: str

    def as_dict(self) -> dict[str, Any]:
        total = total_usd(self.stages)
        return {
            "stages": [s.as_dict() for s in self.stages],
            "usd_total": None if total is None else vars(total),
            "input_counted_with": self.counter,
        }


def make_counter(llm: Any, local: bool) -> Counter:
    """The API's count when the key is set (and `local` is not asked for), else the local estimate."""
    if local or not os.environ.get(llm.anthropic.api_key_env, "").strip():
        return LocalCounter()
    from ..llm.anthropic_backend import AnthropicBackend

    backend = AnthropicBackend(llm)  # checks the key; its client and retry loop count the tokens
    return ApiCounter(backend.client, backend._with_retries)


def price_planned(planned: Planned, counter: Counter, llm: Any, sample: int | None) -> StageEstimate:
    bodies = [offline_backend(llm).request_params(r) for r in planned.requests]
    counts = count_requests(bodies, counter, sample, llm.anthropic.concurrency)
    prefixes: dict[str, int] = {}
    for req, body in zip(planned.requests, bodies):
        key = prefix_key(req)
        if key not in prefixes:
            prefixes[key] = prefix_tokens(counter, body)
    return estimate_stage(planned, counts, prefixes, llm)


def run_estimate(params_file: Path = Path("params.yaml"), local: bool = False, sample: int | None = 200) -> Estimate:
    """Estimate both LLM stages from the project in the current directory (fetch's outputs must exist)."""
    from ..errors import RagtuneError
    from ..judge.config import JudgeParams, judge_llm_params
    from ..llm import LlmParams
    from ..params import load_section
    from ..paths import PipelinePaths
    from ..synthesis.run import SynthesizeParams

    llm = load_section("llm", LlmParams, params_file)
    synth = load_section("synthesize", SynthesizeParams, params_file)
    judge = load_section("judge", JudgeParams, params_file)
    if not (FETCH / "corpus.jsonl").is_file():
        raise RagtuneError(f"{FETCH / 'corpus.jsonl'} not found: run `dvc repro fetch` first (it makes no LLM call)")
    judge_llm = judge_llm_params(llm, judge)
    paid = llm.backend == "anthropic" or judge_llm.backend == "anthropic"
    counter = make_counter(llm, local) if paid else LocalCounter()
    stages = []
    if llm.backend == "anthropic":
        stages.append(price_planned(plan_synthesize(llm, synth, FETCH, SYNTH_CACHE), counter, llm, sample))
    else:
        stages.append(local_stage("synthesize", llm.backend, None, f"llm.backend {llm.backend}: no API cost"))
    paths = PipelinePaths()
    if judge_llm.backend != "anthropic":
        stages.append(local_stage("judge", judge_llm.backend, None, f"judge on {judge_llm.backend}: no API cost"))
    else:
        note = None
        if not paths.test.is_file():  # before synthesize: fetch's test questions (synthetic ones come later)
            paths = replace(paths, test=FETCH / "test.jsonl")
            note = "judge: synthesize has not run: fetch's test questions only (no synthetic test questions yet)"
        planned = plan_judge(judge_llm, judge, paths, JUDGE_CACHE)
        planned.notes += [note] if note else []
        stages.append(price_planned(planned, counter, llm, sample))
    return Estimate(stages, counter.name)


def format_estimate(est: Estimate) -> str:
    """A short table per stage, then what the ranges mean."""
    head = ("stage", "model", "calls", "cached", "send", "input tok", "output tok", "cache w/r", "USD (range)")
    rows = [head]
    for s in est.stages:
        usd = "-" if s.usd is None else f"{s.usd.point:.4f} ({s.usd.low:.4f}-{s.usd.high:.4f})"
        rows.append(
            (
                s.stage,
                s.model,
                f"{s.calls:,}",
                f"{s.cached:,}",
                f"{s.to_send:,}",
                f"{s.input_tokens.point:,.0f} ±{s.input_error:.0%}",
                f"{s.output_tokens.point:,.0f} (≤{s.output_tokens.high:,.0f})",
                f"{s.cache_write_tokens.point:,.0f}/{s.cache_read_tokens.point:,.0f}",
                usd,
            )
        )
    total = total_usd(est.stages)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    if total is not None:
        lines.append(f"total USD {total.point:.4f} (range {total.low:.4f}-{total.high:.4f})")
    lines.append(
        f"input counted with {est.counter}; output is unknown before a call: half of max_tokens (0 to max_tokens); "
        "the range also spans prompt-cache writes and, for the judge, schema retries"
    )
    for s in est.stages:
        if s.prompt_caching not in ("on", "off", "-"):
            lines.append(f"{s.stage}: prompt caching {s.prompt_caching}")
        lines += [f"{s.stage}: {n}" if not n.startswith(s.stage) else n for n in s.notes]
    return "\n".join(lines)
