"""When two texts are the same text, or one nearly copies the other: the one rule behind every test-leakage
guard and near-copy check.

Case, accents, punctuation and spacing are ignored: "Quelle est la période ?" and "quelle est la periode"
are one question. Accents are stripped because every use is a guard: a training question that differs from
a test question only by accents (a query log typed on a keyboard without them) is the test question, and
training on it would measure what was trained; refusing a genuinely different question that differs only by
accents costs one question, which the error names. Compatibility forms (full-width letters, ligatures) fold
to their plain letters the same way (Unicode NFKD).

Used by: `records.load_train_questions` (train questions against test ones), `ragtune label`'s leakage guard
and question keys, real-question copies (`adapter.real_questions`), and synthesize's filters (a generated
question equal to a test question, duplicates) and near-copy checks (`is_near_copy`: synthesize's degenerate
questions, the ict backend's sentence queries). No cache key is derived from it.
"""

from __future__ import annotations

import re
import unicodedata

_NOT_WORD = re.compile(r"[^\w]+")


def normalise_text(text: str) -> str:
    """`text` case-folded, accents and punctuation dropped, whitespace collapsed to single spaces."""
    if text.isascii():  # NFKD and the accent filter leave ASCII as it is; the per-character loop is the cost
        text = text.casefold()
    else:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


# A question is a (near-)copy of its chunk when its words cover this share of the chunk's distinct words
# (or it equals the chunk): retrieval then finds the chunk by string overlap, validation reads perfect,
# and nothing is learnt. Counted and reported (`degenerate_*`), never dropped.
NEAR_COPY_COVERAGE = 0.9


def is_near_copy(question: str, chunk_text: str, coverage: float = NEAR_COPY_COVERAGE) -> bool:
    """True when `question` is the chunk, or its words cover >= `coverage` of the chunk's distinct words."""
    q, c = normalise_text(question), normalise_text(chunk_text)
    if q == c:
        return True
    chunk_words = set(c.split())
    return bool(chunk_words) and len(chunk_words & set(q.split())) >= coverage * len(chunk_words)
