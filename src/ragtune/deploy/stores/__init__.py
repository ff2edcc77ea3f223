"""Vector stores that `ragtune index --store URL` fills with a pipeline's document vectors and texts, and that
`ragtune search --store URL` queries with the adapted query vectors.

- `postgresql://user:password@host:port/db`: PostgreSQL with pgvector (`pgvector.PgVectorStore`); exact
  search, an HNSW index, and the hybrid in SQL (full-text ranking fused with the vector ranking by RRF).
- `lancedb://PATH`: LanceDB, embedded in the process, a folder on disk (`lance.LanceStore`); exact (flat)
  search, an IVF-HNSW index, and BM25 full-text search fused with the vector ranking by ragtune's RRF.

Every store records what its index was built from (`IndexIdentity`: embedder fingerprint, dimension, corpus
fingerprint) and refuses other vectors. Filling is idempotent and resumable (`index_into`): rows go in by
batches, each committed; a rerun adds only the ids the store lacks. Clients are the `stores` extra.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

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
    from ...credentials import redact

    return redact(url)


def open_store(url: str, table: str = "ragtune_chunks", connect_timeout: float = 5.0) -> VectorStore:
    """The store a `--store` URL names: postgresql://... (pgvector) or lancedb://PATH."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
        raise RagtuneError(f"--table {table!r}: use lower-case letters, digits and _ (a SQL identifier)")
    if url.startswith(("postgresql://", "postgres://")):
        from .pgvector import PgVectorStore

        return PgVectorStore(url, table, connect_timeout)
    if url.startswith("lancedb://"):
        from .lance import LanceStore

        return LanceStore(url.removeprefix("lancedb://"), table)
    raise RagtuneError(
        f"--store {hide_password(url)!r}: unknown store; use postgresql://user@host:port/db (pgvector) "
        "or lancedb://PATH (an embedded LanceDB folder)"
    )


@dataclass(frozen=True)
class IndexReport:
    added: int
    already: int
    hnsw_built: bool
    seconds: float


def index_into(
    store: VectorStore,
    identity: IndexIdentity,
    rows: Rows,
    batch_size: int = 1000,
    hnsw: HnswParams | None = None,
    progress=None,
) -> IndexReport:
    """Fill `store` with the `rows` it lacks, `batch_size` rows per committed transaction, then build the HNSW
    index when asked. A store holding other vectors is refused (IndexIdentity.check_same); a rerun after a
    kill adds what is missing; a rerun after success adds nothing."""
    start = time.perf_counter()
    stored = store.identity()
    if stored is None:
        store.create(identity)
    else:
        identity.check_same(stored, store.where)
    have = store.stored_ids()
    todo = np.array([i for i, cid in enumerate(rows.ids) if cid not in have], dtype=np.int64)
    for s in range(0, len(todo), batch_size):
        pick = todo[s : s + batch_size]
        store.add(_take(rows, pick))
        if progress is not None:
            progress(s + len(pick), len(todo))
    built = store.build_hnsw(hnsw) if hnsw is not None else False
    return IndexReport(len(todo), len(rows) - len(todo), built, time.perf_counter() - start)


def _take(rows: Rows, pick: np.ndarray) -> Rows:
    return Rows(
        rows.rows[pick],
        [rows.ids[i] for i in pick],
        [rows.titles[i] for i in pick],
        [rows.texts[i] for i in pick],
        [rows.lexical[i] for i in pick],
        rows.emb[pick],
    )
