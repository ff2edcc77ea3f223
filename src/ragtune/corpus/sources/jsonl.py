"""The user's own corpus.jsonl (and optional test.jsonl) in the contracts of DESIGN.md.

Without a test file, a seeded fraction of chunks is held out (`split="test"`); the synthesize stage
writes synthetic test questions for them, kept apart from the training questions.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ...errors import DataError, RagtuneError
from ...params import JsonlSourceParams
from ...records import load_corpus, load_test, load_train_questions, mark_test_chunks
from . import SourceResult

log = logging.getLogger(__name__)


def fetch(params: JsonlSourceParams, seed: int) -> SourceResult:
    if not params.corpus:
        raise RagtuneError(
            "fetch.jsonl.corpus is not set: give the path of your corpus.jsonl "
            "(dvc exp run -S fetch.source=jsonl -S fetch.jsonl.corpus=path/to/corpus.jsonl)"
        )
    if not Path(params.corpus).resolve().is_relative_to(Path("corpus").resolve()):
        log.warning("fetch.jsonl.corpus %s is outside corpus/: DVC will not notice when it changes", params.corpus)
    chunks = load_corpus(Path(params.corpus))
    ids = [c.id for c in chunks]
    test = load_test(Path(params.test), corpus_ids=ids) if params.test else []
    if params.test and not test:
        raise DataError(
            f'{params.test}: no test questions (the file is empty); add questions ({{"id", "question", '
            '"relevant_ids"}, one JSON object a line), or set fetch.jsonl.test: null to hold out '
            "fetch.jsonl.test_fraction of the chunks for synthetic test questions"
        )
    train: list = []
    if params.train_questions:
        train = load_train_questions(
            Path(params.train_questions), test, corpus_ids=ids, test_name=params.test or "the test set"
        )
    stats = {"train_questions_from": params.train_questions} if params.train_questions else {}
    if params.test:
        return SourceResult(
            chunks=mark_test_chunks(chunks, test),
            test=test,
            stats={"test_from": "file", **stats},
            train_questions=train,
        )
    # Held-out chunks get synthetic test questions; a chunk a real training question is about is not held
    # out (training on it would measure what was trained).
    taught = {rid for q in train for rid in q.relevant_ids}
    eligible = sorted(cid for cid in ids if cid not in taught)
    if not eligible:
        raise RagtuneError(
            f"{params.train_questions}: the real training questions cover every chunk, so no "
            "chunk is left to hold out for synthetic test questions; give a test file "
            "(fetch.jsonl.test)"
        )
    rng = random.Random(seed)
    n_test = min(len(eligible), max(1, round(len(chunks) * params.test_fraction)))
    held = set(rng.sample(eligible, n_test))
    marked = [c.model_copy(update={"split": "test"}) if c.id in held else c for c in chunks]
    return SourceResult(
        chunks=marked,
        test=[],
        train_questions=train,
        stats={"test_from": "held-out chunks (synthetic questions)", **stats},
    )
