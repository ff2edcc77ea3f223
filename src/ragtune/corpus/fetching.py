"""Fetch a corpus from the source named in params and summarise it for fetch/report.json."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..params import FetchParams
from .sources import SourceResult


def fetch_source(params: FetchParams) -> SourceResult:
    if params.source == "eu-law":
        from .sources import eu_law

        return eu_law.fetch(params.eu_law, params.seed)
    if params.source == "legal-rag-bench":
        from .sources import legal_rag_bench

        return legal_rag_bench.fetch(params.legal_rag_bench)
    from .sources import jsonl

    return jsonl.fetch(params.jsonl, params.seed)


def apply_passages(result: SourceResult, count, size: int, overlap: int) -> SourceResult:
    """`result` with every text longer than `size` tokens (by `count`) cut into passages, and the test and
    training questions' relevance mapped to them (`ragtune.corpus.passages`)."""
    from .passages import map_relevance, split_corpus

    chunks, passages_of, stats = split_corpus(result.chunks, count, size, overlap)
    return SourceResult(
        chunks=chunks,
        test=map_relevance(result.test, passages_of),
        stats={**result.stats, **stats},
        train_questions=map_relevance(result.train_questions, passages_of),
    )


def report_source(report_path: str | os.PathLike[str]) -> str | None:
    """The `source` a fetch report.json names, or None when the file is absent or unreadable (the
    stages after fetch read it for `include_title: auto`)."""
    import json

    try:
        data = json.loads(Path(report_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("source") if isinstance(data, dict) else None


def report(params: FetchParams, result: SourceResult) -> dict[str, Any]:
    splits = Counter(c.split for c in result.chunks)
    lengths = sorted(len(c.text) for c in result.chunks)
    return {
        "source": params.source,
        "chunks": len(result.chunks),
        "train_chunks": splits.get("train", 0),
        "test_chunks": splits.get("test", 0),
        "test_questions": len(result.test),
        "train_questions": len(result.train_questions),
        "chunk_chars_median": lengths[len(lengths) // 2] if lengths else 0,
        "chunk_chars_max": lengths[-1] if lengths else 0,
        **result.stats,
    }
