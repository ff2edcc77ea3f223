"""LanceDB, the embedded store: a folder of Lance tables, no server. The chunks table holds (row, id, title,
text, lexical text, vector); `<table>_identity` holds one row saying what it was built from.

Each `add` is one Lance commit (a new table version): a killed run leaves the last complete version. Exact
search is LanceDB's flat scan (`bypass_vector_index`); the approximate index is IVF_HNSW_SQ with one
partition (an HNSW graph over scalar-quantised vectors). The hybrid: LanceDB's BM25 full-text index over the
lexical text (stemmed, stopwords removed) and its vector ranking, each `candidates` deep, fused by
`ragtune.deploy.hybrid.reciprocal_rank_fusion` (eval's RRF).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from ...errors import RagtuneError
from ..hybrid import reciprocal_rank_fusion
from .base import Hits, HnswParams, IndexIdentity, Rows

if TYPE_CHECKING:
    from lancedb.query import LanceVectorQueryBuilder
    from lancedb.table import Table

LANGUAGES = {"english": "English", "german": "German", "french": "French", "spanish": "Spanish"}
LANGUAGES |= {"italian": "Italian", "dutch": "Dutch"}


def _vector_query(table: Table, q: np.ndarray) -> LanceVectorQueryBuilder:
    """`table.search(q)` for a vector `q`. The abstract `Table.search` is typed to return the base query builder;
    the vector one it returns for a vector is what `LanceTable.search`'s overloads say."""
    return cast("LanceVectorQueryBuilder", table.search(q))


class LanceStore:
    def __init__(self, path: str, table: str):
        try:
            import lancedb
            import pyarrow as pa
        except ImportError as exc:
            raise RagtuneError(
                f"--store lancedb://...: needs the stores extra ({exc}); pip install 'ragtune[stores]'"
            ) from None
        if not path:
            raise RagtuneError("--store lancedb://: give a folder, e.g. lancedb://data/store")
        self.pa, self.table_name = pa, table
        self.where = f"--store lancedb://{path} (table {table})"
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.db = lancedb.connect(path)
        except (OSError, ValueError) as exc:
            raise RagtuneError(f"{self.where}: cannot open the folder ({exc})") from None
        self._table: Table | None = None

    def _names(self) -> set[str]:
        return set(self.db.list_tables().tables)

    def _chunks(self) -> Table:
        if self._table is None:
            if self.table_name not in self._names():
                raise RagtuneError(f"{self.where}: nothing indexed there yet; run `ragtune index` first")
            self._table = self.db.open_table(self.table_name)
        return self._table

    def identity(self) -> IndexIdentity | None:
        name = f"{self.table_name}_identity"
        if name not in self._names() or self.table_name not in self._names():
            return None
        rows = self.db.open_table(name).to_arrow().to_pylist()
        return IndexIdentity(**rows[0]) if rows else None

    def create(self, identity: IndexIdentity) -> None:
        pa = self.pa
        schema = pa.schema(
            [
                pa.field("row", pa.int64()),
                pa.field("id", pa.string()),
                pa.field("title", pa.string()),
                pa.field("text", pa.string()),
                pa.field("lexical", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), identity.dim)),
            ]
        )
        self._table = self.db.create_table(self.table_name, schema=schema, exist_ok=True)
        # The identity last: a store with chunks but no identity is one whose creation did not finish.
        self.db.create_table(f"{self.table_name}_identity", [identity.as_dict()], mode="overwrite")

    def stored_ids(self) -> set[str]:
        table = self._chunks()
        n = table.count_rows()
        if n == 0:
            return set()
        return set(table.search().select(["id"]).limit(n).to_arrow()["id"].to_pylist())

    def add(self, batch: Rows) -> None:
        pa = self.pa
        dim = batch.emb.shape[1]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(batch.emb, np.float32).ravel()), dim)
        data = pa.table(
            {
                "row": pa.array(batch.rows, pa.int64()),
                "id": batch.ids,
                "title": pa.array(batch.titles, pa.string()),
                "text": batch.texts,
                "lexical": batch.lexical,
                "vector": vectors,
            }
        )
        self._chunks().add(data)
        self._fts_stale = True

    def _index_names(self) -> set[str]:
        return {ix.name for ix in self._chunks().list_indices()}

    def build_hnsw(self, params: HnswParams) -> bool:
        if "vector_idx" in self._index_names():
            return False
        self._chunks().create_index(
            metric="dot",
            index_type="IVF_HNSW_SQ",
            num_partitions=1,
            m=params.m,
            ef_construction=params.ef_construction,
            name="vector_idx",
        )
        return True

    def search(self, query_emb: np.ndarray, k: int, exact: bool = True, ef_search: int = 100) -> Hits:
        out: Hits = []
        for q in np.asarray(query_emb, np.float32):
            query = _vector_query(self._chunks(), q).distance_type("dot").select(["row", "id", "_distance"]).limit(k)
            query = query.bypass_vector_index() if exact else query.ef(max(ef_search, k))
            found = query.to_arrow()
            scores = 1.0 - np.asarray(found["_distance"].to_numpy(), np.float64)  # dot distance is 1 - q.d
            order = np.lexsort((found["row"].to_numpy(), -scores))  # ties to the lower row, as eval
            ids = found["id"].to_pylist()
            out.append(([ids[i] for i in order], [float(scores[i]) for i in order]))
        return out

    def _ensure_fts(self, language: str) -> None:
        if "lexical_idx" in self._index_names() and not getattr(self, "_fts_stale", False):
            return
        self._chunks().create_fts_index(
            "lexical", replace=True, language=language, stem=True, remove_stop_words=True, name="lexical_idx"
        )
        self._fts_stale = False

    def hybrid(self, questions: Sequence[str], query_emb: np.ndarray, k: int, rrf_k: float, candidates: int) -> Hits:
        identity = self.identity()
        if identity is None:
            raise RagtuneError(f"{self.where}: nothing indexed there yet; run `ragtune index` first")
        self._ensure_fts(LANGUAGES.get(identity.text_search, "English"))
        table = self._chunks()
        dense_rows = np.full((len(questions), candidates), -1, np.int64)
        lexical_rows = np.full((len(questions), candidates), -1, np.int64)
        id_of: dict[int, str] = {}
        for i, (text, q) in enumerate(zip(questions, np.asarray(query_emb, np.float32))):
            dense = _vector_query(table, q).distance_type("dot").select(["row", "id", "_distance"])
            dense = dense.limit(candidates).to_arrow()
            lexical = table.search(text, query_type="fts").select(["row", "id", "_score"]).limit(candidates).to_arrow()
            for found, into, key in ((dense, dense_rows, "_distance"), (lexical, lexical_rows, "_score")):
                rows, score = found["row"].to_numpy(), found[key].to_numpy()
                order = np.lexsort((rows, score if key == "_distance" else -score))
                into[i, : len(rows)] = rows[order]
                id_of.update(zip(rows.tolist(), found["id"].to_pylist()))
        scores, rows = reciprocal_rank_fusion([dense_rows, lexical_rows], k=rrf_k, depth=k)
        return [
            ([id_of[int(r)] for r in row if r >= 0], [float(s) for s, r in zip(srow, row) if r >= 0])
            for srow, row in zip(scores, rows)
        ]

    def count(self) -> int:
        return self._chunks().count_rows()

    def close(self) -> None:
        self._table = None
