"""Answer-quality scores that need no LLM: token F1 and embedding similarity to a reference.

Token F1 is the SQuAD measure: both texts are lower-cased, stripped of punctuation and English articles,
split on whitespace, and the harmonic mean of token precision and recall is taken over the multiset
overlap. Embedding similarity is the cosine of the two texts' embeddings from the pipeline's embedder.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}‘’“”«»–—…]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_tokens(text: str) -> list[str]:
    """SQuAD-style normalisation: NFKC, lower case, no punctuation, no articles, whitespace tokens."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of `prediction` against `reference`, in [0, 1]. Two empty texts score 1, one empty 0."""
    pred, ref = normalise_tokens(prediction), normalise_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2.0 * precision * recall / (precision + recall)


def token_f1_many(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Row-aligned token F1: float64 array of len(predictions)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return np.array([token_f1(p, r) for p, r in zip(predictions, references)], dtype=np.float64)


def rowwise_cosine(a_emb: np.ndarray, b_emb: np.ndarray) -> np.ndarray:
    """Cosine of row i of `a_emb` (n, d) with row i of `b_emb` (n, d): float64 (n,). A zero row scores 0."""
    a = np.asarray(a_emb, dtype=np.float64)
    b = np.asarray(b_emb, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"row-aligned (n, d) matrices expected, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("nd,nd->n", a, b)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
