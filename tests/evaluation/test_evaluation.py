"""Eval: metric functions by hand, ties, empty results, and whole evaluations on a tiny fixture pipeline
(identity, rotation and real adapters; BM25; outputs; README block; the stage with MLflow)."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ragtune.adapter.model import AdapterConfig, build_adapter, save_query_adapter
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import ParamsError, RagtuneError
from ragtune.evaluation.arms import EmbeddingArm, LexicalArm, identity
from ragtune.evaluation.inputs import QuerySet
from ragtune.evaluation.metrics import EvalParams, per_question_metrics, per_question_recall
from ragtune.evaluation.ranking import first_relevant_rank, hit_matrix
from ragtune.evaluation.report import flat_metrics, write_eval_outputs
from ragtune.evaluation.run import run_eval
from ragtune.io import write_json
from ragtune.params import load_section, validate_params_file
from ragtune.paths import PipelinePaths
from ragtune.readme import (
    END,
    START,
    current_block,
    expected_results,
    page_holding,
    render_results,
    replace_block,
    update_readme,
)
from ragtune.records import Chunk, SyntheticQuestion, TestQuestion, write_jsonl
from ragtune.search.dense import exact_top_k
from ragtune.search.lexical import Bm25Index, Bm25Params

REPO = Path(__file__).resolve().parents[2]
DIM = 16
FAST = EvalParams(bootstrap_resamples=1000)


# --- metric functions by hand -------------------------------------------------------------------

SMALL = EvalParams(hit_ks=[1, 3, 5], recall_ks=[1, 3], mrr_k=5, ndcg_k=3, main_k=1, mcnemar_ks=[1])


def test_metrics_by_hand_ties_several_relevant_and_no_hit():
    ranked = np.array(
        [
            [3, 1, 2, 0, 4],  # relevant 1 at rank 2
            [0, 1, 2, 3, 4],  # relevant 5 never retrieved
            [2, 3, 1, 0, 4],  # relevant {2, 1}: ranks 1 and 3
            [-1, -1, -1, -1, -1],
        ]
    )  # nothing retrieved (BM25 with no shared term)
    relevant = [np.array([1]), np.array([5]), np.array([2, 1]), np.array([0])]
    hits = hit_matrix(ranked, relevant)
    n_rel = np.array([1, 1, 2, 1])
    np.testing.assert_array_equal(first_relevant_rank(hits), [2, 0, 1, 0])
    m = per_question_metrics(hits, n_rel, SMALL)
    np.testing.assert_array_equal(m["hit@1"], [0, 0, 1, 0])
    np.testing.assert_array_equal(m["hit@3"], [1, 0, 1, 0])
    np.testing.assert_allclose(m["mrr@5"], [0.5, 0, 1, 0])
    # nDCG@3: q0 (1/log2 3) / 1; q2 (1 + 1/log2 4) / (1 + 1/log2 3)
    np.testing.assert_allclose(m["ndcg@3"], [1 / np.log2(3), 0, 1.5 / (1 + 1 / np.log2(3)), 0])
    r = per_question_recall(hits, n_rel, SMALL)
    np.testing.assert_allclose(r["recall@1"], [0, 0, 0.5, 0])
    np.testing.assert_allclose(r["recall@3"], [1, 0, 1, 0])


def test_tied_scores_rank_the_lower_corpus_row_first():
    corpus = np.eye(6, DIM, dtype=np.float32)
    corpus[5] = corpus[2]  # rows 2 and 5 identical: every query ties them
    query = np.zeros((1, DIM), np.float32)
    query[0, 2] = 1.0
    _, idx = exact_top_k(query, corpus, 3)
    assert idx[0, :2].tolist() == [2, 5]
    qs = QuerySet("t", ["a", "b"], np.repeat(query, 2, axis=0), [np.array([5]), np.array([2])], ["human"] * 2)
    ranks = first_relevant_rank(hit_matrix(EmbeddingArm("cosine", corpus).retrieve(qs, 3), qs.relevant))
    assert ranks.tolist() == [2, 1]


def test_bm25_arm_ties_unknown_terms_and_stemming():
    texts = [
        "Controllers shall report breaches",
        "the processor keeps records",
        "Controllers shall report breaches",
        "market surveillance authorities",
    ]
    index = Bm25Index(texts, Bm25Params())
    scores, idx = index.top_k(["controller reporting", "zebra quantum", "records kept"], 4)
    assert idx[0, :2].tolist() == [0, 2] and scores[0, 0] == scores[0, 1] > 0  # tie: lower row first
    assert idx[1].tolist() == [-1, -1, -1, -1]  # no shared term: nothing retrieved, not chunk 0
    assert idx[2, 0] == 1 and idx[2, 1] == -1  # "records kept" stems to the processor chunk only
    qs = QuerySet("t", ["x"], np.zeros((1, DIM), np.float32), [np.array([0])], ["human"], ["zebra"])
    assert not hit_matrix(LexicalArm("bm25", index).retrieve(qs, 4), qs.relevant).any()
    no_texts = QuerySet("t", ["x"], np.zeros((1, DIM), np.float32), [np.array([0])], ["human"])
    assert LexicalArm("bm25", index).retrieve(no_texts, 4) is None


def test_eval_params_validation(tmp_path):
    assert load_section("eval", EvalParams, REPO / "params.yaml") == validate_params_file(REPO / "params.yaml")["eval"]
    bad = tmp_path / "params.yaml"
    bad.write_text("eval:\n  main_k: 7\n  bm25:\n    k3: 1\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"eval\.bm25\.k3: unknown key"):
        load_section("eval", EvalParams, bad)
    bad.write_text("eval:\n  main_k: 7\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"main_k \(7\) must be one of hit_ks"):
        load_section("eval", EvalParams, bad)
    bad.write_text("eval:\n  hit_ks: [0, 5]\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"eval\.hit_ks\.0: Input should be greater than or equal to 1"):
        load_section("eval", EvalParams, bad)


# --- a tiny fixture pipeline -----------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_pipeline(
    root: Path, n_chunks: int = 40, n_test: int = 30, n_synth: int = 60, noise: float = 0.35, seed: int = 0
) -> PipelinePaths:
    """Files laid out like a real run: questions sit near their chunk's embedding, with noise, so raw
    cosine gets some right and some wrong. Test questions 0-19 are human, 20-29 synthetic; every third
    has two relevant chunks."""
    rng = np.random.default_rng(seed)
    corpus_emb = _unit(rng.normal(size=(n_chunks, DIM)))
    chunks = [
        Chunk(
            id=f"c{i:03d}",
            text=f"Article {i}. Rules on topic{i} and subject{i % 7}.",
            title=f"Art. {i}",
            source="fixture",
        )
        for i in range(n_chunks)
    ]
    test, test_emb = [], []
    for q in range(n_test):
        rel = [q] + ([q + 1] if q % 3 == 0 else [])
        test.append(
            TestQuestion(
                id=f"t{q:03d}",
                question=f"What applies to topic{q}?",
                relevant_ids=[f"c{r:03d}" for r in rel],
                origin="human" if q < 20 else "synthetic",
            )
        )
        test_emb.append(corpus_emb[q] + noise * rng.normal(size=DIM))
    synth = [
        SyntheticQuestion(
            id=f"s{j:03d}",
            chunk_id=f"c{j % n_chunks:03d}",
            question=f"Which rules on topic{j % n_chunks}?",
            backend="fixture",
            model="none",
            prompt_id="p",
        )
        for j in range(n_synth)
    ]
    synth_emb = [corpus_emb[j % n_chunks] + noise * rng.normal(size=DIM) for j in range(n_synth)]
    d = root / "data"
    write_jsonl(d / "fetch/corpus.jsonl", chunks)
    write_json(d / "fetch/report.json", {"source": "fixture"})
    write_jsonl(d / "synthesize/test.jsonl", test)
    write_jsonl(d / "synthesize/questions.jsonl", synth)
    save_embeddings(d / "embed/corpus.npz", [c.id for c in chunks], corpus_emb)
    save_embeddings(d / "embed/test.npz", [q.id for q in test], _unit(np.array(test_emb)))
    save_embeddings(
        d / "embed/questions.npz",
        [s.id for s in synth],
        _unit(np.array(synth_emb)),
        chunk_ids=[s.chunk_id for s in synth],
    )
    write_json(d / "embed/info.json", {"model": "fixture-model"})
    write_json(d / "train/split.json", {"train": [s.id for s in synth[:40]], "val": [s.id for s in synth[40:]]})
    return PipelinePaths(
        corpus=d / "fetch/corpus.jsonl",
        test=d / "synthesize/test.jsonl",
        questions=d / "synthesize/questions.jsonl",
        embed_dir=d / "embed",
        split=d / "train/split.json",
        adapter=root / "models/adapter",
        linear_adapter=root / "models/linear_adapter",
    )


def fixed_rotation(seed: int = 5):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(DIM, DIM)))
    return lambda query_emb: (query_emb @ q).astype(np.float32)


@pytest.fixture
def pipeline(tmp_path):
    paths = make_pipeline(tmp_path)
    paths.adapter.mkdir(parents=True)  # the fixture loaders below do not read it
    return paths


def test_identity_adapter_equals_cosine_and_is_not_significant(pipeline, tmp_path):
    result = run_eval(pipeline, FAST, load_adapter=lambda _: identity, fetch_report=tmp_path / "data/fetch/report.json")
    m = result.metrics
    assert m["setup"]["source"] == "fixture" and m["setup"]["embedding_model"] == "fixture-model"
    assert set(m) == {"setup", "test", "test_human", "test_synthetic", "val", "fusion", "recommendation"}
    test = m["test"]
    assert (test["questions"], test["human"], test["synthetic"]) == (30, 20, 10)
    assert test["origin"] == "mixed (20 human, 10 synthetic)" and m["val"]["origin"] == "synthetic"
    assert test["multi_relevant"] == 10 and m["test_human"]["questions"] == 20
    assert set(test["arms"]) == {"cosine", "adapter", "bm25", "hybrid_cosine", "hybrid"} and "bm25" in m["val"]["arms"]
    assert test["arms"]["adapter"] == test["arms"]["cosine"]
    cmp = test["adapter_vs_cosine"]
    assert (cmp["hit@5"]["gained"], cmp["hit@5"]["lost"], cmp["hit@5"]["p"]) == (0, 0, 1.0)
    assert cmp["mrr@20"]["diff"] == 0.0 and cmp["mrr@20"]["p"] == 1.0
    assert cmp["significant"] is False and "Not significant at alpha=0.05" in cmp["verdict"]
    # Bounded rates with intervals around them; cosine is imperfect on these noisy questions.
    cos = test["arms"]["cosine"]
    assert 0 < cos["hit@1"] <= cos["hit@5"] <= cos["hit@20"] <= 1
    for name, (lo, hi) in cos["ci"].items():
        assert lo <= cos[name] <= hi
    assert "recall@10" in cos and "recall@10" not in m["val"]["arms"]["cosine"]  # val has one chunk each
    # One row per question with the rank of its first relevant chunk per arm.
    assert len(result.per_question) == 30 + 20
    row = result.per_question[0]
    assert set(row) == {
        "set",
        "id",
        "origin",
        "n_relevant",
        "rank_cosine",
        "rank_adapter",
        "rank_bm25",
        "rank_hybrid_cosine",
        "rank_hybrid",
        "question",
    }
    assert row["rank_adapter"] == row["rank_cosine"]


def test_eval_is_deterministic_and_the_seed_matters(pipeline, tmp_path):
    report = tmp_path / "data/fetch/report.json"
    a = run_eval(pipeline, FAST, lambda _: fixed_rotation(), report).metrics
    b = run_eval(pipeline, FAST, lambda _: fixed_rotation(), report).metrics
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = run_eval(pipeline, FAST.model_copy(update={"seed": 1}), lambda _: fixed_rotation(), report).metrics
    assert c["test"]["arms"]["cosine"]["hit@5"] == a["test"]["arms"]["cosine"]["hit@5"]
    assert c["test"]["arms"]["cosine"]["ci"] != a["test"]["arms"]["cosine"]["ci"]


def test_a_rotated_adapter_is_significantly_worse(pipeline, tmp_path):
    m = run_eval(pipeline, FAST, lambda _: fixed_rotation(), tmp_path / "data/fetch/report.json").metrics
    cmp = m["test"]["adapter_vs_cosine"]
    assert cmp["hit@20"]["lost"] > cmp["hit@20"]["gained"] and cmp["mrr@20"]["diff"] < 0
    assert cmp["significant"] is True and "adapter is worse" in cmp["verdict"]
    assert cmp["mrr@20"]["ci"][1] < 0 and cmp["mrr@20"]["worsened"] > cmp["mrr@20"]["improved"]


def test_real_adapters_untrained_mlp_is_identity_and_linear_arm_appears(tmp_path):
    paths = make_pipeline(tmp_path)
    save_query_adapter(build_adapter(AdapterConfig(dim=DIM), seed=0), paths.adapter)
    linear = build_adapter(AdapterConfig(dim=DIM, kind="linear"), seed=0)
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(DIM, DIM)))
    with torch.no_grad():  # a fixed rotation as a real linear adapter: (I + delta) x = q.T x
        linear.delta.copy_(torch.as_tensor(q.T - np.eye(DIM), dtype=torch.float32))
    save_query_adapter(linear, paths.linear_adapter)
    m = run_eval(paths, FAST, fetch_report=tmp_path / "data/fetch/report.json").metrics
    assert list(m["test"]["arms"]) == ["cosine", "adapter", "linear", "bm25", "hybrid_cosine", "hybrid"]
    assert m["test"]["arms"]["adapter"]["hit@5"] == m["test"]["arms"]["cosine"]["hit@5"]
    assert m["val"]["arms"]["adapter"]["mrr@20"] == pytest.approx(m["val"]["arms"]["cosine"]["mrr@20"], abs=1e-6)
    assert "linear_vs_cosine" in m["test"]
    assert m["test"]["arms"]["linear"]["mrr@20"] < m["test"]["arms"]["cosine"]["mrr@20"]
    off = run_eval(
        paths,
        EvalParams(bootstrap_resamples=200, linear_adapter=False, bm25=Bm25Params(enabled=False)),
        fetch_report=tmp_path / "data/fetch/report.json",
    ).metrics
    assert list(off["test"]["arms"]) == ["cosine", "adapter"]


def test_missing_inputs_name_the_file_and_the_command(tmp_path):
    paths = make_pipeline(tmp_path)
    with pytest.raises(RagtuneError, match=r"models/adapter: not found; train the adapter first \(dvc repro train"):
        run_eval(paths, FAST)
    (paths.embed_dir / "questions.npz").unlink()
    with pytest.raises(RagtuneError, match=r"questions\.npz: not found; run the embed stage"):
        run_eval(paths, FAST)
    # Test questions embedded before the test file changed: stale embeddings, not a crash.
    save_embeddings(paths.embed_dir / "test.npz", ["t000"], np.ones((1, DIM), np.float32))
    with pytest.raises(RagtuneError, match=r"test\.npz lacks question ids .* run dvc repro embed"):
        run_eval(paths, FAST)


def test_outputs_files_and_readme_block(pipeline, tmp_path):
    result = run_eval(pipeline, FAST, lambda _: fixed_rotation(), tmp_path / "data/fetch/report.json")
    out = tmp_path / "data/eval"
    written = write_eval_outputs(result, FAST, out)
    assert sorted(p.name for p in written) == [
        "hit_rate_at_k.csv",
        "hit_rate_at_k.png",
        "hit_rate_by_arm.png",
        "metrics.json",
        "per_question.csv",
        "report.json",
    ]
    assert json.loads((out / "report.json").read_text()) == result.metrics
    # metrics.json: only the headline numbers, taken from the report
    headline = json.loads((out / "metrics.json").read_text())
    test = result.metrics["test"]
    assert set(headline) == {"test", "test_human", "test_synthetic", "recommended_arm"}  # validation: report.json
    assert headline["test"]["adapter"] == {
        "hit@5": test["arms"]["adapter"]["hit@5"],
        "mrr@20": test["arms"]["adapter"]["mrr@20"],
    }
    assert headline["test"]["adapter_vs_cosine"] == {
        "p_holm_hit@5": test["adapter_vs_cosine"]["hit@5"]["p_holm"],
        "p_holm_mrr@20": test["adapter_vs_cosine"]["mrr@20"]["p_holm"],
    }
    # one paired comparison per test set: the others are in report.json
    assert [k for k in headline["test"] if "_vs_" in k] == ["adapter_vs_cosine"]
    assert headline["recommended_arm"] == result.metrics["recommendation"]["arm"]
    leaves = lambda d: sum(leaves(v) if isinstance(v, dict) else 1 for v in d.values())  # noqa: E731
    assert leaves(headline) < leaves(result.metrics) / 5
    rows = list(csv.DictReader((out / "hit_rate_at_k.csv").open()))
    assert list(rows[0]) == ["k", "cosine", "adapter", "bm25", "hybrid_cosine", "hybrid"]
    assert [r["k"] for r in rows] == [str(k) for k in range(1, 21)]
    assert float(rows[4]["cosine"]) == result.metrics["test"]["arms"]["cosine"]["hit@5"]
    per_q = list(csv.DictReader((out / "per_question.csv").open()))
    assert len(per_q) == 50 and list(per_q[0])[:5] == ["set", "id", "origin", "n_relevant", "rank_cosine"]
    for png in ("hit_rate_at_k.png", "hit_rate_by_arm.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flat = flat_metrics(result.metrics)
    assert flat["test.adapter.hit_at_5"] == result.metrics["test"]["arms"]["adapter"]["hit@5"]
    assert flat["test.adapter.hit_at_5_ci_low"] == result.metrics["test"]["arms"]["adapter"]["ci"]["hit@5"][0]
    assert flat["test.adapter_vs_cosine.significant"] == 1.0 and "test.adapter_vs_cosine.verdict" not in flat

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nplaceholder\n{END}\n\nafter\n", encoding="utf-8")
    assert update_readme(readme, out / "report.json") is True
    text = readme.read_text(encoding="utf-8")
    assert current_block(text) == render_results(result.metrics)
    assert text.startswith("# title\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "| cosine |" in text and "adapter vs cosine on 30 mixed" in text and "Synthetic validation" in text
    assert "| hybrid |" in text and "**Recommendation: `" in text and "hybrid vs hybrid_cosine on 30 mixed" in text
    assert update_readme(readme, out / "report.json") is False  # idempotent
    with pytest.raises(RagtuneError, match="markers"):
        replace_block("no markers here", "x")


def test_readme_results_match_the_committed_metrics(tmp_path):
    """The results block (docs/findings/results.md) is the rendering of data/eval/report.json (python -m
    ragtune.readme)."""
    readme, metrics = page_holding("results", REPO), REPO / "data/eval/report.json"
    if not (metrics.is_file() and readme.is_file() and START in readme.read_text(encoding="utf-8")):
        # Before the first pipeline run: check the round trip on a temporary README instead.
        paths = make_pipeline(tmp_path)
        paths.adapter.mkdir(parents=True)
        written = write_eval_outputs(
            run_eval(paths, FAST, lambda _: identity, tmp_path / "data/fetch/report.json"), FAST, tmp_path / "data/eval"
        )
        readme, metrics = tmp_path / "README.md", written[0]
        readme.write_text(f"{START}\n{END}\n", encoding="utf-8")
        update_readme(readme, metrics)
    block = current_block(readme.read_text(encoding="utf-8"))
    assert block == expected_results(readme, metrics), "the results block is stale: run python -m ragtune.readme"


@pytest.fixture(scope="module")
def mlflow_server_url():
    from server_support import mlflow_server

    with mlflow_server() as url:
        yield url


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_stage_writes_outputs_and_logs_next_to_the_train_run(tmp_path, store, request):
    """The same stage against a local SQLite store and against a real `mlflow server` over HTTP (SQL
    backend, artifacts served by the server), as a team sets it up."""
    import mlflow

    paths = make_pipeline(tmp_path)
    save_query_adapter(build_adapter(AdapterConfig(dim=DIM), seed=0), paths.adapter)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else request.getfixturevalue("mlflow_server_url")
    (tmp_path / "params.yaml").write_text(
        f"eval:\n  bootstrap_resamples: 500\nmlflow:\n  tracking_uri: {uri}\n  experiment: t\n", encoding="utf-8"
    )
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("t")
    with mlflow.start_run(run_name="train") as run:
        train_id = run.info.run_id
    write_json(tmp_path / "data/train/run.json", {"mlflow_run_id": train_id})
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("rq")  # as the train stage registers with mlflow.register_model_name
    version = client.create_model_version("rq", f"runs:/{train_id}/query_encoder", run_id=train_id)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "ragtune.stages.eval"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval test (30 mixed (20 human, 10 synthetic)): Hit@5 cosine" in proc.stdout
    metrics = json.loads((tmp_path / "data/eval/report.json").read_text())
    assert metrics["setup"]["bootstrap_resamples"] == 500
    evals = [
        r
        for r in client.search_runs([client.get_experiment_by_name("t").experiment_id])
        if r.data.tags.get("ragtune.stage") == "eval"
    ]
    assert len(evals) == 1 and evals[0].data.tags["mlflow.parentRunId"] == train_id
    hit5 = metrics["test"]["arms"]["adapter"]["hit@5"]
    assert evals[0].data.metrics["test.adapter.hit_at_5"] == pytest.approx(hit5)
    # the metrics live on the eval run only; the train run links to it
    train_run = client.get_run(train_id)
    assert "test.adapter.hit_at_5" not in train_run.data.metrics
    assert train_run.data.tags["ragtune.eval_run_id"] == evals[0].info.run_id
    artifacts = {f.path for f in client.list_artifacts(evals[0].info.run_id)}
    assert {"report.json", "metrics.json", "hit_rate_at_k.png"} <= artifacts
    # The sets it read are the run's dataset inputs: name, content digest, rows, context. The stage runs in
    # tmp_path, whose data/fetch/train_questions.jsonl does not exist: no empty input is logged for it.
    inputs = {d.dataset.name: d for d in client.get_run(evals[0].info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"fetch/corpus", "synthesize/test", "synthesize/questions"}
    corpus = inputs["fetch/corpus"]
    content = (tmp_path / "data/fetch/corpus.jsonl").read_bytes()
    assert corpus.dataset.digest == hashlib.sha256(content).hexdigest()[:12]
    assert json.loads(corpus.dataset.profile)["num_rows"] == len(content.splitlines()) == 40
    assert {t.key: t.value for t in inputs["synthesize/questions"].tags}["mlflow.data.context"] == "training"
    tags = client.get_model_version("rq", version.version).tags  # the headline test numbers on the version
    assert float(tags["test.adapter.hit_at_5"]) == pytest.approx(hit5)
    assert {"test.cosine.hit_at_5", "test.adapter.mrr_at_20", "test.bm25.mrr_at_20"} <= set(tags)


def test_bm25_indexes_titles_as_its_include_title_says():
    from ragtune.evaluation.inputs import Corpus
    from ragtune.search.lexical import Bm25Index, Bm25Params

    corpus = Corpus(
        ["a", "b"],
        ["The processor shall notify.", "Fees are due monthly."],
        ["Breach notification", None],
        np.eye(2, dtype=np.float32),
    )
    assert corpus.lexical_texts(Bm25Params(), "eu-law") == corpus.texts  # auto: eu-law titles are its questions
    with_titles = corpus.lexical_texts(Bm25Params(), "jsonl")
    assert with_titles == ["Breach notification\n\nThe processor shall notify.", "Fees are due monthly."]
    assert corpus.lexical_texts(Bm25Params(include_title=False), "jsonl") == corpus.texts
    # a query that only the title answers is found only with titles indexed
    _, rows = Bm25Index(with_titles, Bm25Params()).top_k(["breach"], 1)
    assert rows[0, 0] == 0
    _, rows = Bm25Index(corpus.texts, Bm25Params()).top_k(["breach"], 1)
    assert rows[0, 0] == -1  # no term in common: nothing retrieved


def test_readme_says_whether_real_validation_questions_were_held_out():
    block = {
        "questions": 12,
        "origin": "human",
        "synthetic": 0,
        "arms": {"cosine": {"hit@5": 0.5, "mrr@20": 0.4}, "adapter": {"hit@5": 0.6, "mrr@20": 0.5}},
    }
    for setup in ({"validation": "real"}, {"validation": "real", "refit": True}):
        text = render_results({"setup": setup, "val": block})
        assert "**Real validation questions** — 12 questions" in text
        # refit or not, eval scores the adapter there with the members that never trained on each question
        assert "by the members that never trained on it, before any refit" in text
