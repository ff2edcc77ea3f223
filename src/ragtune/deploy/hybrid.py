"""ragtune's hybrid retriever, standalone: BM25 fused with the adapter's dense ranking, as eval's `hybrid` arm.

Self-contained on purpose: numpy, and (when a retriever is loaded) bm25s, PyStemmer and sentence-transformers;
nothing from ragtune. The eval stage copies this file into its hybrid artefact (models/hybrid/) as
`ragtune_hybrid.py`, so a user without ragtune loads the hybrid with it:

    import sys; sys.path.insert(0, "models/hybrid")
    from ragtune_hybrid import HybridRetriever
    retriever = HybridRetriever.load("models/hybrid")
    ranked = retriever.search(["Who must notify a personal data breach?"], k=20)   # ranked.ids, ranked.scores

It is also the one implementation of the fusion math: `ragtune.search.fusion` re-exports the fusions below,
and eval's hybrid arms fuse through `fuse`. Fusions are named in `FUSIONS` (method -> function of the two
candidate lists and the method's own params); the artefact records the method and its params as eval chose
them, so a new fusion is one function added there. Shapes: `Scored` is (scores, rows), each (n_queries,
depth), best first, rows -1 for an empty slot (BM25's "no term in common"); ties go to the lower corpus row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Scored = tuple[np.ndarray, np.ndarray]  # (scores, rows), each (n_queries, depth); rows -1 where empty

FORMAT = "ragtune-hybrid/1"
MANIFEST = "hybrid.json"
CHUNKS = "chunks.jsonl"  # {"id", "title", "text"} per corpus row, row order
VECTORS = "document_vectors.npy"  # (n_chunks, dim) float32, the vectors eval searched
BM25_DIR = "bm25"
MODULE_FILE = "ragtune_hybrid.py"


# --- fusion ---------------------------------------------------------------------------------------------


def _as_2d(a: np.ndarray | Sequence) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(1, -1) if a.ndim == 1 else a


# Queries fused at a time (with a depth given): each block sorts its own candidates, so time and memory grow
# linearly with the number of queries instead of as one sort of them all (10,000 queries held ~200 MB).
_QUERY_BLOCK = 4096


def _accumulate(rows: Sequence[np.ndarray], contributions: Sequence[np.ndarray], depth: int | None) -> Scored:
    """Sum each (query, row)'s contributions over arms; per query, best `depth` rows by fused score, ties to
    the lower row. Returns (scores float64, rows int64), -1 / 0.0 where a query has fewer candidates."""
    n_q = rows[0].shape[0]
    if depth is None or n_q <= _QUERY_BLOCK:
        return _accumulate_block(rows, contributions, depth)
    cut = [slice(s, s + _QUERY_BLOCK) for s in range(0, n_q, _QUERY_BLOCK)]
    blocks = [_accumulate_block([r[q] for r in rows], [c[q] for c in contributions], depth) for q in cut]
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _accumulate_block(rows: Sequence[np.ndarray], contributions: Sequence[np.ndarray], depth: int | None) -> Scored:
    """_accumulate for one block of queries."""
    all_rows = np.concatenate([r.astype(np.int64, copy=False) for r in rows], axis=1)
    all_contrib = np.concatenate([np.asarray(c, np.float64) for c in contributions], axis=1)
    n_q = all_rows.shape[0]
    valid = all_rows >= 0
    query = np.broadcast_to(np.arange(n_q, dtype=np.int64)[:, None], all_rows.shape)[valid]
    row = all_rows[valid]
    stride = int(row.max()) + 1 if row.size else 1
    keys, inverse = np.unique(query * stride + row, return_inverse=True)
    if depth is None:  # every candidate: as many columns as the query with the most distinct rows
        depth = int(np.bincount(keys // stride, minlength=1).max()) if keys.size else 0
    out_rows = np.full((n_q, depth), -1, dtype=np.int64)
    out_scores = np.zeros((n_q, depth), dtype=np.float64)
    if keys.size == 0 or depth == 0:
        return out_scores, out_rows
    fused = np.bincount(inverse.ravel(), weights=all_contrib[valid], minlength=len(keys))
    q, r = keys // stride, keys % stride
    order = np.lexsort((r, -fused, q))  # by query, then score down, then row up
    q, r, fused = q[order], r[order], fused[order]
    position = np.arange(len(q)) - np.searchsorted(q, q, side="left")
    keep = position < depth
    out_rows[q[keep], position[keep]] = r[keep]
    out_scores[q[keep], position[keep]] = fused[keep]
    return out_scores, out_rows


def _arm_weights(weights: Sequence[float] | None, n_arms: int) -> list[float]:
    if weights is None:
        return [1.0] * n_arms
    if len(weights) != n_arms:
        raise ValueError(f"{len(weights)} weights for {n_arms} rankings")
    return [float(w) for w in weights]


def reciprocal_rank_fusion(
    rankings: Sequence[np.ndarray], k: float = 60.0, depth: int | None = None, weights: Sequence[float] | None = None
) -> Scored:
    """Reciprocal-rank fusion of several rankings of the same queries.

    `rankings`: one array per arm, (n_queries, depth_a) corpus rows best first (or (depth_a,) for one
    query), -1 for empty slots. A row scores sum_a w_a / (k + rank_a) over the arms that retrieved it (rank
    1-based; w_a = 1 unless `weights`). Returns `(scores, rows)`, each (n_queries, depth) (1-D for 1-D
    input), best first, ties to the lower row, -1 / 0.0 past the candidates. `depth` None: every candidate.
    """
    if not rankings:
        raise ValueError("no rankings to fuse")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    squeeze = np.asarray(rankings[0]).ndim == 1
    arrays = [_as_2d(r) for r in rankings]
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(f"rankings disagree on the number of queries: {[a.shape[0] for a in arrays]}")
    contributions = [
        w / (k + np.arange(1, a.shape[1] + 1, dtype=np.float64))[None, :].repeat(a.shape[0], 0)
        for a, w in zip(arrays, _arm_weights(weights, len(arrays)))
    ]
    scores, rows = _accumulate(arrays, contributions, depth)
    return (scores[0], rows[0]) if squeeze else (scores, rows)


def min_max_normalise(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per query, scores mapped to [0, 1] over the slots with a row (rows >= 0): the best 1, the worst 0;
    all equal (or a single row): 1. Empty slots: 0."""
    scores, rows = _as_2d(scores).astype(np.float64), _as_2d(rows)
    valid = rows >= 0
    lo = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(span > 0, (scores - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(valid, norm, 0.0)


def weighted_score_fusion(scored: Sequence[Scored], weights: Sequence[float], depth: int | None = None) -> Scored:
    """Weighted sum of min-max normalised scores: `scored` is one (scores, rows) pair per arm, each
    (n_queries, depth_a) (or 1-D for one query); `weights` one per arm. A row an arm did not retrieve gets
    0 from it. Same output as `reciprocal_rank_fusion`."""
    if not scored:
        raise ValueError("no scored rankings to fuse")
    squeeze = np.asarray(scored[0][1]).ndim == 1
    rows = [_as_2d(r) for _, r in scored]
    contributions = [
        w * min_max_normalise(s, r) for (s, _), r, w in zip(scored, rows, _arm_weights(weights, len(scored)))
    ]
    out_scores, out_rows = _accumulate(rows, contributions, depth)
    return (out_scores[0], out_rows[0]) if squeeze else (out_scores, out_rows)


def _fuse_rrf(dense: Scored, lexical: Scored, depth: int, rrf_k: float = 60.0) -> Scored:
    return reciprocal_rank_fusion([dense[1], lexical[1]], k=rrf_k, depth=depth)


def _fuse_weighted(dense: Scored, lexical: Scored, depth: int, weight: float | None = None) -> Scored:
    if weight is None or not 0.0 <= weight <= 1.0:
        raise ValueError(f"weighted fusion needs a dense share in [0, 1], got {weight}")
    return weighted_score_fusion([dense, lexical], [weight, 1.0 - weight], depth)


# method -> fuse(dense, lexical, depth, **params): RRF (params rrf_k) or min-max weighted (params weight, the
# dense share; lexical 1 - weight).
FUSIONS: dict[str, Callable[..., Scored]] = {"rrf": _fuse_rrf, "weighted": _fuse_weighted}


def fuse(method: str, params: Mapping[str, float | None], dense: Scored, lexical: Scored, depth: int) -> Scored:
    """Fuse a dense and a lexical candidate list by `method` (a key of FUSIONS) with its `params` (a missing
    weight is None: the weighted fusion says so)."""
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion method {method!r}; known: {sorted(FUSIONS)}")
    return FUSIONS[method](dense, lexical, depth, **params)


# --- BM25 (bm25s), tokenised as eval tokenises -------------------------------------------------------------


def _bm25s():
    import bm25s

    # bm25s sets its logger to DEBUG on import and logs every index build.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def stem_function(name: str | None) -> Callable[[list[str]], list[str]] | None:
    """PyStemmer's Snowball stemmer `name` (e.g. "english") as bm25s wants it, or None for no stemming."""
    if name is None:
        return None
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(name).stemWords


def bm25_tokenize(texts: Sequence[str], stopwords: str | None, stem, as_ids: bool = True):
    """bm25s tokens of `texts` with the stopword list and stemmer (a `stem_function`) eval uses. With `as_ids`,
    a bm25s Tokenized whose vocabulary is numbered in sorted token order: bm25s numbers stems in set order,
    which changes with Python's hash seed, and the saved index must be the same bytes on every run."""
    bm25s = _bm25s()
    tokens = bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=stem, show_progress=False, return_ids=as_ids)
    if not as_ids:
        return tokens
    names = sorted(tokens.vocab)
    renumber = np.empty(len(names), dtype=np.int64)
    renumber[[tokens.vocab[t] for t in names]] = np.arange(len(names))
    ids = [renumber[np.asarray(doc, dtype=np.int64)].tolist() for doc in tokens.ids]
    return bm25s.tokenization.Tokenized(ids=ids, vocab={t: i for i, t in enumerate(names)})


def bm25_top_k(retriever, queries: Sequence[str], k: int, n_docs: int, stopwords: str | None, stem) -> Scored:
    """Best `k` corpus rows per query from a bm25s `retriever`: (scores float32, rows int64), each
    (n_queries, min(k, n_docs)), best first, ties to the lower row, rows -1 where the score is 0 (no term
    in common: not retrieved)."""
    k = min(k, n_docs)
    if not queries:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    tokens = bm25_tokenize(queries, stopwords, stem, as_ids=False)
    idx, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    idx, scores = np.asarray(idx, dtype=np.int64), np.asarray(scores, dtype=np.float32)
    # bm25s orders equal scores arbitrarily; make ties deterministic: score down, then row up.
    order = np.lexsort((idx, -scores), axis=1)
    idx, scores = np.take_along_axis(idx, order, axis=1), np.take_along_axis(scores, order, axis=1)
    idx[scores <= 0.0] = -1
    return scores, idx


# --- dense candidates and fingerprints ----------------------------------------------------------------------


def dense_top_k(query_emb: np.ndarray, doc_emb: np.ndarray, k: int, block: int = 1024) -> Scored:
    """Exact top-k by dot product: `query_emb` (n, d), `doc_emb` (n_docs, d) -> (scores, rows), each
    (n, min(k, n_docs)), best first, ties to the lower row. Scores one query block at a time."""
    query_emb, doc_emb = np.asarray(query_emb, np.float32), np.asarray(doc_emb, np.float32)
    n, k = len(query_emb), min(k, len(doc_emb))
    out_scores, out_rows = np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
    for s in range(0, n, block):
        sims = query_emb[s : s + block] @ doc_emb.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.indices(sims.shape)[1]
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        out_rows[s : s + block] = np.take_along_axis(part, order, axis=1)
        out_scores[s : s + block] = np.take_along_axis(part_scores, order, axis=1)
    return out_scores, out_rows


def corpus_fingerprint(ids: Sequence[str], titles: Sequence[str | None], texts: Sequence[str]) -> str:
    """sha256 over the corpus rows in order (id, title, text): equal iff the same chunks in the same order."""
    h = hashlib.sha256()
    for row in zip(ids, titles, texts, strict=True):
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


# --- the retriever ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    """One ranking per question: `ids[q]` best first (up to k), `scores` (n_questions, k) fused scores
    (0 past the candidates), `rows` (n_questions, k) corpus rows (-1 past the candidates)."""

    ids: list[list[str]]
    scores: np.ndarray
    rows: np.ndarray


class HybridRetriever:
    """The hybrid of a ragtune artefact folder: `search(questions, k)` ranks as eval's `hybrid` arm ranked."""

    def __init__(self, manifest: dict, ids: list[str], doc_emb: np.ndarray, bm25, encoder=None):
        self.manifest = manifest
        self.ids = ids
        self.doc_emb = doc_emb
        self.bm25 = bm25
        self.encoder = encoder
        lexical = manifest["bm25"]
        self.stopwords, self.stem = lexical["stopwords"], stem_function(lexical["stemmer"])
        fusion = manifest["fusion"]
        self.method, self.params, self.candidates = fusion["method"], dict(fusion["params"]), int(fusion["candidates"])

    @classmethod
    def load(cls, folder: str | Path, dense_model: str | Path | None = None, device: str = "cpu") -> HybridRetriever:
        """Read the artefact `folder`; the query encoder from `dense_model` (default: the folder the manifest
        names, relative to `folder`), or none with dense_model="" (then pass query vectors to `rank`)."""
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, this loader reads {FORMAT!r}")
        if not manifest.get("enabled", True):
            raise ValueError(f"{folder / MANIFEST}: no hybrid in this artefact ({manifest.get('reason')})")
        with open(folder / CHUNKS, encoding="utf-8") as fh:
            ids = [json.loads(line)["id"] for line in fh if line.strip()]
        doc_emb = np.load(folder / VECTORS, allow_pickle=False)
        if doc_emb.shape != (len(ids), manifest["dense"]["dim"]):
            raise ValueError(f"{folder / VECTORS}: shape {doc_emb.shape}, expected ({len(ids)}, dim)")
        bm25 = _bm25s().BM25.load(str(folder / BM25_DIR), show_progress=False)
        encoder = None
        if dense_model != "":
            encoder = _load_encoder(folder / (dense_model or manifest["dense"]["model_dir"]), device)
        return cls(manifest, ids, doc_emb, bm25, encoder)

    def encode(self, questions: Sequence[str]) -> np.ndarray:
        """The adapted query vectors (n, dim) float32 of the artefact's dense model."""
        if self.encoder is None:
            raise ValueError("loaded without a dense model: pass query vectors to rank()")
        return np.asarray(self.encoder.encode_query(list(questions), convert_to_numpy=True), dtype=np.float32)

    def rank(self, questions: Sequence[str], k: int = 20, query_emb: np.ndarray | None = None) -> Scored:
        """(scores, rows), each (n_questions, k): the fused ranking over corpus rows; `query_emb` (n, dim)
        adapted vectors if already computed (else encoded here)."""
        query_emb = self.encode(questions) if query_emb is None else np.asarray(query_emb, np.float32)
        if len(query_emb) != len(questions):
            raise ValueError(f"{len(query_emb)} query vectors for {len(questions)} questions")
        depth = max(self.candidates, k)
        dense = dense_top_k(query_emb, self.doc_emb, depth)
        lexical = bm25_top_k(self.bm25, questions, depth, len(self.ids), self.stopwords, self.stem)
        return fuse(self.method, self.params, _pad(dense, depth), _pad(lexical, depth), k)

    def search(self, questions: Sequence[str], k: int = 20, query_emb: np.ndarray | None = None) -> Ranked:
        """Top-k corpus ids and fused scores per question (batch: one encode, one BM25 pass)."""
        scores, rows = self.rank(questions, k, query_emb)
        ids = [[self.ids[r] for r in row if r >= 0] for row in rows]
        return Ranked(ids, scores, rows)


def _pad(scored: Scored, depth: int) -> Scored:
    """A corpus smaller than `depth` gives fewer columns: pad with row -1, score 0 (as eval does)."""
    scores, rows = scored
    missing = depth - rows.shape[1]
    if missing <= 0:
        return scores, rows
    return (
        np.concatenate([scores, np.zeros((len(rows), missing), scores.dtype)], axis=1),
        np.concatenate([rows, np.full((len(rows), missing), -1, np.int64)], axis=1),
    )


def _load_encoder(path: Path, device: str):
    from sentence_transformers import SentenceTransformer

    info = path / "ragtune_export.json"
    remote = bool(json.loads(info.read_text(encoding="utf-8")).get("trust_remote_code")) if info.is_file() else False
    return SentenceTransformer(str(path), device=device, trust_remote_code=remote, local_files_only=True)
