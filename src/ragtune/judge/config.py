"""params.yaml `judge`: how many questions are judged, how answers are built, the report's statistics; and the
`llm` section the judge runs with."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field

from ..params import Section

log = logging.getLogger(__name__)


class JudgeParams(Section):
    """How many questions are judged, how answers are built, and the statistics of the report.
    The LLM itself (backend, model, prices) comes from the shared `llm` section."""

    # Defaults fit the offline budget (SmolLM2 on 2 cores, ~4 minutes); with Claude, raise them.
    max_questions: int | None = Field(8, ge=1, le=100_000)  # seeded subset of the test set; null: all
    # `ict` (the default question generator) is no language model: the judge then uses this backend.
    fallback_backend: Literal["llamacpp", "anthropic"] = "llamacpp"
    seed: int = 42
    top_k: int = Field(3, ge=1, le=50)  # chunks in each answer's context
    max_chunk_chars: int = Field(600, ge=100, le=100_000)  # each context chunk is cut to this length
    max_reference_chars: int = Field(1500, ge=100, le=200_000)  # relevant-chunk references are cut here
    answer_max_tokens: int = Field(150, ge=16, le=8192)  # also bounds the answer: 3 chars a token
    judge_max_tokens: int = Field(256, ge=32, le=8192)
    answer_temperature: float = Field(0.0, ge=0.0, le=2.0)  # the judge itself always runs at 0
    # Local models only (llamacpp; the Anthropic API has no such setting, so it is neither sent nor keyed
    # there). Above 1 it penalises tokens repeated in the last 64, which stops the loops a small model falls
    # into at temperature 0. Answers only: on the judge's scores it would push repeated integers apart.
    answer_repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    swap_order: bool = True  # judge each pair in both orders (position-bias control)
    schema_retries: int = Field(1, ge=0, le=5)  # re-asks after a reply that breaks the schema
    answer_prompt: str = Field("answer_v1", pattern=r"^[A-Za-z0-9_.-]+$")  # src/ragtune/prompts/<name>.txt
    judge_prompt: str = Field("judge_v1", pattern=r"^[A-Za-z0-9_.-]+$")
    bootstrap_resamples: int = Field(10_000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


def judge_llm_params(llm_params: Any, params: JudgeParams) -> Any:
    """The `llm` section the judge runs with: `ict` draws pseudo-queries and cannot answer or judge,
    so with `llm.backend: ict` the judge uses `judge.fallback_backend` (same section otherwise)."""
    if llm_params.backend == "ict":
        log.info(
            "judge: llm.backend is ict (no language model); answering and judging with %s (judge.fallback_backend)",
            params.fallback_backend,
        )
        return llm_params.model_copy(update={"backend": params.fallback_backend})
    return llm_params
