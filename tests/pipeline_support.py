"""Helpers for end-to-end tests: a throwaway copy of the repository in which `dvc` runs for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repo_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore (the working tree a clone would have)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def pipeline_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["RAGTUNE_PYTHON"] = sys.executable  # the interpreter dvc.yaml's stage launcher runs the stages with
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def copy_repo(dest: Path) -> Path:
    """Copy the working tree to `dest`, commit it in a fresh git repo (dvc exp needs a commit)."""
    for rel in repo_files():
        if rel.startswith(("data/", "models/")) and not rel.endswith((".gitignore", ".gitkeep")):
            continue  # stage outputs: the copy must compute its own
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    (dest / "dvc.lock").unlink(missing_ok=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


@dataclass(frozen=True)
class StageProcess:
    started: float  # epoch seconds, measured from outside: just before the process was started
    ended: float  # and just after it exited
    stderr: str


def run_stages(
    workdir: Path, params: dict, *stages: str, timeout: int = 300, log_level: str = "WARNING"
) -> dict[str, StageProcess]:
    """Write `params` as workdir/params.yaml, then run each stage's module (ragtune.stages.<stage>) in `workdir`
    one after another with dvc.yaml's arguments (no DVC), failing with a stage's stderr when it exits
    non-zero; when each stage's process ran and its stderr (logged at `log_level`)."""
    import shlex

    import yaml

    commands = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAGTUNE_LOG": log_level}
    done = {}
    for stage in stages:
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", f"ragtune.stages.{stage}", *shlex.split(commands[stage]["cmd"])[3:]],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        done[stage] = StageProcess(started, time.time(), proc.stderr)
        assert proc.returncode == 0, f"{stage}: {proc.stderr[-3000:]}"
    return done


def dvc(dest: Path, *args: str, timeout: int = 900, journal: Path | None = None) -> str:
    """Run dvc in `dest`; return its combined output, failing with that output on a non-zero exit. `journal`:
    the cache journal directory (RAGTUNE_CACHE_DIR) of another machine, e.g. a teammate's empty one."""
    env = pipeline_env()
    if journal is not None:
        env["RAGTUNE_CACHE_DIR"] = str(journal)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{out[-6000:]}"
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


TINY_TOPICS = [
    ("gdpr", "The data subject has the right to obtain erasure of personal data without undue delay."),
    ("gdpr", "Controllers shall notify a personal data breach to the supervisory authority within 72 hours."),
    ("ai", "Providers of high-risk AI systems shall establish a risk management system."),
    ("ai", "Deployers shall ensure human oversight of high-risk AI systems by competent persons."),
    ("dora", "Financial entities shall classify ICT-related incidents and determine their impact."),
    ("dora", "Financial entities shall test their digital operational resilience every three years."),
    ("nis2", "Essential entities shall report significant incidents to their CSIRT within 24 hours."),
    ("nis2", "Member States shall adopt a national cybersecurity strategy."),
    ("cra", "Manufacturers shall handle vulnerabilities of products with digital elements for five years."),
    ("cra", "Importers shall only place on the market products that meet essential cybersecurity requirements."),
    ("csrd", "Large undertakings shall include sustainability information in their management report."),
    ("csrd", "Statutory auditors shall give an opinion on the assurance of sustainability reporting."),
]


def tiny_corpus(n_copies: int = 1) -> list[dict]:
    """A small corpus of distinct legal-sounding chunks (titles and sources as the contract wants)."""
    rows = []
    for copy in range(n_copies):
        for i, (src, text) in enumerate(TINY_TOPICS):
            suffix = "" if copy == 0 else f" This applies in case {copy}."
            rows.append(
                {"id": f"{src}-{copy}-{i}", "text": text + suffix, "title": f"{src.upper()} {i}", "source": src}
            )
    return rows
