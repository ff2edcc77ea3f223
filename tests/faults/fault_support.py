"""What the fault-injection suite shares: a scratch copy of this repository in which DVC and the stages run for
real, each project with its own cache journal directory (ragtune.cache), tiny corpora, and waiting on a
running stage before it is interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pipeline_support import copy_repo, pipeline_env

KEY = "sk-ant-fault-suite-3e9d1c"
DVC = str(Path(sys.executable).parent / "dvc")
TOPICS = ["breach", "erasure", "oversight", "incident", "resilience", "strategy", "vulnerability", "assurance"]


def corpus_rows(n: int, prefix: str = "c", marker: str = "", every: int = 0) -> list[dict]:
    """n chunks of distinct text, two sentences each; with `every`, each `every`-th carries `marker`."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        mark = f" {marker}" if every and i % every == 0 else ""
        rows.append(
            {
                "id": f"{prefix}{i}",
                "text": f"Entities shall report each {topic} of kind {prefix}{i} to the authority within {i + 2} "
                f"days. The authority shall keep records of measure {prefix}{i * 7 + 3} for ten years.{mark}",
                "title": f"Article {prefix}{i}",
                "source": "fault",
            }
        )
    return rows


class Project:
    """A copy of the repository (a git repo with one commit) at `root`, its journals in `journal`."""

    def __init__(self, root: Path, journal: Path | None = None, copy: bool = True):
        self.path = copy_repo(root) if copy else root
        self.journal = journal or root.with_name(root.name + "-journal")

    def env(self, **extra: str) -> dict[str, str]:
        env = pipeline_env()
        env.update({"RAGTUNE_CACHE_DIR": str(self.journal), "ANTHROPIC_API_KEY": KEY, "RAGTUNE_LOG": "WARNING"})
        env.update(extra)
        return env

    def git(self, *args: str) -> str:
        g = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
        return subprocess.run([*g, *args], cwd=self.path, capture_output=True, text=True, check=True).stdout

    def commit(self, message: str) -> None:
        """Commit the workspace: `dvc exp run --temp` and `--queue` run what git has."""
        self.git("add", "-A")
        self.git("commit", "-qm", message, "--allow-empty")

    def set_params(self, **sections: Any) -> None:
        """Deep-merge `sections` into params.yaml."""
        path = self.path / "params.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        _merge(data, sections)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def write_corpus(self, rows: list[dict], test: list[dict] | None = None) -> None:
        """corpus/corpus.jsonl (and corpus/test.jsonl) as the jsonl source, with fast tune/train/curve settings."""
        folder = self.path / "corpus"
        folder.mkdir(exist_ok=True)
        (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if test is not None:
            (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test), encoding="utf-8")
        self.set_params(
            fetch={
                "source": "jsonl",
                "jsonl": {"corpus": "corpus/corpus.jsonl", "test": "corpus/test.jsonl" if test is not None else None},
            },
            mlflow={"enabled": False},
            tune={"n_trials": 2, "timeout_s": 60},
            train={"bagging": 1, "max_epochs": 5},
            curve={"enabled": False},
        )

    def run(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd), cwd=self.path, env=env or self.env(), capture_output=True, text=True, timeout=timeout
        )

    def dvc(self, *args: str, ok: bool = True, timeout: float = 600, **env: str) -> str:
        """Run dvc; its output. `ok`: it must succeed (True) or fail (False); None: either."""
        proc = self.run(DVC, *args, env=self.env(**env), timeout=timeout)
        out = proc.stdout + proc.stderr
        if ok is not None:
            assert (proc.returncode == 0) == ok, f"dvc {' '.join(args)}: exit {proc.returncode}\n{out[-5000:]}"
        return out

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """dvc in its own process group, as a terminal runs it (Ctrl-C reaches dvc and the stage)."""
        return subprocess.Popen(
            [DVC, *args],
            cwd=self.path,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # As a terminal starts it: Ctrl-C delivered (a shell's background job would inherit it ignored).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def journal_rows(self, name: str) -> int:
        path = self.journal / "journal" / name
        if not path.is_file():
            return 0
        try:
            conn = sqlite3.connect(path, timeout=30)
            try:
                return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.OperationalError:  # created but not yet initialised
            return 0

    def run_facts(self, stage: str) -> dict:
        return json.loads((self.path / "data" / stage / "run.json").read_text(encoding="utf-8"))

    def queue_and_wait(self, *args: str, timeout: float = 600) -> str:
        """`dvc exp run --queue ARGS`, `dvc queue start`, wait until it ran; the experiment's log."""
        queued = self.dvc("exp", "run", "--queue", *args)
        name = re.search(r"Queued experiment '([^']+)'", queued)
        assert name, queued
        self.dvc("queue", "start")
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.dvc("queue", "status")
            if name[1] in status and re.search(rf"{re.escape(name[1])}\s.*(Success|Failed)", status):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"the queued experiment did not finish:\n{status}")
        log = self.dvc("queue", "logs", name[1], ok=None)
        self.dvc("queue", "stop", ok=None)
        assert "Success" in re.search(rf"{re.escape(name[1])}\s.*", status)[0], log[-4000:]
        return log


def wait_until(condition, timeout: float = 300, what: str = "the condition") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, sig: int) -> str:
    """Send `sig` to the process group (Ctrl-C is SIGINT), wait, return its output; it must not succeed."""
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    return out


def count(pattern: str, text: str) -> int:
    """The integer `pattern`'s group captures in a stage's printed summary (the last one)."""
    found = re.findall(pattern, text)
    assert found, f"no match for {pattern!r} in:\n{text[-3000:]}"
    return int(found[-1])


def _merge(a: dict, b: dict) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v


SIGINT, SIGKILL = signal.SIGINT, signal.SIGKILL
