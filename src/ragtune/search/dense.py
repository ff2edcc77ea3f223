"""Exact top-k search and ranking metrics, vectorised.

One code path serves training validation, eval and `ragtune search`: queries and corpus are scored
with matrix products in blocks, so memory stays bounded (a query block times a corpus block of
scores) whatever the corpus size.

Shapes: `query_emb` (n_queries, dim), `corpus_emb` (n_corpus, dim), both L2-normalised so the dot
product is the cosine. `relevant` is one integer array of corpus row indices per query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _as_tensor(x: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if device is not None:
        t = t.to(device)
    return t.float()


@torch.no_grad()
def exact_top_k(
    query_emb: np.ndarray | torch.Tensor,
    corpus_emb: np.ndarray | torch.Tensor,
    k: int,
    query_block: int = 1024,
    corpus_block: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows by dot product for every query.

    Scores are materialised one (query_block, corpus_block) tile at a time: 256 MiB at the defaults.

    Returns `(scores, indices)`, each (n_queries, min(k, n_corpus)), best first. Ties break toward the
    lower corpus index, so results are deterministic.
    """
    q = _as_tensor(query_emb)
    c = _as_tensor(corpus_emb, q.device)
    n_q, n_c = q.shape[0], c.shape[0]
    k = min(k, n_c)
    out_scores = torch.empty((n_q, k), dtype=torch.float32)
    out_idx = torch.empty((n_q, k), dtype=torch.int64)
    for qs in range(0, n_q, query_block):
        qb = q[qs : qs + query_block]
        best_s: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for cs in range(0, n_c, corpus_block):
            scores = qb @ c[cs : cs + corpus_block].T
            kk = min(k, scores.shape[1])
            s, i = _stable_topk(scores, kk)
            i = i + cs
            if best_s is None:
                best_s, best_i = s, i
            else:  # merge this block's top-k with the running top-k
                s_all = torch.cat([best_s, s], dim=1)
                i_all = torch.cat([best_i, i], dim=1)
                s2, pos = _stable_topk(s_all, k, tiebreak=i_all)
                best_s, best_i = s2, torch.gather(i_all, 1, pos)
        out_scores[qs : qs + query_block] = best_s.cpu()
        out_idx[qs : qs + query_block] = best_i.cpu()
    return out_scores.numpy(), out_idx.numpy()


def _stable_topk(
    scores: torch.Tensor, k: int, tiebreak: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk with ties broken by the smaller index (column, or `tiebreak` values)."""
    s, i = torch.topk(scores, k, dim=1, sorted=True)
    # Exact float ties are rare; reorder only rows that have them.
    if k > 1 and bool((s[:, 1:] == s[:, :-1]).any()):
        key = i if tiebreak is None else torch.gather(tiebreak, 1, i)
        order = np.lexsort((key.cpu().numpy(), -s.cpu().numpy()), axis=1)
        order_t = torch.as_tensor(order, device=s.device)
        s, i = torch.gather(s, 1, order_t), torch.gather(i, 1, order_t)
    return s, i


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


def ids_to_indices(ids: Sequence[str], relevant_ids: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Map relevant chunk ids to corpus row indices (ids absent from `ids` are an error)."""
    pos = {cid: i for i, cid in enumerate(ids)}
    out = []
    for rel in relevant_ids:
        missing = [r for r in rel if r not in pos]
        if missing:
            raise KeyError(f"relevant ids not in the corpus embeddings: {missing[:5]}")
        out.append(np.fromiter((pos[r] for r in rel), dtype=np.int64, count=len(rel)))
    return out
