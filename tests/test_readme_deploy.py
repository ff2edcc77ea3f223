"""README "Deploy": every fenced block in the section runs here, on a real export built from the packaged
MiniLM, and its result is checked against the pipeline's own vectors.

How a block says what it is: the line `<!-- deploy-test: KIND -->` right above its fence, where KIND is
- `names`: the names the other blocks use (a Hub model, a fixed port); not run: the test binds the same names
  to its own export, the packaged model and its scoring server, and takes `question` and `chunks` as written;
- a key of CHECKS: the block runs (cwd: a project holding the export where the train stage writes it) and
  CHECKS[KIND] asserts on the names it left;
- `serve command`: the shell line that starts the scoring server, run by the `scoring_server` fixture.
A block without a known KIND fails the test, so a new block cannot go unrun.

The scoring server is `mlflow models serve` of the query encoder logged as the train stage logs it
(`ragtune.adapter.mlflow_model.log_query_encoder`), started by the README's own command, asked over HTTP.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from export_support import BuiltExport, assert_vectors, build_export
from server_support import free_port, scoring_server

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Deploy"
TAG = re.compile(r"<!-- deploy-test: ([a-z ]+) -->\n```(\w+)\n(.*?)```", re.S)
FENCE = re.compile(r"^```\w+$", re.M)
README_PORT = "5001"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    kind: str
    language: str
    code: str
    line: int  # in README.md, for the test id and errors


def deploy_blocks(readme: Path = REPO / "README.md") -> list[Block]:
    """Every fenced block of the Deploy section with its kind; a fence without a tag is an error."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n") + 1
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else len(text)]
    offset = text[:start].count("\n") + 1
    blocks = [
        Block(m.group(1), m.group(2), m.group(3), offset + section[: m.start()].count("\n") + 1)
        for m in TAG.finditer(section)
    ]
    fences = len(FENCE.findall(section))
    untagged = fences - len(blocks)
    assert not untagged, f"README.md {SECTION}: {untagged} fenced block(s) without a deploy-test tag"
    return blocks


BLOCKS = deploy_blocks()


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


def check_serving(names: dict, built: BuiltExport) -> None:
    """The scoring server's answer is the adapted vector of `question`."""
    assert_vectors(names["query_vector"], built.query_vectors([names["question"]]), "served query_vector")


CHECKS: dict[str, Callable[[dict, BuiltExport], None]] = {"dense": check_dense, "serving": check_serving}
NEEDS_SERVER = {"serving"}
# Kinds whose blocks need the pipeline's artefacts or real stores: run by these tests instead.
ELSEWHERE = {"hybrid": "test_deploy_hybrid.py", "store commands": "test_stores.py"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> BuiltExport:
    return build_export(tmp_path_factory.mktemp("deploy-readme"))


@pytest.fixture(scope="module")
def scoring_server_url(built):
    """The README's serve command, run in the project folder (its sqlite:///mlflow.db is the test's) on the
    query encoder logged there, on a free port instead of the README's."""
    import mlflow
    from export_support import QUESTIONS

    from ragtune.adapter.mlflow_model import log_query_encoder

    mlflow.set_tracking_uri(f"sqlite:///{built.project / 'mlflow.db'}")
    mlflow.set_experiment("deploy")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    info = log_query_encoder(run_id, built.path, 384, QUESTIONS[:1])
    command = block_named("serve command").code.strip()
    assert "--env-manager local" in command and f"--port {README_PORT}" in command
    port = free_port()
    env = {
        **os.environ,
        "MODEL_URI": info.model_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with scoring_server(command.replace(f"--port {README_PORT}", f"--port {port}"), port, env, built.project) as url:
        yield f"{url}/invocations"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.kind.replace(' ', '-')}" for b in BLOCKS])
def test_readme_deploy_block_runs_and_gives_the_library_vectors(block, built, request, monkeypatch):
    if block.kind == "names":
        names = readme_names()
        assert set(names) == {"export", "document_model", "question", "chunks", "scoring_url"}
        assert names["export"] == str(built.path.relative_to(built.project))  # where the train stage writes it
        return
    if block.kind == "serve command":  # run by the fixture; it answers
        import requests

        ping = requests.get(request.getfixturevalue("scoring_server_url").replace("/invocations", "/ping"))
        assert ping.status_code == 200
        return
    if block.kind in ELSEWHERE:  # that test finds the block by its tag
        assert f'readme_deploy_blocks("{block.kind}")' in (Path(__file__).parent / ELSEWHERE[block.kind]).read_text()
        return
    assert block.kind in CHECKS, f"README.md:{block.line}: no check for a deploy-test block of kind {block.kind!r}"
    assert block.language == "python"
    names: dict = {
        **readme_names(),
        "export": str(built.path.relative_to(built.project)),
        "document_model": built.document_model,
    }
    if block.kind in NEEDS_SERVER:
        names["scoring_url"] = request.getfixturevalue("scoring_server_url")
    monkeypatch.chdir(built.project)
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")
    exec(compile(block.code, f"README.md:{block.line}", "exec"), names)
    CHECKS[block.kind](names, built)


def test_the_scoring_server_serves_the_library_vectors(scoring_server_url, built):
    """Beyond the README's one question: a batch, in MLflow's dataframe form too, row for row."""
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


def test_an_untagged_block_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{SECTION}\n\n```python\nprint(1)\n```\n\n## Next\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="1 fenced block"):
        deploy_blocks(readme)
