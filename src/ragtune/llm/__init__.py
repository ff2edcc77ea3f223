"""LLM backends behind one interface (see `base.Backend`): `anthropic` (Claude through the official
SDK), `llamacpp` (a local GGUF model through xllamacpp) and `ict` (no model: Inverse-Cloze-Task
pseudo-queries). The `llm` params section picks one; synthesize uses it now, judge will reuse it."""

from __future__ import annotations

from .base import Backend, GenRequest, GenResult, ToolSpec, Usage, output_schema, parse_output
from .config import AnthropicParams, IctParams, LlamaCppParams, LlmParams, Price
from .runner import RunStats, run_cached

__all__ = [
    "Backend",
    "GenRequest",
    "GenResult",
    "Usage",
    "output_schema",
    "parse_output",
    "AnthropicParams",
    "IctParams",
    "LlamaCppParams",
    "LlmParams",
    "Price",
    "make_backend",
    "ToolSpec",
    "RunStats",
    "run_cached",
]


def make_backend(params: LlmParams) -> Backend:
    """Build the configured backend. Checks prerequisites (API key, model file) before any work."""
    if params.backend == "anthropic":
        from .anthropic_backend import AnthropicBackend

        return AnthropicBackend(params)
    if params.backend == "llamacpp":
        from .llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend(params)
    from .ict import IctBackend

    return IctBackend(params)
