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
from dataclasses import dataclass

import numpy as np

from ...errors import RagtuneError
from .base import HnswParams, IndexIdentity, Rows, VectorStore, hide_password


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
