"""Fetch a corpus from the source named in params and summarise it for fetch/report.json."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..params import FetchParams
from .sources import SourceResult

log = logging.getLogger(__name__)


def fetch_source(params: FetchParams) -> SourceResult:
    if params.source == "eu-law":
        from .sources import eu_law

        result = eu_law.fetch(params.eu_law, params.seed)
    elif params.source == "legal-rag-bench":
        from .sources import legal_rag_bench

        result = legal_rag_bench.fetch(params.legal_rag_bench)
    else:
        from .sources import jsonl

        result = jsonl.fetch(params.jsonl, params.seed)
    check_distinct_texts(result.chunks, params.jsonl.corpus if params.source == "jsonl" else params.source)
    return result


def check_distinct_texts(chunks, where: str | None) -> None:
    """Chunks whose texts are all the same cannot be told apart by any retriever, and no adapter can be
    trained or validated on them: an error saying so. Some copies only earn a warning."""
    texts = Counter(c.text for c in chunks)
    if len(chunks) > 1 and len(texts) < 2:
        raise DataError(
            f"{where}: all {len(chunks)} chunks have the same text, so no retriever can tell them apart and no "
            "adapter can be trained or validated on them; give chunks with different texts"
        )
    copies = [c.id for c in chunks if texts[c.text] > 1]
    if copies:
        log.warning(
            "%s: %d of %d chunks share their text with another chunk (%s%s): retrieval cannot tell copies apart",
            where,
            len(copies),
            len(chunks),
            ", ".join(copies[:5]),
            ", ..." if len(copies) > 5 else "",
        )


def apply_passages(
    result: SourceResult, count, size: int, overlap: int, corpus_file: str | os.PathLike[str] | None = None
) -> SourceResult:
    """`result` with every text longer than `size` tokens (by `count`) cut into passages, and the test and
    training questions' relevance mapped to them (`ragtune.corpus.passages`). `corpus_file`, the source's
    file when it has one, is named (with the line) in the error when a passage id is taken."""
    from .passages import PassageIdClash, map_relevance, split_corpus

    try:
        chunks, passages_of, stats = split_corpus(result.chunks, count, size, overlap)
    except PassageIdClash as clash:
        where = _line_of(corpus_file, clash.passage_id) if corpus_file else None
        raise DataError(
            f"{where or 'the corpus'}: chunk id {clash.passage_id!r} is also the id fetch.passages gives a "
            f"passage of the long text {clash.document_id!r}; rename that chunk (ids ending in #p<number> are "
            "taken by passages), or set fetch.passages.enabled: false"
        ) from None
    return SourceResult(
        chunks=chunks,
        test=map_relevance(result.test, passages_of),
        stats={**result.stats, **stats},
        train_questions=map_relevance(result.train_questions, passages_of),
    )


def _line_of(path: str | os.PathLike[str], chunk_id: str) -> str | None:
    """`file:line` of the chunk with `chunk_id` in a corpus JSONL file, if it is there."""
    from ..records import Chunk, iter_jsonl

    for lineno, chunk in iter_jsonl(path, Chunk):
        if chunk.id == chunk_id:
            return f"{path}:{lineno}"
    return None


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
