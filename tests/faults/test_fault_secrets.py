"""Fault cases 2 and 4 (issue 30): no secret is ever written down. A URL with a password is refused in params
with a message saying how to pass it (an `*_env` param naming an environment variable); a tracking URI with
credentials is checked with them as basic auth, not as part of the host name; logs and errors hide them; and a
planted password, key and token reach no file a whole run writes (workspace, DVC files and cache, git objects,
the MLflow server's store, the cache journal) nor its output."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic
from fault_support import Project, corpus_rows
from server_support import mlflow_server, postgres_server

from ragtune.adapter.config import TuneParams
from ragtune.checks import check_params_file
from ragtune.credentials import redact, remember
from ragtune.errors import ParamsError, RagtuneError
from ragtune.params import MlflowParams, load_section
from ragtune.tracking import check_tracking_server

SECRET = "Pl4nted-Passw0rd-51c2"
API_KEY = "sk-ant-planted-key-8d30f"


def params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, key, remedy",
    [
        (f"tune:\n  storage: postgresql://optuna:{SECRET}@db:5432/optuna\n", "tune.storage", "tune.storage_env"),
        (f"mlflow:\n  tracking_uri: http://me:{SECRET}@mlflow:5000\n", "mlflow.tracking_uri", "tracking_uri_env"),
        (f"llm:\n  anthropic:\n    base_url: https://u:{SECRET}@p\n", "llm.anthropic.base_url", "ANTHROPIC_BASE_URL"),
        (f"fetch:\n  jsonl:\n    corpus: https://host/c.jsonl?token={SECRET}\n", "fetch.jsonl.corpus", "environment"),
    ],
)
def test_password_in_params_is_refused_saying_how_to_pass_it(tmp_path, text, key, remedy):
    path = params_file(tmp_path, text)
    for load in (lambda: check_params_file(path), lambda: load_section(key.split(".")[0], _model(key), path)):
        with pytest.raises(ParamsError) as err:
            load()
        msg = str(err.value)
        assert f"{key} holds a password or token" in msg and remedy in msg and SECRET not in msg


def _model(key: str):
    from ragtune.checks import SECTION_MODELS

    return SECTION_MODELS[key.split(".")[0]]


def test_storage_and_tracking_uri_come_from_the_variables_their_env_params_name(monkeypatch):
    url = f"postgresql://optuna:{SECRET}@db:5432/optuna"
    monkeypatch.setenv("TEAM_STORAGE", url)
    monkeypatch.setenv("TEAM_MLFLOW", f"http://me:{SECRET}@mlflow:5000")
    assert TuneParams(storage_env="TEAM_STORAGE").storage_url() == url
    assert MlflowParams(tracking_uri_env="TEAM_MLFLOW").uri() == f"http://me:{SECRET}@mlflow:5000"
    monkeypatch.delenv("TEAM_STORAGE")
    with pytest.raises(RagtuneError, match="tune.storage_env names the environment variable TEAM_STORAGE, which"):
        TuneParams(storage_env="TEAM_STORAGE").storage_url()
    with pytest.raises(ValueError, match="set storage or storage_env, not both"):
        TuneParams(storage="x.journal", storage_env="TEAM_STORAGE")


def test_redact_hides_passwords_tokens_and_remembered_values():
    assert redact(f"postgresql://u:{SECRET}@h/db and sqlite:///x.db") == "postgresql://u:***@h/db and sqlite:///x.db"
    assert redact(f"https://h/x?a=1&token={SECRET}&b=2") == "https://h/x?a=1&token=***&b=2"
    assert redact("http://user@host:5000 postgresql://h/db") == "http://user@host:5000 postgresql://h/db"
    remember(API_KEY)
    assert redact(f"the key {API_KEY} was refused") == "the key *** was refused"


class _BasicAuthHealth(BaseHTTPRequestHandler):
    expected = "Basic " + base64.b64encode(f"ragtune:{SECRET}".encode()).decode()

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        ok = self.path == "/health" and self.headers.get("Authorization") == self.expected
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"unauthorized")


@pytest.fixture
def auth_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _BasicAuthHealth)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_tracking_uri_with_credentials_is_checked_with_them_as_basic_auth(auth_server, monkeypatch):
    check_tracking_server(f"http://ragtune:{SECRET}@{auth_server}")  # up, and the credentials are right
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ragtune")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    check_tracking_server(f"http://{auth_server}")  # MLflow's own variables
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(RagtuneError) as err:
        check_tracking_server(f"http://ragtune:wrong-{SECRET}@{auth_server}")
    assert "401" in str(err.value) and SECRET not in str(err.value) and "ragtune:***@127.0.0.1" in str(err.value)


STAGE_THAT_LEAKS = f"""
import logging
from ragtune.credentials import remember
from ragtune.errors import RagtuneError
from ragtune.stage import run_main

