"""Hard negatives mined from the frozen embeddings, guarded against false negatives.

For each training question, raw cosine ranks the corpus (one blocked matrix product through
`ragtune.search.dense.exact_top_k`); candidates are taken from a rank window, the way
sentence-transformers' `mine_hard_negatives` does it (`range_min` / `range_max` / `relative_margin`):

- ranks `min_rank`..`max_rank` only (1-based, inclusive): the very top of the ranking is where the
  unlabelled true answers sit, so it is skipped;
- a candidate must score at most `(1 - relative_margin)` times the question's gold chunk: one nearly as
  close as the gold is more likely another answer than a negative;
- never the gold chunk, nor a chunk with the gold chunk's exact text;
- optionally never a chunk of the gold chunk's parent document (`Chunk.parent`): neighbouring paragraphs
  of one article often answer the question too.

The first `count` candidates that pass, in rank order, are kept ("top" sampling: deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..search.dense import exact_top_k


@dataclass(frozen=True)
class MiningRule:
    """How to pick negatives: `count` per question from ranks `min_rank`..`max_rank` (1-based)."""

    count: int
    min_rank: int = 10
    max_rank: int = 50
    relative_margin: float = 0.05
    skip_same_parent: bool = True

    def __post_init__(self) -> None:
        if self.count < 0 or self.min_rank < 1 or self.max_rank < self.min_rank:
            raise ValueError(f"bad mining rule {self}: need count >= 0 and 1 <= min_rank <= max_rank")
        if not 0.0 <= self.relative_margin < 1.0:
            raise ValueError(f"relative_margin must be in [0, 1), got {self.relative_margin}")


@dataclass(frozen=True)
class Candidates:
    """Raw-cosine top-`depth` corpus rows per question, best first: `rows` and `scores` (n, depth)."""

    rows: np.ndarray
    scores: np.ndarray

    @property
    def depth(self) -> int:
        return int(self.rows.shape[1])


def rank_candidates(
    question_emb: np.ndarray | torch.Tensor, corpus_emb: np.ndarray | torch.Tensor, depth: int
) -> Candidates:
    """question_emb (n, d), corpus_emb (N, d) -> the top-`depth` rows by raw cosine (one blocked product)."""
    scores, rows = exact_top_k(question_emb, corpus_emb, depth)
    return Candidates(rows=rows, scores=scores)


def select_negatives(
    candidates: Candidates,
    gold_rows: np.ndarray,
    gold_scores: np.ndarray,
    text_group: np.ndarray,
    parent_group: np.ndarray | None,
    rule: MiningRule,
) -> np.ndarray:
    """Apply `rule` to ranked candidates; returns (n, rule.count) int64 corpus rows, -1 where fewer passed.

    gold_rows (n,) corpus row of each question's chunk; gold_scores (n,) raw cosine of question and gold;
    text_group (N,) id shared by identical texts; parent_group (N,) id shared by chunks of one document
    (None: no parents known).
    """
    n = len(gold_rows)
    if rule.count == 0 or n == 0:
        return np.full((n, rule.count), -1, dtype=np.int64)
    hi = min(rule.max_rank, candidates.depth)
    rows = candidates.rows[:, rule.min_rank - 1 : hi]
    scores = candidates.scores[:, rule.min_rank - 1 : hi]
    if rows.shape[1] == 0:
        return np.full((n, rule.count), -1, dtype=np.int64)
    gold_rows = np.asarray(gold_rows, dtype=np.int64)
    ok = text_group[rows] != text_group[gold_rows][:, None]  # not the gold, nor its text twin
    ok &= scores <= np.asarray(gold_scores)[:, None] * (1.0 - rule.relative_margin)
    if rule.skip_same_parent and parent_group is not None:
        ok &= parent_group[rows] != parent_group[gold_rows][:, None]
    # Keep the first `count` passing columns of each row: their running count is 1..count.
    keep = ok & (np.cumsum(ok, axis=1) <= rule.count)
    out = np.full((n, rule.count), -1, dtype=np.int64)
    slot = np.cumsum(keep, axis=1) - 1
    r, c = np.nonzero(keep)
    out[r, slot[r, c]] = rows[r, c]
    return out


def mine_hard_negatives(
    question_emb: np.ndarray | torch.Tensor,
    gold_rows: np.ndarray,
    corpus_emb: np.ndarray | torch.Tensor,
    text_group: np.ndarray,
    parent_group: np.ndarray | None,
    rule: MiningRule,
    candidates: Candidates | None = None,
) -> np.ndarray:
    """Mine `rule.count` negatives per question (n, count), -1 padded. Pass `candidates` ranked once to
    `rule.max_rank` or deeper to reuse one ranking across several rules (as tuning trials do)."""
    if candidates is None or candidates.depth < min(rule.max_rank, len(text_group)):
        candidates = rank_candidates(question_emb, corpus_emb, rule.max_rank)
    q = (
        torch.as_tensor(np.asarray(question_emb, dtype=np.float32))
        if not isinstance(question_emb, torch.Tensor)
        else question_emb.detach().float().cpu()
    )
    c = (
        torch.as_tensor(np.asarray(corpus_emb, dtype=np.float32))
        if not isinstance(corpus_emb, torch.Tensor)
        else corpus_emb.detach().float().cpu()
    )
    gold = np.asarray(gold_rows, dtype=np.int64)
    gold_scores = (q * c[torch.as_tensor(gold)]).sum(dim=1).numpy()
    return select_negatives(candidates, gold, gold_scores, np.asarray(text_group), parent_group, rule)
