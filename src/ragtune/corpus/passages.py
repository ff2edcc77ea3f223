"""Long documents cut into passages that fit the embedder's window.

An embedder reads at most `max_seq_length` word pieces of a text and silently drops the rest, so the end
of a long document can never be retrieved by meaning. With `fetch.passages.enabled`, every text longer than
`size` word pieces (counted by the embedder's own tokenizer, prompt and special tokens included) is cut by
`semchunk` (token-aware and recursive: it splits at paragraph, then sentence, then word boundaries, so a
passage rarely starts mid-sentence; lighter than chonkie or langchain's splitters and exact with any Hugging
Face tokenizer) into passages of at most `size` word pieces, consecutive ones sharing `overlap`. Passage
ids are `<doc>#p1`, `<doc>#p2`, ...; each keeps its document's id in `document` (eval ranks documents by
their best passage) and title, and has the document as `parent` unless it had one. A question relevant to a
document is relevant to each of its passages. Texts that fit are kept whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from ..params import PassageParams
from ..records import Chunk, TestQuestion

__all__ = ["PassageParams", "make_splitter", "split_text", "split_corpus", "map_relevance"]

TokenCounter = Callable[[str], int]


class PassageIdClash(ValueError):
    """A passage id `<doc>#p<i>` that a chunk of the corpus already has."""

    def __init__(self, passage_id: str, document_id: str):
        super().__init__(f"passage id {passage_id!r} is also the id of a chunk in the corpus; rename that chunk")
        self.passage_id, self.document_id = passage_id, document_id


def make_splitter(count: TokenCounter, size: int, overlap: int) -> Callable[[str], list[str]]:
    """A function cutting a text into passages of at most `size` tokens (by `count`), consecutive ones sharing
    about `overlap`. Built once per corpus: semchunk memoises its token counts across texts."""
    import semchunk

    if overlap >= size:
        raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
    chunker = semchunk.chunkerify(count, size)
    # One text in, its passages out: semchunk's return type is the union over its other call forms (a list of
    # texts, offsets), so it is cast to the one this call gives.
    return lambda text: [p for p in cast(list[str], chunker(text, overlap=overlap or None)) if p.strip()]


def split_text(text: str, count: TokenCounter, size: int, overlap: int) -> list[str]:
    """`text` as passages (`make_splitter`)."""
    return make_splitter(count, size, overlap)(text)


def split_corpus(
    chunks: Sequence[Chunk], count: TokenCounter, size: int, overlap: int
) -> tuple[list[Chunk], dict[str, list[str]], dict[str, Any]]:
    """Every chunk longer than `size` tokens cut into passages. Returns the new corpus (passages in place of
    their document, in order), document id -> passage ids (for the split ones), and counts for the report."""
    out: list[Chunk] = []
    passages_of: dict[str, list[str]] = {}
    split = make_splitter(count, size, overlap)
    for chunk in chunks:
        if count(chunk.text) <= size:
            out.append(chunk)
            continue
        pieces = split(chunk.text)
        ids = [f"{chunk.id}#p{i}" for i in range(1, len(pieces) + 1)]
        passages_of[chunk.id] = ids
        out += [
            chunk.model_copy(update={"id": pid, "text": text, "document": chunk.id, "parent": chunk.parent or chunk.id})
            for pid, text in zip(ids, pieces)
        ]
    seen = {c.id for c in chunks}
    clash = [c for c in out if c.document is not None and c.id in seen]
    if clash:
        raise PassageIdClash(clash[0].id, clash[0].document or "")
    counts = [len(v) for v in passages_of.values()]
    stats = {
        "documents_split": len(passages_of),
        "passages": sum(counts),
        "passage_size": size,
        "passage_overlap": overlap,
        "most_passages": max(counts, default=0),
    }
    return out, passages_of, stats


def map_relevance(questions: Sequence[TestQuestion], passages_of: dict[str, list[str]]) -> list[TestQuestion]:
    """Questions with each split document's id replaced by all of its passages' ids."""

    def expand(ids: list[str]) -> list[str]:
        return list(dict.fromkeys(p for rid in ids for p in passages_of.get(rid, [rid])))

    return [
        q
        if not any(r in passages_of for r in q.relevant_ids)
        else q.model_copy(update={"relevant_ids": expand(q.relevant_ids)})
        for q in questions
    ]
