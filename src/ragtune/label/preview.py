"""What the recommendation would be with the labels so far: each arm scored on the labelled questions by the
reciprocal rank of the first relevant chunk within eval's MRR cut-off, and the arm chosen by
`ragtune.evaluation.recommend.with_labels`, the rule eval applies (the labels' best replaces the choice made
without labels only when ahead of it beyond chance; the statement says whether that is settled).

Questions the shipped adapter trained on would flatter it (and the hybrid built on it): the pipeline's
data/fetch/train_questions.jsonl holds the labels fetch copied at the last `dvc repro`, and those are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import EvalParams
from ..evaluation.ranking import hit_matrix, per_query_reciprocal_rank
from ..evaluation.recommend import with_labels
from ..records import TestQuestion, load_test
from .storage import Judgement, question_key


class TrainedOn:
    """The questions the current adapter trained on, by id and by normalised text."""

    def __init__(self, questions: Iterable[TestQuestion], source: Path | None = None):
        questions = list(questions)
        self.source = source
        self.ids = {q.id for q in questions}
        self.keys = {question_key(q.question) for q in questions}

    @classmethod
    def read(cls, path: Path) -> TrainedOn:
        """fetch's copy of the labels; absent or empty means the adapter trained on none."""
        return cls(load_test(path) if path.is_file() else [], path)

    def __contains__(self, judgement: Judgement) -> bool:
        return judgement.id in self.ids or question_key(judgement.question) in self.keys


def reciprocal_ranks(rankings: np.ndarray, relevant: Sequence[np.ndarray], mrr_k: int) -> np.ndarray:
    """(n,) reciprocal rank of the first relevant row within the top `mrr_k` of `rankings` (n, depth), 0 when
    none is there: eval's MRR@k per question."""
    return per_query_reciprocal_rank(hit_matrix(rankings, relevant), mrr_k)


def preview(
    judgements: Sequence[Judgement],
    rankings: Mapping[str, Mapping[str, np.ndarray]],
    arms: Sequence[str],
    row_of: Mapping[str, int],
    trained: TrainedOn,
    params: EvalParams,
) -> dict[str, Any]:
    """The recommendation on the labelled questions the adapter did not train on. `rankings`: question key ->
    arm -> (depth,) corpus rows for every labelled question, `arms` the arms to compare; `row_of`: chunk id ->
    corpus row. "none" judgements are not scored."""
    labelled = [j for j in judgements if not j.none]
    kept = [j for j in labelled if j not in trained]
    relevant = [np.array([row_of[r] for r in j.relevant_ids], np.int64) for j in kept]
    scores = {
        arm: reciprocal_ranks(np.stack([rankings[question_key(j.question)][arm] for j in kept]), relevant, params.mrr_k)
        if kept
        else np.zeros(0)
        for arm in arms
    }
    out: dict[str, Any] = {"labelled": len(labelled), "scored": len(kept), "left_out": len(labelled) - len(kept)}
    if not arms:
        return {**out, "statement": "No arms to compare."}
    # The rule eval applies at the next `dvc repro`: the labels' best replaces the no-label choice only when ahead.
    arm, statement, details = with_labels(
        scores, f"mrr@{params.mrr_k}", params, params.recommend.without_labels, params.recommend.margin
    )
    if out["left_out"]:
        statement += (
            f" {out['left_out']} labelled question(s) left out: the current adapter trained on them "
            f"({trained.source}, copied by fetch at the last dvc repro)."
        )
    return {**out, **details["labelled"], "arm": arm, "statement": statement}
