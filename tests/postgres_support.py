"""A real PostgreSQL server for tests: the binaries of the `pgserver` wheel, started on 127.0.0.1 on a free
port with a throw-away data directory, trust authentication, and stopped afterwards. PostgreSQL refuses to
run as root, so under root it runs as the `pgserver` system user (the one pgserver itself uses)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield `postgresql://postgres@127.0.0.1:PORT/postgres` of a fresh server."""
    from pgserver._commands import POSTGRES_BIN_PATH

    user = None
    if os.geteuid() == 0:
        from pgserver.utils import ensure_user_exists

        user = "pgserver"
        ensure_user_exists(user)
    root = Path(tempfile.mkdtemp(prefix="ragtune-pg-"))   # under /tmp: reachable by the server's user
    data = root / "data"
    data.mkdir()
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(data, user)
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([str(POSTGRES_BIN_PATH / args[0]), *args[1:]], check=True, capture_output=True, text=True,
                       user=user, cwd=root)

    try:
        run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        run("pg_ctl", "-D", str(data), "-w", "-l", str(root / "server.log"),
            "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, user=user, cwd=root)
        for _ in range(20):
            if not (data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
