"""The adapter's training losses, fully vectorised (one matrix product per batch).

- `InBatchRankingLoss`: Multiple Negatives Ranking over the batch's gold chunks plus each question's mined
  hard negatives; a gold chunk that appears again for another question (or a chunk with identical text,
  or one relevant to the same labelled question) is not a negative.
- `FullCorpusSoftmaxLoss`: the document embeddings are frozen, so each question is scored against every
  chunk; chunks whose text is identical to the gold one are masked out.
- `identity_distance`: the penalty that keeps the adapted query near the raw one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import LossName


def identity_distance(adapted: Tensor, query_emb: Tensor) -> Tensor:
    """Mean of 1 - cos(adapted, query): 0 for the identity. A penalty on it keeps the adapter near raw
    cosine, which is what transfers to real queries when training questions are synthetic."""
    return 1.0 - (adapted * F.normalize(query_emb, dim=-1)).sum(dim=-1).mean()


def _weighted_cross_entropy(logits: Tensor, target: Tensor, weights: Tensor | None) -> Tensor:
    """Cross-entropy averaged over rows, each row counted `weights[i]` times (plain mean without)."""
    if weights is None:
        return F.cross_entropy(logits, target)
    per_row = F.cross_entropy(logits, target, reduction="none")
    return (weights * per_row).sum() / weights.sum()


def relevant_group_mask(relevant: Tensor, text_group: Tensor) -> Tensor:
    """(B, G) boolean: row i x text group g is True when a chunk of group g is relevant to row i's
    question. `relevant (B, r)` holds corpus rows, -1 padded; G = text_group.max() + 1."""
    n_groups = int(text_group.max()) + 1
    valid = relevant >= 0
    groups = text_group[relevant.clamp(min=0)]
    mask = torch.zeros((relevant.shape[0], n_groups), dtype=torch.bool, device=relevant.device)
    rows = torch.arange(relevant.shape[0], device=relevant.device)[:, None].expand_as(groups)
    mask[rows[valid], groups[valid]] = True
    return mask


class InBatchRankingLoss(nn.Module):
    """Multiple Negatives Ranking: question i against the gold chunks of the whole batch, plus its own
    mined hard negatives when given.

    forward(adapted (B, d), gold_rows (B,), corpus_emb (N, d), text_group (N,), negatives (B, m) | None,
    relevant (B, r) | None, weights (B,) | None) -> scalar. Column j is masked for row i when j's chunk has
    the same text group as i's gold chunk (the same chunk asked about twice, or a verbatim duplicate) or,
    given `relevant` (every corpus row relevant to row i's question, -1 padded: a labelled question with
    several answers), as any chunk relevant to i's question; never on the diagonal, the target. Negative
    slots holding -1 (fewer found) or a twin of the gold text are masked too. `weights` count rows
    unequally (real questions against synthetic ones).
    """

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        adapted: Tensor,
        gold_rows: Tensor,
        corpus_emb: Tensor,
        text_group: Tensor,
        negatives: Tensor | None = None,
        relevant: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        docs = corpus_emb[gold_rows]  # (B, d), frozen
        logits = adapted @ docs.T / self.temperature  # (B, B)
        groups = text_group[gold_rows]
        if relevant is None:
            same = groups[:, None] == groups[None, :]
        else:
            same = relevant_group_mask(relevant, text_group)[:, groups]
            same |= groups[:, None] == groups[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        if negatives is not None and negatives.shape[1] > 0:
            # Question i's own mined negatives (B, m), -1 where mining found fewer: extra columns.
            rows = negatives.clamp(min=0)
            neg_logits = torch.einsum("bd,bmd->bm", adapted, corpus_emb[rows]) / self.temperature
            invalid = (negatives < 0) | (text_group[rows] == groups[:, None])
            logits = torch.cat([logits, neg_logits.masked_fill(invalid, float("-inf"))], dim=1)
        target = torch.arange(len(gold_rows), device=adapted.device)
        return _weighted_cross_entropy(logits, target, weights)


class TextGroupIndex:
    """The corpus rows of each text group, for masking a few columns of a (B, N) matrix without building it:
    `members[starts[g]:starts[g] + sizes[g]]` are group g's rows. Built from text_group (N,)."""

    def __init__(self, text_group: Tensor):
        self.text_group = text_group
        self.members = torch.argsort(text_group, stable=True)
        self.sizes = torch.bincount(text_group)
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes
        self.any_twins = bool((self.sizes > 1).any())

    def cells(self, row: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
        """(rows, columns) of every (row[k], member of group[k]) pair: row (m,), group (m,) int64."""
        sizes = self.sizes[group]
        rows = torch.repeat_interleave(row, sizes)
        first = torch.repeat_interleave(self.starts[group], sizes)
        within = torch.arange(len(rows), device=row.device) - torch.repeat_interleave(
            torch.cumsum(sizes, 0) - sizes, sizes
        )
        return rows, self.members[first + within]


class FullCorpusSoftmaxLoss(nn.Module):
    """Softmax over every chunk: question i against the whole (frozen) corpus.

    forward(adapted (B, d), gold_rows (B,), corpus_emb (N, d), text_group (N,), negatives, relevant (B, r)
    | None, weights (B,) | None) -> scalar. Chunks whose text is identical to the gold chunk's (other than
    the gold row), and given `relevant` every chunk relevant to the row's question, are masked out.
    """

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature
        self._groups: TextGroupIndex | None = None

    def forward(
        self,
        adapted: Tensor,
        gold_rows: Tensor,
        corpus_emb: Tensor,
        text_group: Tensor,
        negatives: Tensor | None = None,
        relevant: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        # Every chunk is already a negative here, so mined `negatives` add nothing and are ignored.
        logits = adapted @ corpus_emb.T / self.temperature  # (B, N)
        rows, cols = self._masked_cells(gold_rows, text_group, relevant)
        if len(rows):
            logits = logits.index_put((rows, cols), torch.tensor(float("-inf"), device=logits.device))
        return _weighted_cross_entropy(logits, gold_rows, weights)

    def _masked_cells(self, gold_rows: Tensor, text_group: Tensor, relevant: Tensor | None) -> tuple[Tensor, Tensor]:
        """(rows, columns) to mask: each row's gold text group and, given `relevant`, the groups of its
        relevant chunks, less the gold cell. A few cells per row, so they are indexed, not compared (B, N)."""
        if self._groups is None or self._groups.text_group is not text_group:  # one corpus per training run
            self._groups = TextGroupIndex(text_group)
        groups = self._groups
        batch = torch.arange(len(gold_rows), device=gold_rows.device)
        if relevant is None:
            if not groups.any_twins:  # every chunk's text is unique: nothing but the gold has the gold's text
                return batch[:0], batch[:0]
            row, group = batch, text_group[gold_rows]
        else:
            valid = relevant >= 0
            row = torch.cat([batch, batch[:, None].expand_as(relevant)[valid]])
            group = torch.cat([text_group[gold_rows], text_group[relevant[valid]]])
        rows, cols = groups.cells(row, group)
        keep = cols != gold_rows[rows]
        return rows[keep], cols[keep]


def make_loss(name: LossName, temperature: float) -> nn.Module:
    if name == "full_corpus":
        return FullCorpusSoftmaxLoss(temperature)
    if name == "in_batch":
        return InBatchRankingLoss(temperature)
    raise ValueError(f"unknown loss {name!r}; use 'full_corpus' or 'in_batch'")


def text_groups(texts: list[str]) -> np.ndarray:
    """Row i -> id shared by every row with exactly the same text (int64, first occurrence order)."""
    first: dict[str, int] = {}
    return np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
