"""The labelling session without HTTP: questions in, candidates and saved judgements out (JSON-ready dicts).

`LabelApp` holds what start-up loaded (the arms, the corpus, the store of judgements, the optional file of
questions to step through) and one lock, so that requests from several browser tabs run one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RagtuneError
from ..evaluation.metrics import EvalParams
from .pooling import ArmSearch, CorpusFinder, Rankings, pool
from .preview import TrainedOn, preview
from .storage import LabelStore, label_id, question_key


@dataclass
class LabelApp:
    """One labelling session. `queue`: (id or None, question) pairs to step through, in order."""

    search: ArmSearch
    store: LabelStore
    params: EvalParams
    trained: TrainedOn
    k: int
    queue: Sequence[tuple[str | None, str]] = ()
    queue_name: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _rankings: dict[str, Rankings] = field(default_factory=dict)
    _skipped: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        corpus = self.search.corpus
        self._row_of = {cid: i for i, cid in enumerate(corpus.ids)}
        self._finder = CorpusFinder(corpus)
        self._queue_ids = {question_key(q): qid for qid, q in self.queue if qid}
        # The labels so far, ranked in one batch, so the recommendation is ready at once.
        self._ranked([j.question for j in self.store.judgements() if not j.none])

    # --- reading ----------------------------------------------------------------------------------

    def _ranked(self, questions: Sequence[str]) -> list[Rankings]:
        todo = list(dict.fromkeys(q for q in questions if question_key(q) not in self._rankings))
        for q, ranks in zip(todo, self.search.rank(todo)):
            self._rankings[question_key(q)] = ranks
        return [self._rankings[question_key(q)] for q in questions]

    def chunk(self, row: int) -> dict[str, Any]:
        corpus = self.search.corpus
        return {"id": corpus.ids[row], "title": corpus.titles[row], "text": corpus.texts[row]}

    def state(self) -> dict[str, Any]:
        """Counts, the recommendation, every judgement (newest last) and the next queued question."""
        judgements = self.store.judgements()
        rankings = {
            question_key(j.question): self._rankings[question_key(j.question)] for j in judgements if not j.none
        }
        return {
            "out": str(self.store.path),
            "none_file": str(self.store.none_path),
            "counts": self.store.counts,
            "arms": self.search.arm_names,
            "k": self.k,
            "recommendation": preview(
                judgements, rankings, self.search.arm_names, self._row_of, self.trained, self.params
            ),
            "judgements": [
                {"id": j.id, "question": j.question, "relevant_ids": list(j.relevant_ids)} for j in judgements
            ],
            "queue": self._next_in_queue(),
        }

    def _next_in_queue(self) -> dict[str, Any] | None:
        if not self.queue:
            return None
        done = sum(self.store.get(q) is not None for _, q in self.queue)
        waiting = [
            (i, q)
            for i, (_, q) in enumerate(self.queue)
            if self.store.get(q) is None and question_key(q) not in self._skipped
        ]
        head = {"file": self.queue_name, "total": len(self.queue), "judged": done, "skipped": len(self._skipped)}
        if not waiting:
            return {**head, "question": None, "position": None}
        position, question = waiting[0]
        return {**head, "question": question, "position": position + 1}

    def candidates(self, question: str) -> dict[str, Any]:
        """The pooled, shuffled candidates for `question`, its earlier judgement if any, and whether it is
        refused as a test question (checked now, before the user reads anything)."""
        question = question.strip()
        if not question:
            raise RagtuneError("type a question first")
        before = self.store.get(question)
        refused = None
        try:
            qid = before.id if before else (self._queue_ids.get(question_key(question)) or label_id(question))
            self.store.guard.check(qid, question)
        except RagtuneError as exc:
            refused = str(exc)
        rows = pool(self._ranked([question])[0], self.k, question)
        marked = list(before.relevant_ids) if before else []
        pooled = {self.search.corpus.ids[r] for r in rows}
        return {
            "question": before.question if before else question,
            "refused": refused,
            "judged": None if before is None else ("none" if before.none else "labelled"),
            "marked": marked,
            "candidates": [self.chunk(r) for r in rows],
            # Chunks marked earlier that no arm ranks in its top k now (found by search, or the pipeline changed).
            "marked_elsewhere": [self.chunk(self._row_of[m]) for m in marked if m not in pooled and m in self._row_of],
        }

    def find(self, text: str, limit: int = 20) -> dict[str, Any]:
        rows, total = self._finder.find(text, limit)
        return {"query": text, "total": total, "chunks": [self.chunk(r) for r in rows]}

    # --- writing ----------------------------------------------------------------------------------

    def judge(self, question: str, relevant_ids: Sequence[str]) -> dict[str, Any]:
        """Save the judgement (durably: the store fsyncs before returning), then the new state."""
        saved = self.store.save(question, relevant_ids, self._queue_ids.get(question_key(question)))
        if not saved.none:
            self._ranked([saved.question])
        return {
            "saved": {"id": saved.id, "question": saved.question, "relevant_ids": list(saved.relevant_ids)},
            **self.state(),
        }

    def skip(self, question: str) -> dict[str, Any]:
        """Pass over a queued question for this session (nothing is written)."""
        self._skipped.add(question_key(question))
        return self.state()
