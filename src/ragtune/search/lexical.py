"""BM25 lexical baseline over the same chunks, with the maintained `bm25s` package.

The index is built once per corpus; `top_k` returns corpus row indices in the same layout as
`retrieval.exact_top_k`, so the same metric code scores every arm. A chunk with BM25 score 0 shares no
term with the query: it is not "retrieved" and its slot holds -1 rather than an arbitrary chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from ..params import Section

log = logging.getLogger(__name__)


def _bm25s():
    import bm25s

    # bm25s sets its logger to DEBUG on import and logs every index build; keep stage output readable.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


class Bm25Params(Section):
    """The BM25 arm of eval. `stemmer` is a Snowball language (PyStemmer) or null for none."""

    enabled: bool = True
    k1: float = Field(1.5, gt=0.0, le=10.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stopwords: Literal["en"] | None = "en"
    stemmer: Literal["english", "porter", "german", "french", "spanish", "italian", "dutch"] | None = "english"
    include_title: bool | Literal["auto"] = "auto"  # index "title + text" (auto: as embedding.include_title)


def _stemmer(name: str | None):
    if name is None:
        return None
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(name).stemWords


class Bm25Index:
    """BM25 over `texts` (row i = corpus row i). `top_k(queries, k)` -> (scores, indices), both (n, k)."""

    def __init__(self, texts: Sequence[str], params: Bm25Params = Bm25Params()):  # noqa: B008 (frozen, immutable)
        bm25s = _bm25s()

        self.params = params
        self.n_docs = len(texts)
        self._stem = _stemmer(params.stemmer)
        tokens = bm25s.tokenize(list(texts), stopwords=params.stopwords, stemmer=self._stem, show_progress=False)
        self._retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        self._retriever.index(tokens, show_progress=False)

    def top_k(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best `k` corpus rows per query, best first; ties go to the lower row; -1 where the score is 0."""
        bm25s = _bm25s()

        k = min(k, self.n_docs)
        if not queries:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        query_tokens = bm25s.tokenize(
            list(queries), stopwords=self.params.stopwords, stemmer=self._stem, show_progress=False, return_ids=False
        )
        idx, scores = self._retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        idx = np.asarray(idx, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        # bm25s orders equal scores arbitrarily; make ties deterministic: score down, then row up.
        order = np.lexsort((idx, -scores), axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        idx[scores <= 0.0] = -1
        return scores, idx
