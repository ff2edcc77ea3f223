"""Exact top-k search, vectorised (the ranking metrics are in `ragtune.evaluation.ranking`).

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
            if best_s is None or best_i is None:  # the first block (both are set together)
                best_s, best_i = s, i
            else:  # merge this block's top-k with the running top-k
                s_all = torch.cat([best_s, s], dim=1)
                i_all = torch.cat([best_i, i], dim=1)
                s2, pos = _stable_topk(s_all, k, tiebreak=i_all)
                best_s, best_i = s2, torch.gather(i_all, 1, pos)
        assert best_s is not None and best_i is not None, "an empty corpus has no top-k"
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
