"""An own-corpus pipeline under real DVC, as a person runs it: `dvc exp run` on a small JSONL corpus prints no
warning twice (DVC's own included), `ragtune exps` reads the two experiments back as a headline table, and
`dvc exp show` declares few metric columns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pipeline_support import copy_repo, dvc, pipeline_env, tiny_corpus, write_jsonl

pytestmark = pytest.mark.slow

CHEAP = [
    "fetch.source=jsonl",
    "fetch.jsonl.corpus=corpus/corpus.jsonl",
    "fetch.jsonl.test=corpus/test.jsonl",
    "mlflow.enabled=false",
    "tune.n_trials=2",
    "train.max_epochs=2",
    "train.bagging=1",
    "eval.bootstrap_resamples=200",
]


def repeated_warnings(output: str) -> dict[str, int]:
    """Warning lines (DVC's `WARNING:` and logging's ` WARNING `) said more than once, timestamps dropped."""
    lines = [re.sub(r"^\S+ \S+ ", "", line.strip()) for line in output.splitlines() if "WARNING" in line]
    return {line: n for line, n in Counter(lines).items() if n > 1}


def test_two_experiments_quietly_and_their_headline_table(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    rows = tiny_corpus(n_copies=2)
    write_jsonl(repo / "corpus/corpus.jsonl", rows)
    questions = [
        ("How quickly must a personal data breach be notified?", 1),
        ("Who must handle vulnerabilities of digital products?", 8),
        ("What must large undertakings report on sustainability?", 10),
    ]
    write_jsonl(
        repo / "corpus/test.jsonl",
        [
            {"id": f"q{i}", "question": q, "relevant_ids": [rows[r]["id"]], "answer": None}
            for i, (q, r) in enumerate(questions)
        ],
    )
    out = dvc(repo, "exp", "run", "-n", "first", "eval", *[a for s in CHEAP for a in ("-S", s)], timeout=1200)
    assert "Running stage 'eval'" in out
    assert not repeated_warnings(out), repeated_warnings(out)
    assert "train_questions.jsonl' is empty" not in out  # fetch writes no empty file DVC would warn about
    second_run = ["-n", "second", "eval", *[a for s in CHEAP for a in ("-S", s)], "-S", "eval.hybrid.rrf_k=30"]
    dvc(repo, "exp", "run", *second_run)

    exps = [sys.executable, "-m", "ragtune.cli", "exps", "--json"]
    proc = subprocess.run(exps, cwd=repo, env=pipeline_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = {r["experiment"]: r for r in json.loads(proc.stdout)}
    first, second = table["first"], table["second"]
    assert second["changed"]["eval.hybrid.rrf_k"] == 30 and first["changed"]["fetch.source"] == "jsonl"
    assert "eval.hybrid.rrf_k" not in first["changed"]
    for row in (first, second):
        assert set(row["arms"]) >= {"cosine", "adapter", "bm25", "hybrid"} and row["questions"] == len(questions)
        assert row["recommended_arm"] in row["arms"]
        assert all(set(m) == {"hit@5", "mrr@20"} for m in row["arms"].values())
    eval_metrics = json.loads((repo / "data/eval/metrics.json").read_text())  # the workspace holds the last one
    assert second["arms"]["hybrid"]["mrr@20"] == eval_metrics["test"]["hybrid"]["mrr@20"]
    text = subprocess.run(
        [sys.executable, "-m", "ragtune.cli", "exps"], cwd=repo, env=pipeline_env(), capture_output=True, text=True
    ).stdout
    assert "eval.hybrid.rrf_k=30" in text and "recommended" in text.splitlines()[0]

    header = dvc(repo, "exp", "show", "--csv").splitlines()[0].split(",")
    metric_columns = [c for c in header if c.startswith(("questions", "test.", "recommended", "failures", "dataset_"))]
    assert len(metric_columns) <= 30, metric_columns
    (Path(tmp_path) / "exp_show_columns.txt").write_text(str(len(header)))
