"""Vector stores against eval's exact search: queries/s and recall@20 of the adapter's vectors through
pgvector (exact scan and HNSW) and LanceDB (flat and IVF_HNSW_SQ) beside exact numpy/torch (`exact_top_k`,
eval's search), and on the EU default's test questions the Hit@5 / MRR@20 of the adapter and of the hybrid
through each store beside eval's, plus the standalone hybrid loader (models/hybrid) against eval's ranking.

- EU default: the pipeline's outputs (make run, or dvc checkout) and models/hybrid (the eval stage). Query
  vectors are eval's (test.npz through the shipped adapter); the loader encodes the questions itself.
- Synthetic, 100,000 384-d unit vectors as chunks, vectors only (texts are placeholders), for speed and recall,
  not for quality; queries = chunks plus Gaussian noise (norm ~0.7), renormalised. `uniform`: random unit
  vectors, the worst case for a graph index (beyond the source chunk, a query's top 20 are near-ties among
  unrelated points); `clustered`: 1,000 random centres, each chunk a centre plus noise (cosine ~0.7 to its
  centre, ~0.5 within a cluster), nearer to what an embedder gives.
Recall@20: the share of exact numpy's top 20 that the store returns in its top 20, averaged over queries;
recall@1: the share of queries whose exact first hit is the store's first.
PostgreSQL is a throw-away pgserver instance on 127.0.0.1 (as the tests start it); LanceDB a temp folder.
One query per round trip / call, one client thread, as `ragtune search --store` queries.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from ragtune.deploy.stores import index_into, open_store
from ragtune.deploy.stores.base import HnswParams, IndexIdentity, Rows
from ragtune.evaluation.ranking import relevance_matrix
from ragtune.search.dense import exact_top_k

from ..server_support import postgres_server
from .common import save

K = 20
HNSW = HnswParams(m=16, ef_construction=64)
EF_SEARCH = [40, 100, 400]
N_SYNTHETIC = 100_000
SYNTH_QUERIES = 200


def _recall(found: list[list[str]], exact_ids: list[list[str]]) -> float:
    return float(np.mean([len(set(f[:K]) & set(e[:K])) / len(e[:K]) for f, e in zip(found, exact_ids)]))


def _recall_at_1(found: list[list[str]], exact_ids: list[list[str]]) -> float:
    return float(np.mean([bool(f) and f[0] == e[0] for f, e in zip(found, exact_ids)]))


def _speed_recall(found, qps: float, exact_ids) -> dict:
    ids = [f for f, _ in found]
    return {
        "queries_per_s": round(qps, 1),
        "recall@20": round(_recall(ids, exact_ids), 4),
        "recall@1": round(_recall_at_1(ids, exact_ids), 4),
    }


def _timed(fn, n: int) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, n / (time.perf_counter() - t0)


def _quality(ids: list[list[str]], row_of: dict[str, int], relevant) -> dict:
    from ragtune.evaluation.ranking import hit_rate_at_k, mrr_at_k

    rows = np.full((len(ids), K), -1, np.int64)
    for q, found in enumerate(ids):
        rows[q, : len(found[:K])] = [row_of[i] for i in found[:K]]
    hits = relevance_matrix(rows, relevant) & (rows >= 0)
    return {"hit@5": round(hit_rate_at_k(hits, 5), 4), "mrr@20": round(mrr_at_k(hits, K), 4)}


def _store_rows(store, vectors: np.ndarray, exact_ids, row_of=None, relevant=None, texts=None) -> dict:
    """Exact and HNSW rows for one filled store: queries/s, recall@20 against exact numpy, quality."""
    out = {}
    n = len(vectors)
    found, qps = _timed(lambda: store.search(vectors, K, exact=True), n)
    out["exact"] = _speed_recall(found, qps, exact_ids)
    if relevant is not None:
        out["exact"].update(_quality([f for f, _ in found], row_of, relevant))
    t0 = time.perf_counter()
    store.build_hnsw(HNSW)
    out["hnsw_build_s"] = round(time.perf_counter() - t0, 1)
    for ef in EF_SEARCH:
        found, qps = _timed(lambda ef=ef: store.search(vectors, K, exact=False, ef_search=ef), n)
        row = _speed_recall(found, qps, exact_ids)
        if relevant is not None:
            row.update(_quality([f for f, _ in found], row_of, relevant))
        out[f"hnsw_ef{ef}"] = row
    if texts is not None:
        found, qps = _timed(lambda: store.hybrid(texts, vectors, K, 60.0, 100), n)
        out["hybrid_rrf"] = {"queries_per_s": round(qps, 1), **_quality([f for f, _ in found], row_of, relevant)}
    return out


def _fill(url: str, table: str, identity: IndexIdentity, rows: Rows):
    store = open_store(url, table)
    report = index_into(store, identity, rows, batch_size=2000)
    return store, round(report.seconds, 1)


def eu_default(pg_url: str, lance_url: str) -> dict:
    from ragtune.deploy.commands import Pipeline
    from ragtune.deploy.hybrid import HybridRetriever
    from ragtune.evaluation.arms import HybridArm
    from ragtune.evaluation.metrics import EvalParams
    from ragtune.evaluation.run import prepare_eval
    from ragtune.params import load_section
    from ragtune.paths import PipelinePaths

    params = load_section("eval", EvalParams)
    inputs = prepare_eval(PipelinePaths(), params)
    arms = {a.name: a for a in inputs.arms}
    test, ids = inputs.test, inputs.corpus.ids
    row_of = {cid: i for i, cid in enumerate(ids)}
    vectors = arms["adapter"].adapt(test)
    (_, exact_rows), qps = _timed(lambda: exact_top_k(vectors, inputs.corpus.emb, K), len(vectors))
    exact_ids = [[ids[r] for r in row] for row in exact_rows]
    hybrid_arm = next(a for a in inputs.arms if isinstance(a, HybridArm) and a.name == "hybrid")
    eval_hybrid = [[ids[r] for r in row if r >= 0] for row in hybrid_arm.retrieve(test, K)]
    out = {
        "questions": len(test.ids),
        "chunks": len(ids),
        "eval_exact_numpy": {
            "queries_per_s": round(qps, 1),
            "adapter": _quality(exact_ids, row_of, test.relevant),
            "hybrid": _quality(eval_hybrid, row_of, test.relevant),
        },
    }
    t0 = time.perf_counter()
    loader = HybridRetriever.load("models/hybrid")
    load_s = time.perf_counter() - t0
    ranked, qps = _timed(lambda: loader.search(test.texts, K), len(test.ids))
    out["hybrid_loader"] = {
        "load_s": round(load_s, 1),
        "queries_per_s": round(qps, 1),
        "top20_equal_to_eval": f"{sum(a == b for a, b in zip(ranked.ids, eval_hybrid))}/{len(test.ids)}",
        **_quality(ranked.ids, row_of, test.relevant),
    }
    pipeline = Pipeline.load(Path("params.yaml"))
    for name, url in (("pgvector", pg_url), ("lancedb", lance_url)):
        store, seconds = _fill(url, "eu_default", pipeline.identity(), pipeline.rows())
        try:
            found = _store_rows(store, vectors, exact_ids, row_of, test.relevant, test.texts)
            out[name] = {"index_s": seconds, **found}
        finally:
            store.close()
    return out


def _synthetic_vectors(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(chunks (N_SYNTHETIC, 384), queries (SYNTH_QUERIES, 384)), unit rows; see the module docstring."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def noise(n: int) -> np.ndarray:
        return rng.standard_normal((n, 384), dtype=np.float32) / np.sqrt(384)

    if kind == "uniform":
        docs = unit(noise(N_SYNTHETIC))
    else:
        centres = unit(noise(1_000))
        docs = unit(centres[rng.integers(0, len(centres), N_SYNTHETIC)] + noise(N_SYNTHETIC))
    pick = rng.choice(N_SYNTHETIC, SYNTH_QUERIES, replace=False)
    return docs, unit(docs[pick] + 0.7 * noise(SYNTH_QUERIES))


def synthetic(kind: str, pg_url: str, lance_url: str) -> dict:
    docs, queries = _synthetic_vectors(kind, np.random.default_rng(0))
    ids = [f"s{i}" for i in range(N_SYNTHETIC)]
    rows = Rows(np.arange(N_SYNTHETIC), ids, [None] * N_SYNTHETIC, ["x"] * N_SYNTHETIC, ["x"] * N_SYNTHETIC, docs)
    identity = IndexIdentity("random", f"{kind}-unit-vectors", 384, f"synthetic-{kind}", N_SYNTHETIC, "simple")
    (_, exact_rows), qps = _timed(lambda: exact_top_k(queries, docs, K), SYNTH_QUERIES)
    exact_ids = [[ids[r] for r in row] for row in exact_rows]
    out = {"chunks": N_SYNTHETIC, "queries": SYNTH_QUERIES, "exact_numpy": {"queries_per_s": round(qps, 1)}}
    for name, url in (("pgvector", pg_url), ("lancedb", lance_url)):
        store, seconds = _fill(url, f"synthetic_{kind}", identity, rows)
        try:
            out[name] = {"index_s": seconds, **_store_rows(store, queries, exact_ids)}
        finally:
            store.close()
    return out


def main() -> None:
    with postgres_server() as pg_url, tempfile.TemporaryDirectory() as lance_dir:
        results = {"hnsw": {"m": HNSW.m, "ef_construction": HNSW.ef_construction}}
        if Path("models/hybrid/hybrid.json").is_file() and Path("data/embed/test.npz").is_file():
            results["eu_default"] = eu_default(pg_url, f"lancedb://{lance_dir}/eu")
        else:
            print("EU default skipped: no pipeline outputs here (make run, or dvc checkout)")
        for kind in ("uniform", "clustered"):
            results[f"synthetic_100k_{kind}"] = synthetic(kind, pg_url, f"lancedb://{lance_dir}/{kind}")
    save("stores", results)


if __name__ == "__main__":
    main()
