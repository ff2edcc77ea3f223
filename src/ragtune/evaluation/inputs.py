"""The eval stage's inputs: the pipeline paths, the corpus with its embeddings, and the question sets
(test, and validation: the synthetic split of the train stage or the user's real validation questions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RagtuneError
from ..io import read_json
from ..search.dense import ids_to_indices
from ..search.lexical import Bm25Params


@dataclass(frozen=True)
class QuerySet:
    """Questions of one evaluation set, row-aligned: ids, texts (None where unknown), embeddings
    `query_emb` (n, dim), relevant corpus rows per question, and origin (human|synthetic) per question."""

    name: str
    ids: list[str]
    query_emb: np.ndarray
    relevant: list[np.ndarray]
    origins: list[str]
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.query_emb.shape[0] != n or len(self.relevant) != n or len(self.origins) != n:
            raise ValueError(
                f"query set {self.name}: rows disagree ({n} ids, {self.query_emb.shape[0]} "
                f"embeddings, {len(self.relevant)} relevance lists, {len(self.origins)} origins)"
            )
        if self.texts is not None and len(self.texts) != n:
            raise ValueError(f"query set {self.name}: {len(self.texts)} texts for {n} ids")

    @property
    def n_relevant(self) -> np.ndarray:
        return np.array([len(r) for r in self.relevant], dtype=np.int64)


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    titles: list[str | None]
    emb: np.ndarray  # (n_chunks, dim), row-aligned with ids
    documents: np.ndarray | None = None  # (n_chunks,) int64 document of each row, when passages were cut

    def lexical_texts(self, bm25: Bm25Params, source: str | None) -> list[str]:
        """The texts BM25 indexes: with their titles when `bm25.include_title` says so for `source`."""
        from ..records import include_title, indexed_text

        with_title = include_title(bm25.include_title, source)
        return [indexed_text(t, title, with_title) for t, title in zip(self.texts, self.titles)]


def require_file(path: Path, how: str) -> Path:
    if not path.exists():
        raise RagtuneError(f"{path}: not found; {how}")
    return path


def load_corpus_with_embeddings(corpus_path: Path, corpus_npz: Path) -> Corpus:
    """Chunks and their embeddings, rows in the embeddings' order; stale embeddings are an error."""
    from ..embeddings_npz import load_embeddings
    from ..records import load_corpus

    require_file(corpus_path, "run the fetch stage first (dvc repro fetch, or make run)")
    require_file(corpus_npz, "run the embed stage first (dvc repro embed, or make run)")
    chunks = {c.id: c for c in load_corpus(corpus_path)}
    ids, emb = load_embeddings(corpus_npz)
    missing = [i for i in ids if i not in chunks]
    if missing or len(ids) != len(chunks):
        raise RagtuneError(
            f"{corpus_npz} does not match {corpus_path} ({len(ids)} embedded rows, {len(chunks)} "
            f"chunks; e.g. {missing[:3]}): the embeddings are stale, run dvc repro embed"
        )
    documents = None
    if any(chunks[i].document is not None for i in ids):
        first: dict[str, int] = {}
        documents = np.fromiter(
            (first.setdefault(chunks[i].document or i, len(first)) for i in ids), dtype=np.int64, count=len(ids)
        )
    return Corpus(ids, [chunks[i].text for i in ids], [chunks[i].title for i in ids], emb, documents)


def load_test_set(test_path: Path, test_npz: Path, corpus_ids: Sequence[str], name: str = "test") -> QuerySet:
    from ..embeddings_npz import embeddings_for
    from ..records import load_test

    require_file(test_path, "run the fetch (and synthesize) stages first (make run)")
    require_file(test_npz, "run the embed stage first (dvc repro embed, or make run)")
    questions = load_test(test_path, corpus_ids=corpus_ids)
    emb = embeddings_for([q.id for q in questions], test_npz, f"question ids of {test_path}")
    return QuerySet(
        name=name,
        ids=[q.id for q in questions],
        query_emb=emb,
        relevant=ids_to_indices(corpus_ids, [q.relevant_ids for q in questions]),
        origins=[q.origin for q in questions],
        texts=[q.question for q in questions],
    )


def load_validation_set(
    split_path: Path,
    questions_npz: Path,
    corpus_ids: Sequence[str],
    questions_path: Path | None = None,
    name: str = "val",
    real_path: Path | None = None,
    real_ids: Sequence[str] | None = None,
) -> QuerySet:
    """The questions the train stage held out for validation (ids in split.json["val"]): synthetic ones,
    or with `"validation": "real"` the user's labelled real questions (`real_path`, embedded in real.npz
    beside `questions_npz`), `real_ids` in place of split.json's when given (every real question some
    bagged member held out)."""

    from ..embeddings_npz import load_embeddings_with_columns
    from ..records import SyntheticQuestion, read_jsonl

    require_file(split_path, "run the train stage first (dvc repro train)")
    require_file(questions_npz, "run the embed stage on the synthetic questions first (dvc repro embed)")
    split = read_json(split_path)
    if not isinstance(split, dict) or not isinstance(split.get("val"), list):
        raise RagtuneError(
            f'{split_path}: expected {{"train": [...], "val": [...]}} of question ids; rerun the train stage'
        )
    val_ids = [str(x) for x in split["val"]]
    if split.get("validation") == "real":
        val_ids = list(real_ids) if real_ids is not None else val_ids
        if real_path is None:
            raise RagtuneError(f"{split_path}: validation on real questions, but no train_questions file given")
        full = load_test_set(real_path, questions_npz.parent / "real.npz", corpus_ids, name=name)
        where = {q: i for i, q in enumerate(full.ids)}
        missing = [q for q in val_ids if q not in where]
        if missing:
            raise RagtuneError(
                f"{split_path}: validation ids {missing[:5]} are not in {real_path}: the split "
                "is stale, rerun dvc repro train"
            )
        pick = [where[q] for q in val_ids]
        assert full.texts is not None  # load_test_set keeps the question texts
        return QuerySet(
            name=name,
            ids=val_ids,
            query_emb=full.query_emb[pick],
            relevant=[full.relevant[i] for i in pick],
            origins=["human"] * len(val_ids),
            texts=[full.texts[i] for i in pick],
        )
    ids, emb, cols = load_embeddings_with_columns(questions_npz)
    if "chunk_ids" not in cols:
        raise RagtuneError(f"{questions_npz}: no chunk_ids column; rerun dvc repro embed")
    row = {qid: i for i, qid in enumerate(ids)}
    missing = [q for q in val_ids if q not in row]
    if missing:
        raise RagtuneError(
            f"{split_path}: validation ids {missing[:5]} are not in {questions_npz}: "
            "the split is stale, rerun dvc repro train"
        )
    order = np.array([row[q] for q in val_ids], dtype=np.int64)
    chunk_ids = [cols["chunk_ids"][i] for i in order]
    try:
        relevant = ids_to_indices(corpus_ids, [[c] for c in chunk_ids])
    except KeyError as exc:
        raise RagtuneError(f"{questions_npz}: {exc.args[0]}; rerun dvc repro embed") from None
    texts = None
    if questions_path is not None and questions_path.is_file():
        by_id = {q.id: q.question for q in read_jsonl(questions_path, SyntheticQuestion)}
        if all(q in by_id for q in val_ids):
            texts = [by_id[q] for q in val_ids]
    return QuerySet(
        name=name,
        ids=val_ids,
        query_emb=emb[order],
        relevant=relevant,
        origins=["synthetic"] * len(val_ids),
        texts=texts,
    )


def _optional_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
