"""`ragtune search`: clear errors before the pipeline has run, and a real side-by-side search on a tiny
pipeline embedded with the packaged all-MiniLM-L6-v2 and an (untrained) real adapter."""

import json
import re

import numpy as np
import pytest

from ragtune.adapter.model import AdapterConfig, build_adapter, save_query_adapter
from ragtune.cache import ContentCache
from ragtune.cli import HybridSetup, compare_retrieval, format_comparison, main
from ragtune.embedding.embedder import CachedEmbedder, load_model
from ragtune.embeddings_npz import save_embeddings
from ragtune.io import write_json
from ragtune.params import EmbeddingParams
from ragtune.records import Chunk, write_jsonl
from ragtune.search.lexical import Bm25Index

CHUNKS = [
    Chunk(
        id="gdpr-art33-p1",
        title="GDPR Art. 33: Notification of a personal data breach",
        text="In the case of a personal data breach, the controller shall notify the supervisory authority "
        "within 72 hours.\nSecond line.",
    ),
    Chunk(
        id="dora-art19-p1",
        title="DORA Art. 19: Reporting of major ICT-related incidents",
        text="Financial entities shall report major ICT-related incidents to the competent authority.",
    ),
    Chunk(
        id="ai-act-art5-p1",
        title="AI Act Art. 5: Prohibited AI practices",
        text="The placing on the market of AI systems that deploy subliminal techniques is prohibited.",
    ),
    Chunk(
        id="cra-art13-p1",
        title=None,
        text="Manufacturers shall ensure that products with digital elements meet the essential requirements.",
    ),
    Chunk(
        id="nis2-art20-p1",
        title="NIS2 Art. 20: Governance",
        text="Management bodies of essential entities shall approve cybersecurity risk-management measures.",
    ),
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """data/fetch/corpus.jsonl, data/embed/{corpus.npz,info.json}, models/adapter and params.yaml."""
    root = tmp_path_factory.mktemp("pipeline")
    params = EmbeddingParams()
    write_jsonl(root / "data/fetch/corpus.jsonl", CHUNKS)
    with ContentCache(root / "data/cache/embeddings.sqlite") as cache:
        embedder = CachedEmbedder(params, cache, model=load_model(params))
        save_embeddings(
            root / "data/embed/corpus.npz", [c.id for c in CHUNKS], embedder.encode_documents([c.text for c in CHUNKS])
        )
        write_json(root / "data/embed/info.json", embedder.describe())
    save_query_adapter(build_adapter(AdapterConfig(dim=embedder.dim), seed=0), root / "models/adapter")
    (root / "params.yaml").write_text("embedding: {}\n", encoding="utf-8")
    return root


def test_errors_before_the_pipeline_has_run_name_the_file_and_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    steps = [
        ("data/fetch/corpus.jsonl", "dvc repro fetch"),
        ("data/embed/corpus.npz", "dvc repro embed"),
        ("models/adapter", "dvc repro train"),
    ]
    for path, command in steps:
        assert main(["search", "who reports breaches?"]) == 2
        err = capsys.readouterr().err
        assert f"error: {path} not found" in err and command in err and "make run" in err
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch() if "." in path.rsplit("/", 1)[-1] else (tmp_path / path).mkdir()
    assert main(["search", "q", "-k", "0"]) == 2
    assert "-k must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])  # argparse: a command is required


def test_search_json_on_a_real_pipeline(pipeline, monkeypatch, capsys):
    monkeypatch.chdir(pipeline)
    assert main(["search", "How fast must a controller notify a personal data breach?", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["k"] == 3 and len(out["cosine"]) == 3 and len(out["adapter"]) == 3
    top = out["cosine"][0]
    assert top["id"] == "gdpr-art33-p1" and top["first_line"].endswith("within 72 hours.")
    assert top["title"].startswith("GDPR Art. 33")
    # The untrained adapter is the identity: same chunks, nothing found by one side only.
    assert [h["id"] for h in out["adapter"]] == [h["id"] for h in out["cosine"]]
    assert not any(h["only_here"] for h in out["cosine"] + out["adapter"])
    scores = [h["score"] for h in out["cosine"]]
    assert scores == sorted(scores, reverse=True)


def test_search_text_output_and_a_stale_embedder(pipeline, monkeypatch, capsys):
    monkeypatch.chdir(pipeline)
    assert main(["search", "prohibited AI practices", "-k", "2", "--width", "100"]) == 0
    text = capsys.readouterr().out
    assert "question: prohibited AI practices" in text and "raw cosine" in text and "│ adapter" in text
    assert " 1. ai-act-art5-p1" in text and "(2 of the top 2 shared)" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    info = json.loads((pipeline / "data/embed/info.json").read_text())
    write_json(pipeline / "data/embed/info.json", {**info, "fingerprint": "dir:another-model"})
    try:
        assert main(["search", "anything"]) == 2
        assert "not the one the corpus was embedded with" in capsys.readouterr().err
    finally:
        write_json(pipeline / "data/embed/info.json", info)


def test_chunks_found_by_one_side_only_are_marked():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(8, 4)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    query, adapted = corpus[[0]], corpus[[7]]  # the adapter moves the query to another chunk
    ids = [f"c{i}" for i in range(8)]
    cmp = compare_retrieval("q", query, adapted, corpus, ids, [None] * 8, [f"text {i}\nmore" for i in range(8)], 2)
    assert cmp.cosine[0].id == "c0" and cmp.adapter[0].id == "c7"
    only_cosine = {h.id for h in cmp.cosine if h.only_here}
    only_adapter = {h.id for h in cmp.adapter if h.only_here}
    assert "c0" in only_cosine and "c7" in only_adapter
    assert only_cosine.isdisjoint({h.id for h in cmp.adapter})
    text = format_comparison(cmp, 80)
    assert " 1.*c0" in text and " 1.*c7" in text and "text 0" in text and "more" not in text
    assert f"{len(only_cosine)} by raw cosine, {len(only_adapter)} by the adapter" in text


# --- the hybrid column ------------------------------------------------------------------------------


def test_search_shows_the_hybrid_beside_cosine_and_adapter(pipeline, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(pipeline)
    rrf = tmp_path / "rrf.yaml"
    rrf.write_text("embedding: {}\neval:\n  hybrid:\n    method: rrf\n", encoding="utf-8")
    question = "Which ICT-related incidents must financial entities report?"
    assert main(["search", question, "-k", "3", "--json", "--params", str(rrf)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hybrid_fusion"] == {"method": "rrf", "candidates": 100, "rrf_k": 60.0}
    assert len(out["hybrid"]) == 3 and out["hybrid"][0]["id"] == "dora-art19-p1"
    # RRF scores: the top chunk is first in both the adapter's ranking and BM25's.
    assert out["hybrid"][0]["score"] == pytest.approx(2 / 61, abs=1e-6)
    assert [h["rank"] for h in out["hybrid"]] == [1, 2, 3]

    assert main(["search", question, "-k", "2", "--width", "100", "--params", str(rrf)]) == 0
    text = capsys.readouterr().out
    assert "│ hybrid (BM25+adapter, RRF k=60)" in text and " 1. dora-art19-p1  0.0328" in text
    assert re.search(r"\* hybrid: [0-2] of its top 2 found by neither dense side", text)
    assert max(len(line) for line in text.splitlines()) <= 100


def test_search_uses_the_weight_eval_chose_or_no_hybrid_when_off(pipeline, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(pipeline)
    weighted = tmp_path / "weighted.yaml"
    weighted.write_text(
        "embedding: {}\neval:\n  hybrid:\n    method: weighted\n    weights: [0.3, 0.7]\n", encoding="utf-8"
    )
    question = ["search", "notify the supervisory authority of a breach", "-k", "2", "--json"]
    # No report.json yet: eval has not chosen among the weights, so the hybrid fuses by RRF.
    assert main([*question, "--params", str(weighted)]) == 0
    assert json.loads(capsys.readouterr().out)["hybrid_fusion"]["method"] == "rrf"
    metrics = pipeline / "data/eval/report.json"
    write_json(
        metrics, {"fusion": {"method": "weighted", "hybrid": {"dense": "adapter", "method": "weighted", "weight": 0.7}}}
    )
    try:
        assert main([*question, "--params", str(weighted)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["hybrid_fusion"] == {"method": "weighted", "candidates": 100, "weight": 0.7}
        top = out["hybrid"][0]
        assert top["id"] == "gdpr-art33-p1" and top["score"] == pytest.approx(1.0)  # best in both parts
        # params asking for RRF ignore a weight in report.json
        rrf = tmp_path / "rrf.yaml"
        rrf.write_text("embedding: {}\neval:\n  hybrid:\n    method: rrf\n", encoding="utf-8")
        assert main([*question, "--params", str(rrf)]) == 0
        assert json.loads(capsys.readouterr().out)["hybrid_fusion"]["method"] == "rrf"
    finally:
        metrics.unlink()
    off = tmp_path / "off.yaml"
    off.write_text("embedding: {}\neval:\n  bm25:\n    enabled: false\n", encoding="utf-8")
    assert main([*question, "--params", str(off)]) == 0
    assert "hybrid" not in json.loads(capsys.readouterr().out)
    bad = tmp_path / "bad.yaml"
    bad.write_text("embedding: {}\neval:\n  hybrid:\n    rrf_k: -5\n", encoding="utf-8")
    assert main([*question, "--params", str(bad)]) == 2
    assert "eval.hybrid.rrf_k: Input should be greater than or equal to 0" in capsys.readouterr().err


def test_hybrid_column_marks_chunks_neither_dense_side_found():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(8, 4)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    texts = [f"text {i} about topic{i}\nmore" for i in range(8)]
    ids = [f"c{i}" for i in range(8)]
    # Both dense sides at chunk 0; BM25 only knows chunk 5 ("topic5"), which the dense sides rank low.
    cmp = compare_retrieval(
        "topic5",
        corpus[[0]],
        corpus[[0]],
        corpus,
        ids,
        [None] * 8,
        texts,
        2,
        HybridSetup(Bm25Index(texts), candidates=8),
    )
    dense_top2 = [h.id for h in cmp.adapter]
    assert "c5" not in dense_top2 and [h.id for h in cmp.hybrid][:1] == ["c5"]
    assert cmp.hybrid[0].only_here and not cmp.hybrid[1].only_here
    text = format_comparison(cmp, 90)
    assert " 1.*c5" in text and "* hybrid: 1 of its top 2 found by neither dense side" in text
    assert max(len(line) for line in text.splitlines()) <= 90


def test_verbose_says_more_here_and_in_the_stages_a_command_starts(tmp_path, monkeypatch, capsys):
    import logging
    import os
    import subprocess
    import sys

    monkeypatch.delenv("RAGTUNE_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("mlflow: {}\n", encoding="utf-8")  # the default store, not made yet
    root = logging.getLogger()
    level = root.level
    try:
        assert main(["ui"]) == 2 and root.level == logging.WARNING and "RAGTUNE_LOG" not in os.environ
        assert main(["-vv", "ui"]) == 2 and root.level == logging.DEBUG
    finally:
        root.setLevel(level)
    assert "sqlite:///mlflow.db does not exist yet" in capsys.readouterr().err
    # A stage started from here (`ragtune bench` runs them under dvc) logs at that level too.
    code = "import logging; from ragtune.stage import quiet_logging; quiet_logging(); print(logging.getLogger().level)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(logging.DEBUG)


# --- many questions, loaded once ----------------------------------------------------------------------


def test_search_answers_every_question_of_a_file_or_stdin_with_one_model_load(pipeline, monkeypatch, capsys):
    import io

    import ragtune.embedding.embedder as embedder_module

    monkeypatch.chdir(pipeline)
    questions = ["prohibited AI practices", "notify the supervisory authority of a breach", "ICT incidents"]
    singles = []
    for q in questions:
        assert main(["search", q, "-k", "3", "--json"]) == 0
        singles.append(json.loads(capsys.readouterr().out))
    loads = []
    real_load = embedder_module.load_model
    monkeypatch.setattr(embedder_module, "load_model", lambda params: loads.append(1) or real_load(params))
    (pipeline / "questions.txt").write_text("\n".join(questions) + "\n\n", encoding="utf-8")
    assert main(["search", "-f", "questions.txt", "-k", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == singles and len(loads) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(questions[:2])))
    assert main(["search", "-f", "-", "-k", "3", "--width", "100"]) == 0
    text = capsys.readouterr().out
    assert text.count("question: ") == 2 and "question: prohibited AI practices" in text and "│ adapter" in text


def test_search_input_errors(pipeline, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(pipeline)
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    cases = [
        (["search", "q", "-f", "x.txt"], "give one question, or --file"),
        (["search"], "give one question, or --file"),
        (["search", "-f", str(tmp_path / "empty.txt")], "no questions (one question a line)"),
        (["search", "-f", str(tmp_path / "missing.txt")], f"--file {tmp_path / 'missing.txt'}: cannot read it"),
        (["search", "q", "--approx"], "--approx searches a store's HNSW index: give --store too"),
        (["search", "   "], "the question is empty"),
    ]
    for args, message in cases:
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_search_fuses_with_the_one_dense_share_params_give_without_an_eval_report(tmp_path):
    from ragtune.deploy.commands import hybrid_setup

    texts = ["breach notification to the authority", "ICT incident reporting", "prohibited AI practices"]
    params = tmp_path / "params.yaml"
    params.write_text("eval:\n  hybrid:\n    method: weighted\n    weights: [0.6]\n", encoding="utf-8")
    setup = hybrid_setup(texts, params, tmp_path / "missing_report.json")
    assert (setup.method, setup.weight) == ("weighted", 0.6)
    params.write_text("eval:\n  hybrid:\n    method: rrf\n", encoding="utf-8")
    assert hybrid_setup(texts, params, tmp_path / "missing_report.json").method == "rrf"
