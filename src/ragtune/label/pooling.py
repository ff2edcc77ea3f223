"""The candidates `ragtune label` shows: every arm of the pipeline ranks a question, the top k of each are
pooled, deduplicated and shuffled so that the order says nothing about which arm found a chunk.

The arms are eval's own (`ragtune.evaluation.arms.build_arms`: cosine, adapter, linear, bm25, hybrid_cosine,
hybrid), on the pipeline's corpus embeddings, with the fusion weight eval chose when it fused by weight; the
question is embedded like the pipeline's questions, once, by a model loaded once at start-up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .storage import label_id, question_key

if TYPE_CHECKING:
    from ..embedding.embedder import CachedEmbedder
    from ..evaluation.arms import Arm
    from ..evaluation.inputs import Corpus

Rankings = dict[str, np.ndarray]  # arm name -> (depth,) corpus rows, best first, -1 for empty slots


@dataclass
class ArmSearch:
    """The pipeline's arms over its corpus, with the embedder that turns a question into their query.
    `depth`: how deep each arm ranks (at least the pool's k and eval's MRR cut-off)."""

    corpus: Corpus
    arms: Sequence[Arm]
    embedder: CachedEmbedder
    depth: int

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def rank(self, questions: Sequence[str]) -> list[Rankings]:
        """Each question's ranking by every arm, from one batch: embeddings (n, dim) -> (n, depth) per arm."""
        from ..evaluation.inputs import QuerySet

        if not questions:
            return []
        queries = QuerySet(
            name="label",
            ids=[label_id(q) for q in questions],
            query_emb=self.embedder.encode_queries(list(questions)),
            relevant=[np.zeros(0, np.int64) for _ in questions],
            origins=["human"] * len(questions),
            texts=list(questions),
        )
        by_arm = {arm.name: arm.retrieve(queries, self.depth) for arm in self.arms}
        return [{name: rows[i] for name, rows in by_arm.items() if rows is not None} for i in range(len(questions))]


def pool(rankings: Mapping[str, np.ndarray], k: int, question: str) -> list[int]:
    """The union of each arm's top `k` corpus rows (`rankings`: arm -> (depth,) rows), each row once, in an
    order drawn at random from the question alone: neither an arm's order nor the arms' order shows through,
    and the same question is shown in the same order after a reload."""
    tops = [np.asarray(rows[:k], np.int64) for rows in rankings.values()]
    rows = np.unique(np.concatenate(tops)) if tops else np.zeros(0, np.int64)
    rows = rows[rows >= 0]
    seed = int.from_bytes(hashlib.sha256(question_key(question).encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).permutation(rows).tolist()


class CorpusFinder:
    """Search within the corpus for a chunk no arm found: chunks whose id, title or text contain every word
    typed (case-insensitive), in corpus order."""

    def __init__(self, corpus: Corpus):
        self._haystacks = [
            f"{cid}\n{title or ''}\n{text}".casefold()
            for cid, title, text in zip(corpus.ids, corpus.titles, corpus.texts)
        ]

    def find(self, text: str, limit: int = 20) -> tuple[list[int], int]:
        """(the first `limit` matching rows, how many match in all)."""
        words = text.casefold().split()
        if not words:
            return [], 0
        matches = [i for i, hay in enumerate(self._haystacks) if all(w in hay for w in words)]
        return matches[:limit], len(matches)


def with_eval_weights(arms: Sequence[Arm], eval_report: Path) -> tuple[list[Arm], str]:
    """The hybrid arms with the dense share eval chose on validation (report.json `fusion`), where eval fused
    by weight; else they fuse by RRF, as build_arms made them. Returns the arms and a line saying which."""
    from ..evaluation.arms import HybridArm

    fusion = _fusion_block(eval_report)
    out: list[Arm] = []
    notes = []
    for arm in arms:
        if isinstance(arm, HybridArm) and arm.params.method == "weighted":
            entry = fusion.get(arm.name, {})
            weight = entry.get("weight") if isinstance(entry, dict) and entry.get("method") == "weighted" else None
            if isinstance(weight, (int, float)):
                arm = replace(arm, weight=float(weight))
                notes.append(f"{arm.name}: dense share {weight:g} from {eval_report}")
            else:
                notes.append(f"{arm.name}: RRF (no weight in {eval_report}: run dvc repro eval)")
        out.append(arm)
    return out, "; ".join(notes)


def _fusion_block(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    fusion = data.get("fusion") if isinstance(data, dict) else None
    return fusion if isinstance(fusion, dict) else {}
