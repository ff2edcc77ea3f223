"""`ragtune search`'s side-by-side view: raw cosine, the adapter and the hybrid for each question, as hits
(rank, id, title, score, first line, whether only that side found it), printed as a table or JSON lines."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Hit:
    rank: int
    id: str
    title: str | None
    score: float
    first_line: str
    only_here: bool  # found by this side only, within the top k


@dataclass(frozen=True)
class HybridSetup:
    """The hybrid column of `ragtune search`: BM25 (`index`, anything with `top_k(queries, k)`) fused with
    the adapter's ranking by `ragtune.search.fusion.fuse_hybrid`, as eval's `hybrid` arm does."""

    index: Any
    method: Literal["rrf", "weighted"] = "rrf"
    rrf_k: float = 60.0
    weight: float | None = None
    candidates: int = 100
    lexical: str = "BM25"  # what ranks the texts: eval's BM25, or a store's full-text search

    @property
    def label(self) -> str:
        how = f"weighted, dense {self.weight:g}" if self.method == "weighted" else f"RRF k={self.rrf_k:g}"
        return f"hybrid ({self.lexical}+adapter, {how})"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "candidates": self.candidates}
        if self.lexical != "BM25":
            out["lexical"] = self.lexical
        out.update({"weight": self.weight} if self.method == "weighted" else {"rrf_k": self.rrf_k})
        return out


@dataclass(frozen=True)
class Comparison:
    question: str
    k: int
    cosine: list[Hit]
    adapter: list[Hit]
    hybrid: list[Hit] | None = None
    hybrid_setup: HybridSetup | None = None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def compare_retrieval(
    question: str,
    query_emb: np.ndarray,
    adapted_emb: np.ndarray,
    corpus_emb: np.ndarray,
    ids: Sequence[str],
    titles: Sequence[str | None],
    texts: Sequence[str],
    k: int,
    hybrid: HybridSetup | None = None,
) -> Comparison:
    """Top-k of raw `query_emb` (1, dim) and `adapted_emb` (1, dim) against `corpus_emb`, by the same exact
    search as eval; each hit says whether the other side missed it. With `hybrid`, also the adapter's
    ranking fused with BM25's (each to `hybrid.candidates` deep, then cut to k), whose hits say whether
    neither dense side found them."""
    corpus = CorpusView(ids, titles, texts)
    return compare_many([question], query_emb, adapted_emb, corpus_emb, corpus, k, hybrid)[0]


@dataclass(frozen=True)
class CorpusView:
    """What a hit shows of corpus row i: ids[i], titles[i], the first line of texts[i]."""

    ids: Sequence[str]
    titles: Sequence[str | None]
    texts: Sequence[str]

    def hits(self, rows: Sequence[int], scores: Sequence[float], others: set[int]) -> list[Hit]:
        """Hits for `rows` (best first; -1 skipped), marked when a row is not in `others`."""
        return [
            Hit(r + 1, self.ids[i], self.titles[i], float(s), _first_line(self.texts[i]), i not in others)
            for r, (i, s) in enumerate(zip(rows, scores))
            if i >= 0
        ]


def compare_many(
    questions: Sequence[str],
    query_emb: np.ndarray,
    adapted_emb: np.ndarray,
    corpus_emb: np.ndarray,
    corpus: CorpusView,
    k: int,
    hybrid: HybridSetup | None = None,
) -> list[Comparison]:
    """`compare_retrieval` for many questions at once: `query_emb` and `adapted_emb` (n, dim); one exact
    search for all of them (and one BM25 pass)."""
    from .dense import exact_top_k
    from .fusion import fuse_hybrid

    n = len(questions)
    both = np.concatenate(
        [np.asarray(query_emb, np.float32).reshape(n, -1), np.asarray(adapted_emb, np.float32).reshape(n, -1)]
    )
    depth = max(k, hybrid.candidates) if hybrid is not None else k
    deep_scores, deep_idx = exact_top_k(both, corpus_emb, depth)
    fused = None
    if hybrid is not None:
        lex_scores, lex_idx = hybrid.index.top_k(list(questions), depth)
        fused = fuse_hybrid(
            (deep_scores[n:], deep_idx[n:]),
            (lex_scores, lex_idx),
            depth=k,
            method=hybrid.method,
            rrf_k=hybrid.rrf_k,
            weight=hybrid.weight,
        )
    out = []
    for q, question in enumerate(questions):
        raw, adapted = deep_idx[q, :k].tolist(), deep_idx[n + q, :k].tolist()
        raw_scores, adapted_scores = deep_scores[q, :k].tolist(), deep_scores[n + q, :k].tolist()
        hybrid_hits = None
        if fused is not None:
            hybrid_hits = corpus.hits(fused[1][q].tolist(), fused[0][q].tolist(), set(raw) | set(adapted))
        out.append(
            Comparison(
                question,
                k,
                corpus.hits(raw, raw_scores, set(adapted)),
                corpus.hits(adapted, adapted_scores, set(raw)),
                hybrid_hits,
                hybrid,
            )
        )
    return out


def format_comparison(cmp: Comparison, width: int = 120) -> str:
    """Two columns, raw cosine on the left and the adapter on the right (and the hybrid in a third, when
    there is one); `*` marks a chunk that only that side retrieved in its top k (in the hybrid column: that
    neither dense side retrieved)."""
    columns = [cmp.cosine, cmp.adapter] + ([cmp.hybrid] if cmp.hybrid is not None else [])
    n_cols = len(columns)
    col = max(28 if n_cols == 2 else 20, (width - 3 * (n_cols - 1)) // n_cols)

    def cell_lines(hit: Hit | None, fused: bool = False) -> list[str]:
        if hit is None:
            return ["", ""]
        mark = "*" if hit.only_here else " "
        score = f"{hit.score:.4f}" if fused else f"{hit.score:.3f}"  # RRF scores are small: one more digit
        head = f"{hit.rank:>2}.{mark}{hit.id}  {score}"
        detail = f"    {hit.title + ' — ' if hit.title else ''}{hit.first_line}"
        return [
            textwrap.shorten(head, col, placeholder="…") if len(head) > col else head,
            detail if len(detail) <= col else detail[: col - 1] + "…",
        ]

    headers = ["raw cosine", "adapter"]
    if cmp.hybrid is not None:
        label = cmp.hybrid_setup.label if cmp.hybrid_setup is not None else "hybrid"
        headers.append(label if len(label) <= col else label[: col - 1] + "…")
    lines = [
        f"question: {cmp.question}",
        "",
        " │ ".join(f"{h:<{col}}" for h in headers).rstrip(),
        "─┼─".join("─" * col for _ in headers),
    ]
    for r in range(max(len(c) for c in columns)):
        cells = [cell_lines(c[r] if r < len(c) else None, fused=i == 2) for i, c in enumerate(columns)]
        lines += [" │ ".join(f"{part:<{col}}" for part in parts).rstrip() for parts in zip(*cells)]
    only_c = sum(h.only_here for h in cmp.cosine)
    only_a = sum(h.only_here for h in cmp.adapter)
    lines += [
        "",
        f"* found by one side only: {only_c} by raw cosine, {only_a} by the adapter "
        f"({len(cmp.cosine) - only_c} of the top {len(cmp.cosine)} shared)",
    ]
    if cmp.hybrid is not None:
        only_h = sum(h.only_here for h in cmp.hybrid)
        lines += textwrap.wrap(
            f"* hybrid: {only_h} of its top {len(cmp.hybrid)} found by neither dense side "
            "(brought in by BM25); its scores are fused scores",
            width,
            subsequent_indent="  ",
        )
    return "\n".join(lines)


def as_json(cmp: Comparison) -> str:
    """One line of JSON for one question: its hits per side (and how the hybrid fused)."""

    def side(hits: list[Hit]) -> list[dict]:
        return [
            {
                "rank": h.rank,
                "id": h.id,
                "title": h.title,
                "score": round(h.score, 6),
                "first_line": h.first_line,
                "only_here": h.only_here,
            }
            for h in hits
        ]

    out = {"question": cmp.question, "k": cmp.k, "cosine": side(cmp.cosine), "adapter": side(cmp.adapter)}
    if cmp.hybrid is not None:
        out["hybrid"] = side(cmp.hybrid)
        if cmp.hybrid_setup is not None:
            out["hybrid_fusion"] = cmp.hybrid_setup.describe()
    return json.dumps(out, ensure_ascii=False)