def main():
    remember("{API_KEY}")  # as the Anthropic backend does with the key it reads
    logging.getLogger("ragtune.x").warning("connecting to postgresql://u:{SECRET}@db/x with {API_KEY}")
    print("View run at: http://me:{SECRET}@mlflow:5000/#/experiments/1")  # as MLflow prints its run links
    raise {{error}}("cannot open postgresql://u:{SECRET}@db/x")

run_main(main)
"""


@pytest.mark.parametrize("error, status", [("RagtuneError", 2), ("ValueError", 1)])
def test_a_stage_hides_secrets_in_its_log_its_error_and_a_traceback(error, status):
    proc = subprocess.run(
        [sys.executable, "-c", STAGE_THAT_LEAKS.replace("{error}", error)], capture_output=True, text=True
    )
    assert proc.returncode == status
    assert "postgresql://u:***@db/x" in proc.stderr and SECRET not in proc.stderr and API_KEY not in proc.stderr
    assert "http://me:***@mlflow:5000" in proc.stdout and SECRET not in proc.stdout


# --- a whole run with a planted password, key and token ----------------------------------------------


@pytest.mark.slow
def test_a_planted_secret_reaches_no_file_a_run_writes(tmp_path):
    fake = FakeAnthropic().start()
    project = Project(tmp_path / "p")
    project.write_corpus(
        corpus_rows(16), [{"id": "q1", "question": "What must entities report?", "relevant_ids": ["c1"]}]
    )
    project.set_params(
        llm={"backend": "anthropic", "anthropic": {"base_url": fake.url, "concurrency": 2}},
        tune={"storage_env": "RAGTUNE_TUNE_STORAGE"},
        mlflow={"enabled": True, "tracking_uri_env": "RAGTUNE_TRACKING_URI"},
    )
    project.commit("team set-up: secrets in the environment")
    # This repository's own files hold the planted values (this test): only what the run writes counts.
    copied = {p: p.read_bytes() for p in files_under(project.path)}
    base = project.git("rev-parse", "HEAD").strip()
    store = tmp_path / "mlflow-store"
    try:
        with postgres_server() as pg, mlflow_server(store=store) as tracking:
            out = project.dvc(
                "exp",
                "run",
                "train",
                RAGTUNE_TUNE_STORAGE=pg.replace("postgres@", f"postgres:{SECRET}@"),
                RAGTUNE_TRACKING_URI=tracking.replace("http://", f"http://ragtune:{SECRET}@"),
                ANTHROPIC_API_KEY=API_KEY,
                timeout=900,
            )
    finally:
        fake.stop()
    # The run used them: the key reached the API, the study the database, the runs the server.
    assert {r["headers"].get("authorization") for r in fake.message_calls()} == {f"Bearer {API_KEY}"}
    best = (project.path / "data/tune/best.json").read_text(encoding="utf-8")
    assert '"storage": "postgresql://postgres:***@127.0.0.1' in best
    assert any(store.rglob("*.db")) and any((store / "artifacts").rglob("MLmodel"))

    secrets = (SECRET.encode(), API_KEY.encode())
    written = [p for p in files_under(project.path, store, project.journal) if copied.get(p) != p.read_bytes()]
    assert any(p.name == "dvc.lock" for p in written) and any(".dvc" in p.parts for p in written)
    leaks = [str(p) for p in written if any(s in p.read_bytes() for s in secrets)]
    assert leaks == []
    objects = git_objects(project.path, base)
    assert b"dvc.lock" in objects or len(objects) > 1000  # the experiment's commit and files are there
    assert not any(s in objects for s in secrets)
    assert SECRET not in out and API_KEY not in out


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def git_objects(repo: Path, since: str) -> bytes:
    """Every object reachable from any ref (branches, `dvc exp` refs) but not from commit `since`, uncompressed."""
    listing = subprocess.run(
        ["git", "rev-list", "--all", "--objects", "--not", since], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    ids = "".join(line.split()[0] + "\n" for line in listing.splitlines() if line.strip())
    return subprocess.run(["git", "cat-file", "--batch"], cwd=repo, input=ids.encode(), capture_output=True).stdout
