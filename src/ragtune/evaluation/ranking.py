"""Ranking metrics over hit matrices, vectorised: pure NumPy, importing nothing else from ragtune, so that
training validation, search, fusion and eval all score rankings with the same functions.

Shapes: a ranking `topk_idx` (n_queries, depth) of corpus rows, best first (-1: an empty slot); `relevant` one
integer array of corpus rows per query; `hits` (n_queries, depth) bool, hits[q, j] when the j-th result of
query q is relevant. Per-query functions return (n_queries,) arrays; `*_at_k` their means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def relevance_matrix(topk_idx: np.ndarray, relevant: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
    """Boolean (n_queries, k): is the j-th retrieved row relevant to query q? One vectorised isin."""
    n_q, _ = topk_idx.shape
    if len(relevant) != n_q:
        raise ValueError(f"{len(relevant)} relevance lists for {n_q} queries")
    stride = np.int64(
        max(int(topk_idx.max(initial=0)), max((int(np.max(r)) for r in relevant if len(r)), default=0)) + 1
    )
    rows = np.repeat(np.arange(n_q, dtype=np.int64), [len(r) for r in relevant])
    cols = np.concatenate([np.asarray(r, dtype=np.int64) for r in relevant]) if n_q else np.array([], np.int64)
    rel_keys = rows * stride + cols
    got_keys = np.arange(n_q, dtype=np.int64)[:, None] * stride + topk_idx.astype(np.int64)
    return np.isin(got_keys, rel_keys)


def first_relevant_rank(hits: np.ndarray) -> np.ndarray:
    """1-based rank of the first relevant result per query; 0 when none is in the list."""
    any_hit = hits.any(axis=1)
    return np.where(any_hit, hits.argmax(axis=1) + 1, 0)


def hit_rate_at_k(hits: np.ndarray, k: int) -> float:
    """Share of queries with at least one relevant chunk in the top k."""
    return float(hits[:, :k].any(axis=1).mean()) if len(hits) else float("nan")


def per_query_hit(hits: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].any(axis=1)


def per_query_reciprocal_rank(hits: np.ndarray, k: int) -> np.ndarray:
    rank = first_relevant_rank(hits[:, :k])
    return np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)


def mrr_at_k(hits: np.ndarray, k: int) -> float:
    return float(per_query_reciprocal_rank(hits, k).mean()) if len(hits) else float("nan")


def per_query_recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Share of each query's relevant chunks found in the top k."""
    return hits[:, :k].sum(axis=1) / np.maximum(np.asarray(n_relevant), 1)


def per_query_ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Binary-relevance nDCG@k."""
    k = min(k, hits.shape[1])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts).sum(axis=1)
    ideal_counts = np.minimum(np.asarray(n_relevant), k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_counts]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)


def hit_matrix(topk_idx: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean (n, depth): is the j-th result relevant? Empty slots (-1) never are."""
    if len(relevant) == 0:
        return np.zeros(topk_idx.shape, dtype=bool)
    return relevance_matrix(topk_idx, relevant) & (topk_idx >= 0)


def document_hits(
    idx: np.ndarray, relevant: Sequence[np.ndarray], documents: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Documents ranked by their best passage: `idx` (n, D) passage rows, best first (-1 empty) ->
    (hits (n, depth) over each question's first `depth` distinct documents, n_relevant documents (n,)).
    A document is relevant when any of its passages is."""
    doc = np.where(idx >= 0, documents[np.maximum(idx, 0)], -1)
    first = doc >= 0
    for j in range(1, doc.shape[1]):  # depth steps, each over all questions at once
        first[:, j] &= ~(doc[:, j : j + 1] == doc[:, :j]).any(axis=1)
    order = np.argsort(~first, axis=1, kind="stable")
    ranked = np.take_along_axis(doc, order, axis=1)
    ranked[~np.take_along_axis(first, order, axis=1)] = -1
    ranked = ranked[:, :depth]
    if ranked.shape[1] < depth:
        ranked = np.pad(ranked, ((0, 0), (0, depth - ranked.shape[1])), constant_values=-1)
    rel_docs = [np.unique(documents[np.asarray(r, dtype=np.int64)]) for r in relevant]
    return hit_matrix(ranked, rel_docs), np.array([len(r) for r in rel_docs], dtype=np.int64)
