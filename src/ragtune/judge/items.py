"""The judged questions: a seeded subset of the test set, each with both arms' top-k chunks rendered into one
context per arm and the reference the judge scores against."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import origin_label, round_metric
from ..paths import PipelinePaths
from .config import JudgeParams
from .prompts import Reference, build_reference, render_context


def select_questions(n_total: int, max_questions: int | None, seed: int) -> np.ndarray:
    """Row indices of the judged questions: all, or a seeded sample of `max_questions`, in file order."""
    if max_questions is None or max_questions >= n_total:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=max_questions, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class JudgeItem:
    """One judged question with both arms' retrieved chunks, as the stage hands it to `judge_items`."""

    question_id: str
    question: str
    reference: Reference
    chunk_ids: Mapping[str, list[str]]  # arm -> retrieved chunk ids, best first
    context: Mapping[str, str]  # arm -> rendered context


def build_items(
    paths: PipelinePaths, params: JudgeParams, load_adapter: Callable[[Path], Any] | None = None
) -> tuple[list[JudgeItem], dict[str, Any]]:
    """Select the judged questions (seeded), retrieve top-k for both arms with the exact search eval
    uses, render each arm's context and the reference. Returns the items and setup facts for the report."""
    from ..evaluation.arms import EmbeddingArm, adapter_arm, identity
    from ..evaluation.inputs import QuerySet, load_corpus_with_embeddings, load_test_set, require_file
    from ..evaluation.ranking import hit_matrix
    from ..records import load_test

    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test_path = paths.test
    test = load_test_set(test_path, paths.embed_dir / "test.npz", corpus.ids)
    records = {q.id: q for q in load_test(test_path)}
    require_file(paths.adapter, "train the adapter first (dvc repro train, or make run)")
    # under k-fold (train.folds) each question's answer comes from the adapter that never saw it
    adapter = adapter_arm("adapter", corpus.emb, paths.adapter, load_adapter)

    sel = select_questions(len(test.ids), params.max_questions, params.seed)
    subset = QuerySet(
        name="judge",
        ids=[test.ids[i] for i in sel],
        query_emb=test.query_emb[sel],
        relevant=[test.relevant[i] for i in sel],
        origins=[test.origins[i] for i in sel],
        texts=[test.texts[i] for i in sel] if test.texts is not None else None,
    )
    arms = {"cosine": EmbeddingArm("cosine", corpus.emb, identity), "adapter": adapter}
    top = {arm: a.retrieve(subset, params.top_k) for arm, a in arms.items()}  # (m, k), -1 = nothing
    context_hits = {arm: hit_matrix(idx, subset.relevant).any(axis=1) for arm, idx in top.items()}

    row_of = {cid: i for i, cid in enumerate(corpus.ids)}
    items = []
    for q, qid in enumerate(subset.ids):
        rec = records[qid]
        rel_rows = [row_of[r] for r in rec.relevant_ids]
        reference = build_reference(
            rec.answer,
            [corpus.titles[r] for r in rel_rows],
            [corpus.texts[r] for r in rel_rows],
            params.max_reference_chars,
        )
        rows = {arm: [int(r) for r in idx[q] if r >= 0] for arm, idx in top.items()}
        items.append(
            JudgeItem(
                question_id=qid,
                question=rec.question,
                reference=reference,
                chunk_ids={arm: [corpus.ids[r] for r in rs] for arm, rs in rows.items()},
                context={
                    arm: render_context(
                        [corpus.titles[r] for r in rs], [corpus.texts[r] for r in rs], params.max_chunk_chars
                    )
                    for arm, rs in rows.items()
                },
            )
        )
    kinds = sorted({it.reference.kind for it in items})
    setup = {
        "test_file": str(test_path),
        "test_questions": len(test.ids),
        "corpus_chunks": len(corpus.ids),
        "question_ids": list(subset.ids),
        "origin": origin_label(subset.origins),
        "reference": kinds[0] if len(kinds) == 1 else "mixed",
        "context_hit_rate": {arm: round_metric(h.mean()) if len(h) else None for arm, h in context_hits.items()},
    }
    return items, setup
