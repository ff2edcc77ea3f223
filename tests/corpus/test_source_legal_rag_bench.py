"""legal-rag-bench through the real huggingface_hub code, reading files laid out as the Hub's local
cache would hold them (offline), plus checksum and duplicate-text handling."""

import hashlib
import json

import pytest

from ragtune.corpus.sources import legal_rag_bench
from ragtune.errors import DataError, RagtuneError
from ragtune.params import LegalRagBenchParams

REV = LegalRagBenchParams().revision

CORPUS = [
    {"id": "p1", "title": "Contract law", "text": "An offer must be accepted unequivocally.", "footnotes": []},
    {"id": "p2", "title": "Torts", "text": "Negligence requires a duty of care.", "footnotes": ["fn"]},
    {"id": "p3", "title": "Torts (copy)", "text": "Negligence  requires a duty of care.", "footnotes": []},
    {"id": "p4", "title": "Evidence", "text": "Hearsay is generally inadmissible.", "footnotes": []},
]
QA = [
    {"id": "q1", "question": "When is an offer accepted?", "answer": "Unequivocally.", "relevant_passage_id": "p1"},
    {"id": "q2", "question": "What does negligence need?", "answer": "A duty of care.", "relevant_passage_id": "p3"},
]


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with the dataset snapshot at the pinned revision; the Hub switched off."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    snap = cache / "datasets--isaacus--legal-rag-bench" / "snapshots" / REV
    snap.mkdir(parents=True)
    (snap / "corpus.jsonl").write_bytes(jsonl(CORPUS))
    (snap / "qa.jsonl").write_bytes(jsonl(QA))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return snap


def params_for(snap, **kw):
    sha = lambda name: hashlib.sha256((snap / name).read_bytes()).hexdigest()  # noqa: E731
    return LegalRagBenchParams(corpus_sha256=sha("corpus.jsonl"), qa_sha256=sha("qa.jsonl"), **kw)


def test_fetch_from_local_hf_cache_merges_identical_texts(hf_cache):
    result = legal_rag_bench.fetch(params_for(hf_cache))
    assert [c.id for c in result.chunks] == ["p1", "p2", "p4"]
    assert result.stats == {"corpus_rows": 4, "duplicate_texts_merged": 1}
    # q2's gold passage p3 is the twin of p2: retrieving p2 must count as a hit.
    assert [q.relevant_ids for q in result.test] == [["p1"], ["p2"]]
    assert result.test[0].answer == "Unequivocally."
    assert {c.id for c in result.chunks if c.split == "test"} == {"p1", "p2"}


def test_abbreviated_checksums_are_checked(hf_cache):
    full = hashlib.sha256((hf_cache / "corpus.jsonl").read_bytes()).hexdigest()
    p = params_for(hf_cache)
    ok = p.model_copy(update={"corpus_sha256": f"{full[:8]}…{full[-4:]}"})
    assert len(legal_rag_bench.fetch(ok).chunks) == 3
    bad = p.model_copy(update={"corpus_sha256": f"{full[:8]}…0000"})
    with pytest.raises(DataError, match="does not match fetch.legal_rag_bench.corpus_sha256"):
        legal_rag_bench.fetch(bad)


def test_missing_everywhere_gives_a_clear_error(hf_cache):
    with pytest.raises(RagtuneError, match="Hub is unreachable and the file is not in the local HF cache"):
        legal_rag_bench.fetch(params_for(hf_cache).model_copy(update={"revision": "1" * 40}))


def test_bad_rows_name_file_and_line(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    qa = tmp_path / "qa.jsonl"
    corpus.write_bytes(jsonl(CORPUS))
    qa.write_bytes(jsonl(QA + [{"id": "q3", "question": "?", "relevant_passage_id": "nope"}]))
    with pytest.raises(DataError, match=r"qa\.jsonl:3: relevant_passage_id 'nope' is not in corpus\.jsonl"):
        legal_rag_bench.build(corpus, qa)
    corpus.write_bytes(jsonl(CORPUS[:1]) + b'{"id": "p9", "text": 5}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: field 'text' must be str"):
        legal_rag_bench.build(corpus, qa)
    corpus.write_bytes(jsonl(CORPUS[:1] + CORPUS[:1]))
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: duplicate id 'p1'"):
        legal_rag_bench.build(corpus, qa)
