"""Real servers for tests, each on 127.0.0.1 on a free port with a throw-away directory, stopped afterwards.

- PostgreSQL: the binaries of the `pgserver` wheel, trust authentication. PostgreSQL refuses to run as
  root, so under root it runs as the `pgserver` system user (the one pgserver itself uses).
- MLflow: `mlflow server` with a SQL (SQLite) backend store, serving artifacts from a local folder, as a team
  server does (there on PostgreSQL and shared storage)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs_as(user: str, program: Path) -> bool:
    """Whether `user` can run `program` (every directory above it must let them through)."""
    try:
        subprocess.run([str(program), "--version"], check=True, capture_output=True, user=user)
    except (PermissionError, subprocess.CalledProcessError):
        return False
    return True


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield `postgresql://postgres@127.0.0.1:PORT/postgres` of a fresh server."""
    from pgserver._commands import POSTGRES_BIN_PATH

    user = None
    if os.geteuid() == 0:
        from pgserver.utils import ensure_user_exists

        user = "pgserver"
        ensure_user_exists(user)
    root = Path(tempfile.mkdtemp(prefix="ragtune-pg-"))  # under /tmp: reachable by the server's user
    data = root / "data"
    data.mkdir()
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(data, user)
    port = free_port()
    bin_dir = POSTGRES_BIN_PATH
    if user is not None and not _runs_as(user, bin_dir / "initdb"):
        # The checkout lies under a directory only root may enter (/root, a `mktemp -d` folder): give the
        # server's user its own copy of the wheel's install and of the libraries its RPATH names
        # ($ORIGIN/../../../pgserver.libs), in the same relative places.
        install = POSTGRES_BIN_PATH.parent  # site-packages/pgserver/pginstall
        copy = root / "site" / install.parent.name / install.name
        shutil.copytree(install, copy, symlinks=True)
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, root / "site" / libs.name, symlinks=True)
        bin_dir = copy / POSTGRES_BIN_PATH.name

    def run(*args: str) -> None:
        subprocess.run(
            [str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, text=True, user=user, cwd=root
        )

    try:
        run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        run(
            "pg_ctl",
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "server.log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root}",
            "start",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                user=user,
                cwd=root,
            )
        for _ in range(20):
            if not (data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(timeout_s: float = 180.0, store: Path | None = None) -> Iterator[str]:
    """Yield `http://127.0.0.1:PORT` of a fresh `mlflow server` once its /health answers. `store`: the folder for
    its backend store and artifacts, kept afterwards (default: a temporary one, removed)."""
    root = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="ragtune-mlflow-"))
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if store is None:
            shutil.rmtree(root, ignore_errors=True)


@contextmanager
def scoring_server(command: str, port: int, env: dict[str, str], cwd: Path, timeout_s: float = 240.0) -> Iterator[str]:
    """Run the shell `command` (an `mlflow models serve ... --port PORT`) and yield `http://127.0.0.1:PORT`
    once its /ping answers. It runs in its own process group (mlflow execs uvicorn in a child), which is
    stopped afterwards."""
    log_path = cwd / "scoring-server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        ["bash", "-c", command], stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the scoring server did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
