"""The user's own corpus.jsonl (and optional test.jsonl) in the contracts of DESIGN.md.

Without a test file, a seeded fraction of chunks is held out (`split="test"`); the synthesize stage
writes synthetic test questions for them, kept apart from the training questions.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..errors import RagtuneError
from ..params import JsonlSourceParams
from ..records import load_corpus, load_test, mark_test_chunks
from . import SourceResult

log = logging.getLogger(__name__)


def fetch(params: JsonlSourceParams, seed: int) -> SourceResult:
    if not params.corpus:
        raise RagtuneError("fetch.jsonl.corpus is not set: give the path of your corpus.jsonl "
                           "(dvc exp run -S fetch.source=jsonl -S fetch.jsonl.corpus=path/to/corpus.jsonl)")
    if not Path(params.corpus).resolve().is_relative_to(Path("corpus").resolve()):
        log.warning("fetch.jsonl.corpus %s is outside corpus/: DVC will not notice when it changes",
                    params.corpus)
    chunks = load_corpus(Path(params.corpus))
    if params.test:
        test = load_test(Path(params.test), corpus_ids=[c.id for c in chunks])
        return SourceResult(chunks=mark_test_chunks(chunks, test), test=test,
                            stats={"test_from": "file"})
    rng = random.Random(seed)
    n_test = max(1, round(len(chunks) * params.test_fraction))
    held = set(rng.sample(sorted(c.id for c in chunks), n_test))
    marked = [c.model_copy(update={"split": "test"}) if c.id in held else c for c in chunks]
    return SourceResult(chunks=marked, test=[], stats={"test_from": "held-out chunks (synthetic questions)"})
