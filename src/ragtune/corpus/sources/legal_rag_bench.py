"""The reference benchmark isaacus/legal-rag-bench from the Hugging Face Hub, at a pinned revision.

Files come through `huggingface_hub` (network, or the local HF cache when offline) and are checked
against the published sha256. The corpus holds 4,876 rows but only 4,658 distinct texts: identical
texts under different ids are merged into one chunk (the first id wins) and every question's relevant
id is mapped to that chunk, so retrieving the twin of a gold passage counts as a hit, not a miss, and
twins do not crowd each other out of the top k.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ...errors import DataError, RagtuneError
from ...params import LegalRagBenchParams
from ...records import Chunk, TestQuestion, mark_test_chunks
from . import SourceResult


def download(params: LegalRagBenchParams, filename: str) -> Path:
    """Path to `filename` at the pinned revision: from the Hub, else from the local HF cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    kwargs: dict[str, Any] = dict(
        repo_id=params.repo_id, filename=filename, repo_type="dataset", revision=params.revision
    )
    try:
        return Path(hf_hub_download(**kwargs))
    except LocalEntryNotFoundError:
        pass  # offline and not cached: fall through to the error below
    except Exception:  # network trouble: the cache may still have it
        try:
            return Path(hf_hub_download(**kwargs, local_files_only=True))
        except Exception:
            pass
    raise RagtuneError(
        f"fetch.legal_rag_bench: cannot get {filename} of dataset {params.repo_id}@{params.revision[:8]}: "
        "the Hugging Face Hub is unreachable and the file is not in the local HF cache. Download it once "
        "with network access (or copy the HF cache), or use fetch.source=eu-law."
    )


def verify_sha256(path: Path, expected: str, key: str) -> str:
    """Check a file against a full hex digest or an abbreviated `prefix…suffix` one."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if "…" in expected:
        head, tail = expected.split("…", 1)
        ok = digest.startswith(head) and digest.endswith(tail)
    else:
        ok = digest == expected
    if not ok:
        raise DataError(
            f"{path}: sha256 {digest} does not match {key} ({expected}); the file differs "
            "from the pinned benchmark. Check fetch.legal_rag_bench.revision."
        )
    return digest


def _rows(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            rows.append((lineno, obj))
    return rows


def _field(path: Path, lineno: int, obj: dict, name: str, kinds=(str,), required: bool = True):
    val = obj.get(name)
    if val is None and not required:
        return None
    if isinstance(val, bool) or not isinstance(val, kinds):
        raise DataError(
            f"{path}:{lineno}: field '{name}' must be {' or '.join(k.__name__ for k in kinds)}, "
            f"got {type(val).__name__}"
        )
    return str(val) if isinstance(val, int) else val


def build(corpus_path: Path, qa_path: Path) -> SourceResult:
    canonical_by_text: dict[str, str] = {}
    canonical_of: dict[str, str] = {}
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for lineno, obj in _rows(corpus_path):
        cid = _field(corpus_path, lineno, obj, "id", (str, int))
        text = _field(corpus_path, lineno, obj, "text")
        title = _field(corpus_path, lineno, obj, "title", required=False)
        if cid in seen:
            raise DataError(f"{corpus_path}:{lineno}: duplicate id '{cid}' (first on line {seen[cid]})")
        seen[cid] = lineno
        if not text.strip():
            raise DataError(f"{corpus_path}:{lineno}: field 'text' is empty")
        key = " ".join(text.split())
        if key in canonical_by_text:
            canonical_of[cid] = canonical_by_text[key]
            continue
        canonical_by_text[key] = canonical_of[cid] = cid
        chunks.append(Chunk(id=cid, text=text, title=title, source="legal-rag-bench"))
    questions: list[TestQuestion] = []
    for lineno, obj in _rows(qa_path):
        qid = _field(qa_path, lineno, obj, "id", (str, int))
        rel = _field(qa_path, lineno, obj, "relevant_passage_id", (str, int))
        if rel not in canonical_of:
            raise DataError(f"{qa_path}:{lineno}: relevant_passage_id '{rel}' is not in {corpus_path.name}")
        questions.append(
            TestQuestion(
                id=qid,
                question=_field(qa_path, lineno, obj, "question"),
                relevant_ids=[canonical_of[rel]],
                answer=_field(qa_path, lineno, obj, "answer", required=False),
            )
        )
    stats = {"corpus_rows": len(seen), "duplicate_texts_merged": len(seen) - len(chunks)}
    return SourceResult(chunks=mark_test_chunks(chunks, questions), test=questions, stats=stats)


def fetch(params: LegalRagBenchParams) -> SourceResult:
    corpus_path = download(params, params.corpus_file)
    qa_path = download(params, params.qa_file)
    verify_sha256(corpus_path, params.corpus_sha256, "fetch.legal_rag_bench.corpus_sha256")
    verify_sha256(qa_path, params.qa_sha256, "fetch.legal_rag_bench.qa_sha256")
    return build(corpus_path, qa_path)
