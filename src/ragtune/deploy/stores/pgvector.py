"""PostgreSQL with pgvector: one table of chunks (row, id, title, text, lexical text, vector, tsvector), the
identity of what it holds in `ragtune_index`, an optional HNSW index, and the hybrid in SQL.

Scores are inner products (`<#>` is their negative): the pipeline's vectors are L2-normalised, so they are the
cosine eval ranks by. Exact search turns index scans off for its transaction, so every row is scored even when
an HNSW index exists. The hybrid ranks the rows matching any of the question's lexemes by `ts_rank`
(PostgreSQL full-text search, the stemmer language of eval's BM25) and fuses that ranking with the vector
ranking by RRF, in one SQL statement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import RagtuneError
from .base import Hits, HnswParams, IndexIdentity, Rows, hide_password

META = "ragtune_index"


class PgVectorStore:
    def __init__(self, url: str, table: str, connect_timeout: float = 5.0):
        try:
            import psycopg
            from pgvector.psycopg import register_vector
        except ImportError as exc:
            raise RagtuneError(
                f"--store postgresql://...: needs the stores extra ({exc}); pip install 'ragtune[stores]'"
            ) from None
        self.table = table
        self.where = f"--store {hide_password(url)} (table {table})"
        try:
            self.conn = psycopg.connect(url, connect_timeout=max(1, int(connect_timeout)), autocommit=True)
        except psycopg.Error as exc:
            reason = hide_password(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            raise RagtuneError(
                f"{self.where}: cannot connect ({reason}); check the URL and that the server runs"
            ) from None
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            self.conn.close()
            raise RagtuneError(
                f"{self.where}: the pgvector extension is not available ({exc}); install pgvector"
            ) from None
        register_vector(self.conn)
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {META} (name text PRIMARY KEY, embedder text, embedder_fingerprint text, "
            "dim int, corpus_fingerprint text, chunks int, text_search text)"
        )

    def identity(self) -> IndexIdentity | None:
        row = self.conn.execute(
            f"SELECT embedder, embedder_fingerprint, dim, corpus_fingerprint, chunks, text_search FROM {META} "
            "WHERE name = %s",
            (self.table,),
        ).fetchone()
        return None if row is None else IndexIdentity(*row)

    def create(self, identity: IndexIdentity) -> None:
        t, cfg = self.table, identity.text_search
        with self.conn.transaction():
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (row int PRIMARY KEY, id text UNIQUE NOT NULL, title text, "
                f"text text NOT NULL, lexical text NOT NULL, embedding vector({int(identity.dim)}) NOT NULL, "
                f"tsv tsvector GENERATED ALWAYS AS (to_tsvector('{cfg}'::regconfig, lexical)) STORED)"
            )
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_tsv ON {t} USING gin (tsv)")
            self.conn.execute(
                f"INSERT INTO {META} VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (t, identity.embedder, identity.embedder_fingerprint, identity.dim, identity.corpus_fingerprint)
                + (identity.chunks, cfg),
            )

    def stored_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute(f"SELECT id FROM {self.table}")}

    def add(self, batch: Rows) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            copy_sql = f"COPY {self.table} (row, id, title, text, lexical, embedding) FROM STDIN WITH (FORMAT BINARY)"
            with cur.copy(copy_sql) as copy:
                copy.set_types(["int4", "text", "text", "text", "text", "vector"])
                for i in range(len(batch)):
                    copy.write_row(
                        (
                            int(batch.rows[i]),
                            batch.ids[i],
                            batch.titles[i],
                            batch.texts[i],
                            batch.lexical[i],
                            np.asarray(batch.emb[i], np.float32),
                        )
                    )

    def _hnsw_name(self) -> str:
        return f"{self.table}_hnsw"

    def _scalar(self, query: str, args: Sequence[object] | None = None) -> Any:
        """The one value of a query that always returns one row (an aggregate, a function call)."""
        row = self.conn.execute(query, args).fetchone()
        assert row is not None, query
        return row[0]

    def has_hnsw(self) -> bool:
        return self._scalar("SELECT to_regclass(%s) IS NOT NULL", (self._hnsw_name(),))

    def build_hnsw(self, params: HnswParams) -> bool:
        if self.has_hnsw():
            return False
        if not re.fullmatch(r"\d+\s*[kMG]?B", params.build_memory):
            raise RagtuneError(f"HNSW build memory {params.build_memory!r}: use e.g. 1GB or 512MB")
        with self.conn.transaction():
            self.conn.execute(f"SET LOCAL maintenance_work_mem = '{params.build_memory}'")
            self.conn.execute(
                f"CREATE INDEX {self._hnsw_name()} ON {self.table} USING hnsw (embedding vector_ip_ops) "
                f"WITH (m = {int(params.m)}, ef_construction = {int(params.ef_construction)})"
            )
        return True

    def search(self, query_emb: np.ndarray, k: int, exact: bool = True, ef_search: int = 100) -> Hits:
        out: Hits = []
        with self.conn.transaction():
            if exact:
                self.conn.execute("SET LOCAL enable_indexscan = off")
                order = "embedding <#> %(q)s, row"
            else:  # an HNSW scan returns at most ef_search rows, and orders by distance only
                self.conn.execute(f"SET LOCAL hnsw.ef_search = {int(max(ef_search, k))}")
                order = "embedding <#> %(q)s"
            sql = f"SELECT id, -(embedding <#> %(q)s) FROM {self.table} ORDER BY {order} LIMIT %(k)s"
            for q in np.asarray(query_emb, np.float32):
                rows = self.conn.execute(sql, {"q": q, "k": k}).fetchall()
                out.append(([r[0] for r in rows], [float(r[1]) for r in rows]))
        return out

    def hybrid(self, questions: Sequence[str], query_emb: np.ndarray, k: int, rrf_k: float, candidates: int) -> Hits:
        cfg = self._text_search()
        sql = f"""
            WITH query AS (
                SELECT replace(plainto_tsquery(%(cfg)s::regconfig, %(text)s)::text, '&', '|')::tsquery AS tsq
            ), dense AS (
                SELECT row, row_number() OVER (ORDER BY distance, row) AS rank FROM (
                    SELECT row, embedding <#> %(q)s AS distance FROM {self.table}
                    ORDER BY embedding <#> %(q)s LIMIT %(n)s) AS nearest
            ), lexical AS (
                SELECT row, row_number() OVER (ORDER BY ts_rank(tsv, tsq, 1) DESC, row) AS rank
                FROM {self.table}, query WHERE tsv @@ tsq
                ORDER BY ts_rank(tsv, tsq, 1) DESC, row LIMIT %(n)s
            )
            SELECT c.id, coalesce(1.0 / (%(rrf_k)s + d.rank), 0) + coalesce(1.0 / (%(rrf_k)s + l.rank), 0) AS score
            FROM dense d FULL OUTER JOIN lexical l USING (row) JOIN {self.table} c USING (row)
            ORDER BY score DESC, c.row LIMIT %(k)s"""
        out: Hits = []
        with self.conn.transaction():
            self.conn.execute(f"SET LOCAL hnsw.ef_search = {int(max(candidates, 40))}")
            for text, q in zip(questions, np.asarray(query_emb, np.float32)):
                params = {"cfg": cfg, "text": text, "q": q, "n": candidates, "rrf_k": float(rrf_k), "k": k}
                rows = self.conn.execute(sql, params).fetchall()
                out.append(([r[0] for r in rows], [float(r[1]) for r in rows]))
        return out

    def _text_search(self) -> str:
        identity = self.identity()
        if identity is None:
            raise RagtuneError(f"{self.where}: nothing indexed there yet; run `ragtune index` first")
        return identity.text_search

    def count(self) -> int:
        return self._scalar(f"SELECT count(*) FROM {self.table}")

    def close(self) -> None:
        self.conn.close()
