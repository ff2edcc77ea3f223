"""Embed the pipeline's texts: corpus chunks as documents, test and synthetic questions as queries."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings_npz import save_embeddings
from ..errors import DataError
from ..records import SyntheticQuestion, TestQuestion, include_title, indexed_text, load_corpus, load_test, read_jsonl
from .embedder import CachedEmbedder, window_report


@dataclass(frozen=True)
class EmbedInputs:
    corpus: Path
    test: Path | tuple[Path, ...]  # several files are one test set (fetch's, plus synthesize's synthetic ones)
    questions: Path | None = None
    real: Path | None = None  # labelled real training questions (fetch's train_questions.jsonl)
    source: str | None = None  # fetch's source (data/fetch/report.json), for embedding.include_title: auto

    @property
    def test_files(self) -> tuple[Path, ...]:
        return (self.test,) if isinstance(self.test, Path) else tuple(self.test)


def load_test_set(paths: tuple[Path, ...], corpus_ids: list[str]) -> list[TestQuestion]:
    """The test questions of several files, ids unique across them."""
    out: list[TestQuestion] = []
    where: dict[str, Path] = {}
    for p in paths:
        for q in load_test(p, corpus_ids=corpus_ids):
            if q.id in where:
                raise DataError(f"{p}: test question id '{q.id}' also in {where[q.id]}")
            where[q.id] = p
            out.append(q)
    return out


@dataclass
class EmbeddedSets:
    """The embedded sets, held until written: the embed stage closes its cache (the merge of this run's rows
    into the tracked cache, which can fail on a full disk) before it replaces any output. `files` maps a file
    name to save_embeddings' arguments (ids, matrix, extra columns)."""

    counts: dict[str, Any]
    files: dict[str, tuple[list[str], np.ndarray, dict[str, list[str]]]]

    def write(self, out_dir: Path) -> None:
        for name, (ids, emb, extra) in self.files.items():
            save_embeddings(out_dir / name, ids, emb, **extra)


def embed_all(embedder: CachedEmbedder, inputs: EmbedInputs, out_dir: Path) -> dict[str, Any]:
    """Write corpus.npz, test.npz (and questions.npz, real.npz) under out_dir; return counts for the report."""
    sets = embed_sets(embedder, inputs)
    sets.write(out_dir)
    return sets.counts


def embed_sets(embedder: CachedEmbedder, inputs: EmbedInputs) -> EmbeddedSets:
    """Embed corpus, test (and synthetic and real) questions; counts for the report and the files to write."""
    t0 = time.perf_counter()
    chunks = load_corpus(inputs.corpus)
    test = load_test_set(inputs.test_files, [c.id for c in chunks])
    counts: dict[str, Any] = {}
    files: dict[str, tuple[list[str], np.ndarray, dict[str, list[str]]]] = {}

    with_title = include_title(embedder.params.include_title, inputs.source)
    texts = [indexed_text(c.text, c.title, with_title) for c in chunks]
    counts["include_title"] = with_title
    corpus_emb = embedder.encode_documents(texts, desc="corpus")
    files["corpus.npz"] = ([c.id for c in chunks], corpus_emb, {})
    counts["corpus"] = len(chunks)
    # Texts past the window are embedded from their start only: say how many, whatever splitting is set.
    counts["window"] = window_report(
        embedder.token_lengths(texts, embedder.params.document_prompt), embedder.model.max_seq_length
    )

    test_emb = embedder.encode_queries([q.question for q in test], desc="test questions")
    files["test.npz"] = ([q.id for q in test], test_emb.reshape(len(test), embedder.dim), {})
    counts["test"] = len(test)

    if inputs.questions is not None:
        questions = read_jsonl(inputs.questions, SyntheticQuestion)
        q_emb = embedder.encode_queries([q.question for q in questions], desc="synthetic questions")
        files["questions.npz"] = (
            [q.id for q in questions],
            q_emb.reshape(len(questions), embedder.dim),
            {"chunk_ids": [q.chunk_id for q in questions], "backends": [q.backend for q in questions]},
        )
        counts["questions"] = len(questions)
    if inputs.real is not None:
        real = load_test(inputs.real, corpus_ids=[c.id for c in chunks])
        r_emb = embedder.encode_queries([q.question for q in real], desc="real training questions")
        files["real.npz"] = ([q.id for q in real], r_emb.reshape(len(real), embedder.dim), {})
        counts["real"] = len(real)
    counts["test_synthetic"] = sum(q.origin == "synthetic" for q in test)

    counts = {
        **counts,
        **embedder.describe(),
        "cache_hits": embedder.cache.hits,
        "cache_misses": embedder.cache.misses,
        "encoded": embedder.encoded,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return EmbeddedSets(counts, files)
