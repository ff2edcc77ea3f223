"""Real vector stores: a real PostgreSQL server with pgvector (pgserver's binaries) and an embedded LanceDB
folder, filled by `ragtune index` from a tiny real pipeline. Exact search in the store returns eval's adapter
top-k; an HNSW index is searched and its recall@20 against exact computed; filling is idempotent and resumes
after a failure; other vectors and unreachable servers are refused with clear messages; pgvector's hybrid in
SQL is the RRF of its own full-text and vector rankings."""

import json
import shutil

import numpy as np
import pytest
from deploy_support import QUESTIONS, build_pipeline
from server_support import free_port, postgres_server

from ragtune.cli import main
from ragtune.deploy.commands import Pipeline
from ragtune.deploy.hybrid import reciprocal_rank_fusion
from ragtune.deploy.stores import index_into, open_store
from ragtune.errors import RagtuneError
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.run import prepare_eval
from ragtune.io import write_json
from ragtune.paths import PipelinePaths

pytestmark = pytest.mark.slow
STORES = ["pgvector", "lancedb"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def arms(pipeline):
    """Eval's arms and test questions on the pipeline (the code the eval stage runs)."""
    inputs = prepare_eval(
        PipelinePaths().under(pipeline), EvalParams(), fetch_report=pipeline / "data/fetch/report.json"
    )
    return {a.name: a for a in inputs.arms}, inputs.test


@pytest.fixture
def store_url(request, tmp_path):
    if request.param == "pgvector":
        return request.getfixturevalue("pg_url")
    return f"lancedb://{tmp_path / 'lance'}"


def index(url, table, *extra, capsys=None):
    assert main(["index", "--store", url, "--table", table, *extra]) == 0
    return capsys.readouterr().out if capsys is not None else None


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_exact_search_in_the_store_is_evals_adapter_top_k_and_a_rerun_adds_nothing(
    store_url, pipeline, arms, monkeypatch, capsys, request
):
    table = f"exact_{request.node.callspec.id.replace('-', '_')}"
    monkeypatch.chdir(pipeline)
    assert "48 rows added, 0 already there" in index(store_url, table, capsys=capsys)
    assert "0 rows added, 48 already there" in index(store_url, table, capsys=capsys)
    by_name, test = arms
    adapter = by_name["adapter"]
    eval_scores, eval_rows = adapter.search(test, 20)
    store = open_store(store_url, table)
    try:
        found = store.search(adapter.adapt(test), 20, exact=True)
        assert store.count() == 48
    finally:
        store.close()
    corpus_ids = Pipeline.load(pipeline / "params.yaml").corpus.ids
    assert [ids for ids, _ in found] == [[corpus_ids[r] for r in row] for row in eval_rows]
    assert np.allclose([s for _, s in found], eval_scores, atol=1e-5)

    # The command: every question of a file, loaded once, one JSON line each; the adapter column is eval's.
    (pipeline / "questions.txt").write_text("\n".join(q for q, _ in QUESTIONS) + "\n\n", encoding="utf-8")
    args = ["search", "--store", store_url, "--table", table, "-f", "questions.txt", "--json", "-k", "5"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(QUESTIONS)
    for line, row, cosine_row in zip(lines, eval_rows, by_name["cosine"].retrieve(test, 5)):
        out = json.loads(line)
        assert [h["id"] for h in out["adapter"]] == [corpus_ids[r] for r in row[:5]]
        assert [h["id"] for h in out["cosine"]] == [corpus_ids[r] for r in cosine_row]
        assert out["hybrid_fusion"] == {"method": "rrf", "candidates": 100, "lexical": "full-text", "rrf_k": 60.0}
        scores = [h["score"] for h in out["hybrid"]]
        assert (
            len(scores) == 5 and scores == sorted(scores, reverse=True) and scores[0] <= 2 / 61 + 1e-6
        )  # RRF: at best first in both


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_hnsw_search_and_its_recall_against_exact(store_url, pipeline, arms, monkeypatch, capsys, request):
    table = f"hnsw_{request.node.callspec.id}"
    monkeypatch.chdir(pipeline)
    assert "HNSW index built" in index(store_url, table, "--hnsw", "--m", "8", capsys=capsys)
    assert "HNSW index already there" in index(store_url, table, "--hnsw", capsys=capsys)
    adapter, test = arms[0]["adapter"], arms[1]
    store = open_store(store_url, table)
    try:
        exact = store.search(adapter.adapt(test), 20, exact=True)
        approx = store.search(adapter.adapt(test), 20, exact=False, ef_search=40)
    finally:
        store.close()
    recall = np.mean([len(set(a) & set(e)) / len(e) for (a, _), (e, _) in zip(approx, exact)])
    assert 0.0 <= recall <= 1.0 and all(len(ids) <= 20 for ids, _ in approx)
    args = ["search", "prohibited AI practices", "--store", store_url, "--table", table, "--approx", "--json"]
    assert main(args) == 0
    assert len(json.loads(capsys.readouterr().out)["adapter"]) == 5


class FailingAfter:
    """A store whose `add` fails once `n` batches went in (a run killed half-way)."""

    def __init__(self, store, n):
        self.store, self.n = store, n

    def __getattr__(self, name):
        return getattr(self.store, name)

    def add(self, batch):
        if self.n == 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        self.store.add(batch)


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_run_stopped_half_way_resumes(store_url, pipeline, request):
    table = f"resume_{request.node.callspec.id}"
    source = Pipeline.load(pipeline / "params.yaml", pipeline / "data/fetch/corpus.jsonl", pipeline / "data/embed")
    store = open_store(store_url, table)
    try:
        with pytest.raises(KeyboardInterrupt):
            index_into(FailingAfter(store, 2), source.identity(), source.rows(), batch_size=10)
        assert store.count() == 20
        report = index_into(store, source.identity(), source.rows(), batch_size=10)
        assert (report.added, report.already) == (28, 20) and store.count() == 48
        assert sorted(store.stored_ids()) == sorted(source.corpus.ids)
    finally:
        store.close()


def test_a_failed_batch_leaves_nothing_half_written_in_postgres(pg_url, pipeline):
    source = Pipeline.load(pipeline / "params.yaml", pipeline / "data/fetch/corpus.jsonl", pipeline / "data/embed")
    rows = source.rows()
    bad = rows.emb.copy()
    bad[15] = np.nan  # pgvector refuses NaN: the second batch fails at its sixth row
    store = open_store(pg_url, "half_batch")
    try:
        with pytest.raises(Exception, match="NaN"):
            index_into(store, source.identity(), rows.__class__(*(rows.__dict__ | {"emb": bad}).values()), 10)
        assert store.count() == 10  # the first batch only; none of the failed one
    finally:
        store.close()


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_an_index_of_other_vectors_is_refused_with_both_fingerprints(
    store_url, pipeline, tmp_path, monkeypatch, capsys, request
):
    table = f"other_{request.node.callspec.id}"
    monkeypatch.chdir(pipeline)
    index(store_url, table, capsys=capsys)
    other = tmp_path / "other"
    shutil.copytree(pipeline, other)
    info = json.loads((other / "data/embed/info.json").read_text())
    write_json(other / "data/embed/info.json", {**info, "fingerprint": "dir:another-model"})
    monkeypatch.chdir(other)
    assert main(["index", "--store", store_url, "--table", table]) == 2
    err = capsys.readouterr().err
    assert f"embedder_fingerprint: index '{info['fingerprint']}', pipeline 'dir:another-model'" in err
    assert "--table" in err

    write_json(other / "data/embed/info.json", info)
    corpus = (other / "data/fetch/corpus.jsonl").read_text().replace("72 hours", "48 hours")
    (other / "data/fetch/corpus.jsonl").write_text(corpus)
    assert main(["search", "breach", "--store", store_url, "--table", table]) == 2
    err = capsys.readouterr().err
    assert "corpus_fingerprint: index 'sha256:" in err and "pipeline 'sha256:" in err


def test_unreachable_or_unknown_stores_fail_fast_naming_the_option_and_hiding_the_password(pipeline, monkeypatch):
    monkeypatch.chdir(pipeline)
    url = f"postgresql://alice:s3cret@127.0.0.1:{free_port()}/db"
    for args in (["index", "--store", url], ["search", "q", "--store", url]):
        with pytest.raises(RagtuneError) as caught:
            from ragtune.deploy.cli_parts import run_index, run_search

            parsed = __import__("ragtune.cli", fromlist=["build_parser"]).build_parser().parse_args(args)
            (run_index if args[0] == "index" else run_search)(parsed)
        message = str(caught.value)
        assert "--store postgresql://alice:***@127.0.0.1" in message and "cannot connect" in message
        assert "s3cret" not in message
    with pytest.raises(RagtuneError, match="unknown store; use postgresql://"):
        open_store("mysql://bob:pw@host/db")
    with pytest.raises(RagtuneError, match="--table 'Bad-Name'"):
        open_store("lancedb:///tmp/x", "Bad-Name")


def test_pgvector_hybrid_in_sql_is_the_rrf_of_its_own_rankings(pg_url, pipeline, arms, monkeypatch, capsys):
    monkeypatch.chdir(pipeline)
    index(pg_url, "hybrid_sql", capsys=capsys)
    adapter, test = arms[0]["adapter"], arms[1]
    store = open_store(pg_url, "hybrid_sql")
    try:
        vectors = adapter.adapt(test)
        fused = store.hybrid(test.texts, vectors, 10, rrf_k=60.0, candidates=100)
        dense = store.search(vectors, 100, exact=True)
        row_of = {cid: i for i, cid in enumerate(Pipeline.load(pipeline / "params.yaml").corpus.ids)}
        for q, text in enumerate(test.texts):
            lexical = store.conn.execute(
                "SELECT row FROM hybrid_sql, (SELECT replace(plainto_tsquery('english', %s)::text, '&', '|')::tsquery "
                "AS tsq) q WHERE tsv @@ tsq ORDER BY ts_rank(tsv, tsq, 1) DESC, row LIMIT 100",
                (text,),
            ).fetchall()
            assert lexical, text  # every question shares a term with some chunk
            rankings = [np.array([row_of[i] for i in dense[q][0]]), np.array([r for (r,) in lexical])]
            scores, rows = reciprocal_rank_fusion(rankings, k=60.0, depth=10)
            assert [row_of[i] for i in fused[q][0]] == rows.tolist()
            assert np.allclose(fused[q][1], scores)
    finally:
        store.close()


def test_the_deploy_guides_store_commands_run(pg_url, pipeline, tmp_path, monkeypatch, capsys):
    """Every `ragtune` line of the Deploy guide's store block, against this test's PostgreSQL and a LanceDB
    folder (the guide's placeholder URLs replaced)."""
    import shlex

    from doc_blocks import blocks_tagged

    lines = [
        line for b in blocks_tagged("store commands") for line in b.code.splitlines() if line.startswith("ragtune ")
    ]
    assert any("postgresql://" in line for line in lines) and any("lancedb://" in line for line in lines)
    monkeypatch.chdir(pipeline)
    (pipeline / "questions.txt").write_text("\n".join(q for q, _ in QUESTIONS[:3]) + "\n", encoding="utf-8")
    for line in lines:
        line = line.replace("postgresql://user:password@localhost:5432/rag", pg_url)
        line = line.replace("lancedb://data/store", f"lancedb://{tmp_path / 'store'}")
        assert main(shlex.split(line)[1:]) == 0, line
        out = capsys.readouterr().out
        if "--json" in line:
            assert len(out.splitlines()) == 3
