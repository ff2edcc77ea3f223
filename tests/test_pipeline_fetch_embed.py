"""End to end with real DVC: fetch and embed on a tiny jsonl corpus in a throwaway copy of the repo."""

import json

import numpy as np
import pytest
from pipeline_support import copy_repo, dvc, tiny_corpus, write_jsonl

pytestmark = pytest.mark.slow


def test_fetch_embed_run_cache_and_noop(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    rows = tiny_corpus()
    write_jsonl(repo / "corpus" / "corpus.jsonl", rows)
    write_jsonl(
        repo / "corpus" / "test.jsonl",
        [{"id": "q1", "question": "How fast must a data breach be notified?", "relevant_ids": [rows[1]["id"]]}],
    )
    dvc(
        repo,
        "exp",
        "run",
        "embed",
        "-S",
        "fetch.source=jsonl",
        "-S",
        "fetch.jsonl.corpus=corpus/corpus.jsonl",
        "-S",
        "fetch.jsonl.test=corpus/test.jsonl",
        "-S",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )

    report = json.loads((repo / "data/fetch/report.json").read_text())
    assert (report["chunks"], report["test_chunks"], report["test_questions"]) == (12, 1, 1)
    with np.load(repo / "data/embed/corpus.npz") as z:
        assert z["emb"].shape == (12, 384) and z["emb"].dtype == np.float32
        assert list(z["ids"]) == [r["id"] for r in rows]
    info = json.loads((repo / "data/embed/info.json").read_text())
    assert info["corpus"] == 12 and "encoded" not in info  # a run's own counts live in run.json
    assert json.loads((repo / "data/embed/run.json").read_text())["encoded"] >= 12

    # Nothing changed: nothing reruns.
    out = dvc(repo, "repro", "embed")
    assert "Running stage" not in out and "didn't change" in out

    # One chunk edited: fetch and embed rerun, and exactly the new texts are encoded: the chunk and the
    # pseudo-queries made from it (a query identical to a known text is a cache hit).
    rows[4]["text"] = "Financial entities shall classify every ICT-related incident by its impact."
    write_jsonl(repo / "corpus" / "corpus.jsonl", rows)
    out = dvc(repo, "repro", "embed")
    assert "Running stage 'fetch'" in out and "Running stage 'embed'" in out
    info = json.loads((repo / "data/embed/run.json").read_text())
    questions = [json.loads(x) for x in (repo / "data/synthesize/questions.jsonl").read_text().splitlines()]
    new_queries = {q["question"] for q in questions if q["chunk_id"] == rows[4]["id"]} - {rows[4]["text"]}
    assert new_queries and info["encoded"] == 1 + len(new_queries)
