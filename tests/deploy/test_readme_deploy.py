"""The Deploy guide (docs/how-to/deploy.md): every block tagged for this test runs here, on a real export built
from the packaged MiniLM, and its result is checked against the pipeline's own vectors.

The tag `<!-- test: KIND -->` above a block (tests/doc_blocks.py) says what it is:
- `names`: the names the other blocks use (a Hub model, a fixed port, a model URI); not run: the test binds the
  same names to its own export, the packaged model, its scoring server and logged model, and takes `question`
  and `chunks` as written;
- a key of CHECKS (`dense`, `serving`, `pyfunc`): the block runs (cwd: a project holding the export where the
  train stage writes it) and CHECKS[KIND] asserts on the names it left;
- `serve command`: the shell line that starts the scoring server, run by the `scoring_server` fixture.
tests/docgen/test_doc_blocks.py fails on an untagged block and on a KIND no test asks for.

The scoring server is `mlflow models serve` of the query encoder logged as the train stage logs it
(`ragtune.adapter.mlflow_model.log_query_encoder`), started by the guide's own command, asked over HTTP.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from doc_blocks import Block, blocks_tagged
from export_support import BuiltExport, assert_vectors, build_export
from server_support import free_port, scoring_server

GUIDE_PORT = "5001"

pytestmark = pytest.mark.slow


BLOCKS: list[Block] = [
    *blocks_tagged("names"),
    *blocks_tagged("dense"),
    *blocks_tagged("serve command"),
    *blocks_tagged("serving"),
    *blocks_tagged("pyfunc"),
]


def block_named(kind: str) -> Block:
    (block,) = [b for b in BLOCKS if b.kind == kind]
    return block


def readme_names() -> dict[str, object]:
    """The `names` block's assignments: the question and chunks as written, the rest to be replaced."""
    tree = ast.parse(block_named("names").code)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


def check_dense(names: dict, built: BuiltExport) -> None:
    """A framework block: `query_vector` is the adapted vector of `question`, `document_vectors` the plain
    vectors of `chunks`, as the pipeline computes them."""
    assert_vectors(names["query_vector"], built.query_vectors([names["question"]]), "query_vector")
    assert_vectors(names["document_vectors"], built.document_vectors(names["chunks"]), "document_vectors")


def check_served(names: dict, built: BuiltExport) -> None:
    """The scoring server's answer, or the loaded MLflow model's prediction, is the adapted vector of `question`."""
    assert_vectors(names["query_vector"], built.query_vectors([names["question"]]), "served query_vector")


CHECKS: dict[str, Callable[[dict, BuiltExport], None]] = {
    "dense": check_dense,
    "serving": check_served,
    "pyfunc": check_served,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> BuiltExport:
    return build_export(tmp_path_factory.mktemp("deploy-readme"))


@pytest.fixture(scope="module")
def model_uri(built) -> str:
    """The query encoder logged as the train stage logs it, in the project folder's sqlite:///mlflow.db."""
    import mlflow
    from export_support import QUESTIONS

    from ragtune.adapter.mlflow_model import log_query_encoder

    mlflow.set_tracking_uri(f"sqlite:///{built.project / 'mlflow.db'}")
    mlflow.set_experiment("deploy")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    return log_query_encoder(run_id, built.path, 384, QUESTIONS[:1]).model_uri


@pytest.fixture(scope="module")
def scoring_server_url(built, model_uri):
    """The guide's serve command, run in the project folder (its sqlite:///mlflow.db is the test's) on the
    logged query encoder, on a free port instead of the guide's."""
    command = block_named("serve command").code.strip()
    assert "--env-manager local" in command and f"--port {GUIDE_PORT}" in command
    port = free_port()
    env = {
        **os.environ,
        "MODEL_URI": model_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with scoring_server(command.replace(f"--port {GUIDE_PORT}", f"--port {port}"), port, env, built.project) as url:
        yield f"{url}/invocations"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.kind.replace(' ', '-')}" for b in BLOCKS])
def test_deploy_block_runs_and_gives_the_library_vectors(block, built, request, monkeypatch):
    if block.kind == "names":
        names = readme_names()
        assert set(names) == {"export", "document_model", "question", "chunks", "scoring_url", "model_uri"}
        assert names["export"] == str(built.path.relative_to(built.project))  # where the train stage writes it
        return
    if block.kind == "serve command":  # run by the fixture; it answers
        import requests

        ping = requests.get(request.getfixturevalue("scoring_server_url").replace("/invocations", "/ping"))
        assert ping.status_code == 200
        return
    assert block.kind in CHECKS, f"{block.where}: no check for a block of kind {block.kind!r}"
    assert block.language == "python"
    names: dict = {
        **readme_names(),
        "export": str(built.path.relative_to(built.project)),
        "document_model": built.document_model,
    }
    if block.kind == "serving":
        names["scoring_url"] = request.getfixturevalue("scoring_server_url")
    if block.kind == "pyfunc":
        names["model_uri"] = request.getfixturevalue("model_uri")
    monkeypatch.chdir(built.project)
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")
    exec(compile(block.code, block.where, "exec"), names)
    CHECKS[block.kind](names, built)


def test_the_scoring_server_serves_the_library_vectors(scoring_server_url, built):
    """Beyond the guide's one question: a batch, in MLflow's dataframe form too, row for row."""
    import requests
    from export_support import QUESTIONS

    want = built.query_vectors(QUESTIONS)
    as_list = requests.post(scoring_server_url, json={"inputs": QUESTIONS}, timeout=60)
    as_frame = requests.post(
        scoring_server_url, json={"dataframe_split": {"columns": ["q"], "data": [[q] for q in QUESTIONS]}}, timeout=60
    )
    for response in (as_list, as_frame):
        assert response.status_code == 200, response.text
        assert_vectors(response.json()["predictions"], want, "served vectors")
    bad = requests.post(scoring_server_url, json={"nonsense": []}, timeout=60)
    assert bad.status_code == 400
