"""BM25 lexical baseline over the same chunks, with the maintained `bm25s` package.

The index is built once per corpus; `top_k` returns corpus row indices in the same layout as
`dense.exact_top_k`, so the same metric code scores every arm. A chunk with BM25 score 0 shares no
term with the query: it is not "retrieved" and its slot holds -1 rather than an arbitrary chunk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from ..deploy.hybrid import _bm25s, bm25_tokenize, bm25_top_k, stem_function
from ..params import Section


class Bm25Params(Section):
    """The BM25 arm of eval. `stemmer` is a Snowball language (PyStemmer) or null for none."""

    enabled: bool = True
    k1: float = Field(1.5, gt=0.0, le=10.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stopwords: Literal["en"] | None = "en"
    stemmer: Literal["english", "porter", "german", "french", "spanish", "italian", "dutch"] | None = "english"
    include_title: bool | Literal["auto"] = "auto"  # index "title + text" (auto: as embedding.include_title)


class Bm25Index:
    """BM25 over `texts` (row i = corpus row i). `top_k(queries, k)` -> (scores, indices), both (n, k).
    Tokenising and ranking are `ragtune.deploy.hybrid`'s, the code the standalone hybrid loader runs."""

    def __init__(self, texts: Sequence[str], params: Bm25Params = Bm25Params()):  # noqa: B008 (frozen, immutable)
        self.params = params
        self.n_docs = len(texts)
        self._stem = stem_function(params.stemmer)
        tokens = bm25_tokenize(texts, params.stopwords, self._stem)
        self._retriever = _bm25s().BM25(k1=params.k1, b=params.b, method=params.method)
        self._retriever.index(tokens, show_progress=False)

    def top_k(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best `k` corpus rows per query, best first; ties go to the lower row; -1 where the score is 0."""
        return bm25_top_k(self._retriever, queries, k, self.n_docs, self.params.stopwords, self._stem)

    def save(self, folder: str | os.PathLike[str]) -> None:
        """The index as bm25s saves it (vocabulary, scores, params), for `bm25s.BM25.load(folder)`."""
        self._retriever.save(str(folder), show_progress=False)
