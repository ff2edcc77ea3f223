"""The user's own corpus: with a test file, or with a seeded held-out fraction of chunks."""

import json

import pytest

from ragtune.corpus.fetching import fetch_source, report
from ragtune.errors import DataError, RagtuneError
from ragtune.params import FetchParams, JsonlSourceParams


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    return write(
        tmp_path / "corpus.jsonl",
        [{"id": f"c{i}", "text": f"chunk {i}", "title": None, "source": "mine"} for i in range(20)],
    )


def test_without_test_file_holds_out_a_seeded_fraction(corpus):
    params = FetchParams(source="jsonl", seed=5, jsonl=JsonlSourceParams(corpus=corpus, test_fraction=0.25))
    result = fetch_source(params)
    held = [c.id for c in result.chunks if c.split == "test"]
    assert len(held) == 5 and result.test == []
    assert held == [c.id for c in fetch_source(params).chunks if c.split == "test"]
    summary = report(params, result)
    assert (summary["chunks"], summary["train_chunks"], summary["test_chunks"]) == (20, 15, 5)


def test_with_test_file_marks_relevant_chunks(corpus, tmp_path):
    test = write(tmp_path / "test.jsonl", [{"id": "q1", "question": "Q?", "relevant_ids": ["c3", "c4"]}])
    result = fetch_source(FetchParams(source="jsonl", jsonl=JsonlSourceParams(corpus=corpus, test=test)))
    assert {c.id for c in result.chunks if c.split == "test"} == {"c3", "c4"}
    assert result.test[0].origin == "human"


def test_errors(corpus, tmp_path):
    with pytest.raises(RagtuneError, match="fetch.jsonl.corpus is not set"):
        fetch_source(FetchParams(source="jsonl"))
    test = write(tmp_path / "test.jsonl", [{"id": "q1", "question": "Q?", "relevant_ids": ["c99"]}])
    with pytest.raises(DataError, match=r"test\.jsonl:1: relevant id\(s\) \['c99'\] not in the corpus"):
        fetch_source(FetchParams(source="jsonl", jsonl=JsonlSourceParams(corpus=corpus, test=test)))
