"""Inverse Cloze Task pseudo-queries: no model at all. Each "question" is a sentence (or a window of
one) drawn from the chunk, chosen by a generator seeded with (seed, chunk text): deterministic,
instant, and the floor every LLM backend must beat (Lee et al., 2019, "Latent Retrieval for Weakly
Supervised Open Domain Question Answering")."""

from __future__ import annotations

import hashlib
import random
import re
import threading
from typing import Any, Sequence

from .base import GenRequest, GenResult, OnResult, StateStore
from .config import LlmParams

# Sentence or clause ends: ". ", "; ", "? ", "! ", ": " before something that starts a new unit.
_SPLIT = re.compile(r"(?<=[.;:?!])\s+(?=[(‘'\"“A-Z0-9])")
# Enumeration marks at the start of a unit: "1. ", "(a) ", "(iv) ", "2.1 ".
_ENUM = re.compile(r"^\s*(?:\(?[0-9]{1,3}[a-z]?[.)]\s*|\([a-z]{1,4}\)\s*|[0-9]+(?:\.[0-9]+)+\s+)+")


def sentences(text: str) -> list[str]:
    out = []
    for part in _SPLIT.split(" ".join(text.split())):
        s = _ENUM.sub("", part).strip(" ;:,")
        if s:
            out.append(s)
    return out


def ict_queries(text: str, n: int, seed: int, min_words: int, max_words: int) -> list[str]:
    """Up to `n` distinct pseudo-queries from `text`, the same for the same (text, seed)."""
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "big"))
    cands = [s.split() for s in sentences(text)]
    cands = [w for w in cands if len(w) >= min_words]
    rng.shuffle(cands)
    out: list[str] = []
    for words in cands[:n]:
        if len(words) > max_words:
            start = rng.randrange(0, len(words) - max_words + 1)
            words = words[start:start + max_words]
        out.append(" ".join(words))
    return out


class IctBackend:
    name = "ict"
    model = "ict"
    cacheable = False  # instant and deterministic: nothing worth caching
    uses_prompt = False

    def __init__(self, params: LlmParams):
        self.params = params

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "seed": self.params.seed, **self.params.ict.model_dump()}

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult, stop: threading.Event,
                 state: StateStore | None = None) -> None:
        p = self.params.ict
        for req in requests:
            if stop.is_set():
                return
            if req.tool is not None:  # answers and judgements need a language model
                on_result(GenResult.failure(req.key, "unsupported", "the ict backend only writes pseudo-queries"))
                continue
            on_result(GenResult(key=req.key, ok=True, cost_usd=0.0,
                                questions=ict_queries(req.passage, req.max_items, self.params.seed,
                                                      p.min_words, p.max_words)))

    def close(self) -> None:
        pass
