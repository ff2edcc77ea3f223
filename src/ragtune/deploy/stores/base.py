"""What every vector store shares: the identity of an index, a batch of rows, HNSW settings, the search
results, and the `VectorStore` protocol that `pgvector.PgVectorStore` and `lance.LanceStore` implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from ...credentials import redact
from ...errors import RagtuneError


@dataclass(frozen=True)
class IndexIdentity:
    """What an index holds: vectors of `embedder` (its `embedder_fingerprint`, `dim`-d) for the corpus whose
    `corpus_fingerprint` is that (ids, titles, texts), `chunks` rows; `text_search` the stemmer language the
    full-text index uses."""

    embedder: str
    embedder_fingerprint: str
    dim: int
    corpus_fingerprint: str
    chunks: int
    text_search: str = "english"

    def as_dict(self) -> dict:
        return asdict(self)

    def check_same(self, stored: IndexIdentity, where: str) -> None:
        """Refuse an index built from other vectors, naming each differing field with both values."""
        fields = ("embedder_fingerprint", "dim", "corpus_fingerprint")
        diff = [f for f in fields if getattr(stored, f) != getattr(self, f)]
        if diff:
            both = "; ".join(f"{f}: index {getattr(stored, f)!r}, pipeline {getattr(self, f)!r}" for f in diff)
            raise RagtuneError(
                f"{where}: the index there was built from other vectors ({both}). Index into another table "
                "(--table) or drop that one; rerun `ragtune index` after the pipeline changes"
            )


@dataclass(frozen=True)
class Rows:
    """A batch of corpus rows to store: `rows` (n,) corpus row numbers, ids, titles, texts, `lexical` (the
    texts as BM25 indexed them), `emb` (n, dim) float32 document vectors."""

    rows: np.ndarray
    ids: list[str]
    titles: list[str | None]
    texts: list[str]
    lexical: list[str]
    emb: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class HnswParams:
    """An HNSW index: `m` links per node, `ef_construction` candidates while building, `ef_search` at query;
    `build_memory` PostgreSQL's maintenance_work_mem for the build (pgvector builds far slower once the graph
    outgrows it: 100k 384-d vectors need several hundred MB; the server default is 64MB)."""

    m: int = 16
    ef_construction: int = 64
    ef_search: int = 100
    build_memory: str = "1GB"


# one ranking per question: (ids best first, scores) as the store returned them
Hits = list[tuple[list[str], list[float]]]


class VectorStore(Protocol):
    where: str  # the URL with any password hidden, and the table: for messages

    def identity(self) -> IndexIdentity | None:
        """What the index was built from; None when the table does not exist yet."""

    def create(self, identity: IndexIdentity) -> None:
        """Create the table (and its full-text index) and record `identity`."""

    def stored_ids(self) -> set[str]: ...

    def add(self, batch: Rows) -> None:
        """Insert the rows in one committed transaction (none of them on failure)."""

    def build_hnsw(self, params: HnswParams) -> bool:
        """Build the HNSW index unless it exists; True when built now."""

    def search(self, query_emb: np.ndarray, k: int, exact: bool = True, ef_search: int = 100) -> Hits:
        """Top-k by inner product for each query of `query_emb` (n, dim): exact (every row scored) or
        through the HNSW index."""

    def hybrid(self, questions: Sequence[str], query_emb: np.ndarray, k: int, rrf_k: float, candidates: int) -> Hits:
        """The store's hybrid: its full-text ranking and its vector ranking (each `candidates` deep) fused by
        RRF with constant `rrf_k`."""

    def close(self) -> None: ...


def hide_password(url: str) -> str:
    """`url` with the password of `scheme://user:password@host` (and any secret query value) replaced by ***:
    ragtune.credentials.redact, the one redaction helper."""
    return redact(url)
