"""Hybrid retrieval: fusing a dense and a lexical (BM25) ranking into one ranking, vectorised.

Two fusions, both over the candidates each arm retrieved (corpus rows, best first, -1 for an empty slot,
as `retrieval.exact_top_k` and `lexical.Bm25Index.top_k` return them):

- `reciprocal_rank_fusion` (RRF, Cormack et al. 2009): a row scores sum over arms of w_a / (k + rank_a),
  rank 1-based; an arm that did not retrieve the row adds nothing. No scores needed, nothing to tune; k=60
  is the usual constant.
- `weighted_score_fusion`: each arm's scores min-max normalised per query over the rows it retrieved (its
  best row 1, its worst 0; a row it did not retrieve gets 0 from it), then w * dense + (1 - w) * lexical.
  The default (eval, `ragtune search`): a fixed w = 0.6. RRF rewards any row both rankings hold, whatever its
  place in the dense one, so a BM25 that matches the wrong chunks (users who name things in other words than
  the documents) pulls the fused ranking below the dense one; a dense share above one half keeps the dense
  ranking's order unless BM25 is sure. `choose_weight` picks w from a grid by MRR on the validation questions
  (never on test) when `eval.hybrid.weights` holds several.

A row only one arm returns still gets that arm's share. BM25's "no term in common" slots (-1) are not
candidates. Ties in the fused score go to the lower corpus row, so results are deterministic. Fuse at a
deeper candidate depth than is reported (`HybridParams.candidates`), so fusion has material, then cut.

Why numpy and not `ranx`'s fusion functions (the maintained implementation the issue suggests): measured on
this project's Python 3.11 venv (2 cores), ranx 0.3.21 adds 11 packages the project does not have (numba,
llvmlite, fastparquet, cramjam, ir_datasets, lxml, lz4, cbor2, seaborn, ...): 76 MB of wheels, 254 MB
installed (llvmlite alone 173 MB); `import ranx` takes 4-5 s and its first `fuse` call 24 s of numba JIT
compilation, paid again in every process (each eval stage, each `ragtune search`), against ~0.2 s for
numpy; and it takes runs as dicts of string ids per query. The two fusions are a few dozen lines of numpy
here, follow ranx's definitions (its `rrf` and `wsum` with `min-max` norm give the same numbers on the
tests' hand-computed examples) and are tested against hand-computed rankings (tests/test_fusion.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ..params import Section

Scored = tuple[np.ndarray, np.ndarray]  # (scores, rows), each (n_queries, depth); rows -1 where empty

Weight = Annotated[float, Field(ge=0.0, le=1.0)]


class HybridParams(Section):
    """Eval's hybrid arms (`hybrid`: BM25 + the adapter, `hybrid_cosine`: BM25 + raw cosine); also used by
    `ragtune search`. They need the BM25 arm (`eval.bm25.enabled`)."""

    enabled: bool = True
    method: Literal["rrf", "weighted"] = "weighted"
    rrf_k: float = Field(60.0, ge=0.0, le=100_000.0)
    # the dense share of the weighted fusion: one value is fixed, several are chosen from on validation
    weights: list[Weight] = [0.6]
    candidates: int = Field(100, ge=1, le=100_000)

    @model_validator(mode="after")
    def _check_weights(self) -> HybridParams:
        if not self.weights or len(set(self.weights)) != len(self.weights):
            raise ValueError(f"weights must be a non-empty list of distinct dense shares in [0, 1], got {self.weights}")
        return self


def _as_2d(a: np.ndarray | Sequence) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(1, -1) if a.ndim == 1 else a


def _accumulate(rows: Sequence[np.ndarray], contributions: Sequence[np.ndarray], depth: int | None) -> Scored:
    """Sum each (query, row)'s contributions over arms; per query, best `depth` rows by fused score, ties to
    the lower row. Returns (scores float64, rows int64), -1 / 0.0 where a query has fewer candidates."""
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
    query), -1 for empty slots (BM25's "no term in common"). A row scores sum_a w_a / (k + rank_a) over the
    arms that retrieved it (rank 1-based; w_a = 1 unless `weights`). Returns `(scores, rows)`, each
    (n_queries, depth) (1-D for 1-D input), best first, ties to the lower row, -1 / 0.0 past the candidates.
    `depth` None: every candidate (as many columns as the query with the most distinct rows).
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
    (n_queries, depth_a) (or 1-D for one query); `weights` one per arm (dense share w, lexical 1 - w for a
    hybrid). A row an arm did not retrieve gets 0 from it. Same output as `reciprocal_rank_fusion`."""
    if not scored:
        raise ValueError("no scored rankings to fuse")
    squeeze = np.asarray(scored[0][1]).ndim == 1
    rows = [_as_2d(r) for _, r in scored]
    contributions = [
        w * min_max_normalise(s, r) for (s, _), r, w in zip(scored, rows, _arm_weights(weights, len(scored)))
    ]
    out_scores, out_rows = _accumulate(rows, contributions, depth)
    return (out_scores[0], out_rows[0]) if squeeze else (out_scores, out_rows)


def fuse_hybrid(
    dense: Scored,
    lexical: Scored,
    depth: int,
    method: Literal["rrf", "weighted"] = "rrf",
    rrf_k: float = 60.0,
    weight: float | None = None,
) -> Scored:
    """The hybrid of eval and `ragtune search`: RRF of the two rankings, or the weighted fusion with dense
    share `weight` (lexical 1 - weight)."""
    if method == "rrf":
        return reciprocal_rank_fusion([dense[1], lexical[1]], k=rrf_k, depth=depth)
    if weight is None or not 0.0 <= weight <= 1.0:
        raise ValueError(f"weighted fusion needs a dense share in [0, 1], got {weight}")
    return weighted_score_fusion([dense, lexical], [weight, 1.0 - weight], depth)


def mean_reciprocal_rank(rows: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """MRR@k of a ranking (n_queries, depth) against each query's relevant rows."""
    from .dense import per_query_reciprocal_rank, relevance_matrix

    rows = rows[:, :k]
    if len(relevant) == 0:
        return float("nan")
    hits = relevance_matrix(rows, relevant) & (rows >= 0)
    return float(per_query_reciprocal_rank(hits, k).mean())


def choose_weight(
    dense: Scored, lexical: Scored, relevant: Sequence[np.ndarray], weights: Sequence[float], mrr_k: int
) -> tuple[float, dict[float, float]]:
    """The dense share of `weights` whose weighted fusion has the best MRR@mrr_k on these (validation)
    questions; ties go to the first weight of the grid. Returns (weight, {weight: MRR})."""
    if not weights:
        raise ValueError("no weights to choose from")
    mrr = {
        float(w): mean_reciprocal_rank(
            fuse_hybrid(dense, lexical, mrr_k, "weighted", weight=float(w))[1], relevant, mrr_k
        )
        for w in weights
    }
    best = max(mrr, key=lambda w: (mrr[w], -list(mrr).index(w)))
    return best, mrr
