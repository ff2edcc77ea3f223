"""Fault case 5 (issue 30), the caches themselves: a corrupt or truncated cache file, a read-only one, a full
disk when the stage merges its rows in at the end. Each is an error naming the file and what to do, or is
handled; none loses rows already computed; none leaves a half-written output. The embed stage as a process,
on the packaged embedder."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_chunks, write_project

from ragtune.records import write_jsonl

pytestmark = pytest.mark.slow

TRACKED = "data/cache/embeddings.sqlite"
N = 200  # chunks embedded before each fault


def embed(project: Path, journal: Path, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """`python -m ragtune.stages.embed` run directly on the corpus and fetch's test questions (no synthetic
    questions: an empty set); `file_size_limit` caps every file the stage writes (RLIMIT_FSIZE): past it, a write
    fails as on a full disk."""
    no_questions = project / "data/synthesize/questions.jsonl"
    if not no_questions.exists():
        write_jsonl(no_questions, [])

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "ragtune.stages.embed", "--test", "data/fetch/test.jsonl"],
        cwd=project,
        env={**os.environ, "RAGTUNE_CACHE_DIR": str(journal), "RAGTUNE_LOG": "WARNING", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit if file_size_limit else None,
    )


def encoded(project: Path) -> int:
    return json.loads((project / "data/embed/run.json").read_text())["encoded"]


def rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Path:
    """A project whose N chunks are embedded (its journal beside it), copied by each test."""
    root = tmp_path_factory.mktemp("embedded")
    project = write_project(root / "p", make_chunks(N))
    first = embed(project, root / "journal")
    assert first.returncode == 0, first.stderr[-3000:]
    assert encoded(project) == N
    return root


def embedded_project(tmp_path: Path, template: Path) -> Path:
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    return tmp_path / "p"


def add_chunks(project: Path, n: int, more: int) -> None:
    chunks = make_chunks(n + more)
    extra = [c.model_copy(update={"text": c.text + f" Added in revision {i}."}) for i, c in enumerate(chunks[n:])]
    write_jsonl(project / "data/fetch/corpus.jsonl", chunks[:n] + extra)


def test_corrupt_cache_names_the_file_and_how_to_rebuild_it(tmp_path, embedded):
    project = embedded_project(tmp_path, embedded)
    (project / TRACKED).write_bytes(b"this is not a database " * 200)
    proc = embed(project, tmp_path / "journal")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{TRACKED}: the cache file is damaged" in proc.stderr
    assert f"ragtune cache repair {TRACKED}" in proc.stderr and f"dvc checkout {TRACKED}" in proc.stderr

    repaired = subprocess.run(
        [sys.executable, "-m", "ragtune.cli", "cache", "repair", TRACKED], cwd=project, capture_output=True, text=True
    )
    assert repaired.returncode == 0 and "rebuilt with 0 rows" in repaired.stdout
    again = embed(project, tmp_path / "journal")
    assert again.returncode == 0 and encoded(project) == 0  # this machine's journal still had every vector


def test_truncated_cache_keeps_every_readable_row_and_the_rerun_makes_only_the_rest(tmp_path, embedded):
    n = N
    project = embedded_project(tmp_path, embedded)
    path = project / TRACKED
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * 0.6))
    pulled = tmp_path / "teammate-journal"  # a copy cut short in transfer, on a machine with no journal
    proc = embed(project, pulled)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{TRACKED}: the cache file is damaged" in proc.stderr
    subprocess.run([sys.executable, "-m", "ragtune.cli", "cache", "repair", TRACKED], cwd=project, check=True)
    kept = rows(path)
    assert 0.4 * n < kept < n
    again = embed(project, pulled)
    assert again.returncode == 0 and encoded(project) == n - kept


def test_read_only_cache_is_replaced_never_written_in_place(tmp_path, embedded):
    """DVC's link cache types leave data/cache/*.sqlite a read-only link to a file of .dvc/cache, which must
    never change; `chmod a-w` leaves it read-only too. The stage, run directly, still adds its rows."""
    project = embedded_project(tmp_path, embedded)
    path = project / TRACKED
    dvc_object = tmp_path / "dvc-cache-object"
    os.link(path, dvc_object)
    os.chmod(path, 0o444)
    digest = hashlib.md5(dvc_object.read_bytes()).hexdigest()
    add_chunks(project, N, 3)
    proc = embed(project, tmp_path / "journal")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert encoded(project) == 3 and rows(path) == N + 3
    assert hashlib.md5(dvc_object.read_bytes()).hexdigest() == digest  # the linked file is untouched


def test_full_disk_at_cache_close_leaves_the_last_outputs_whole_and_loses_no_vector(tmp_path, embedded):
    project = embedded_project(tmp_path, embedded)
    outputs = {p: p.read_bytes() for p in (project / "data/embed").iterdir() if p.name != "run.json"}
    size = (project / TRACKED).stat().st_size
    add_chunks(project, N, 30)
    # The journal on another disk with room (a fresh one: only this run's rows); data/ full when the stage ends.
    journal = tmp_path / "other-disk-journal"
    proc = embed(project, journal, file_size_limit=size + 8192)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{TRACKED}: could not write it" in proc.stderr and "free space" in proc.stderr
    assert str(journal / "journal/embeddings.sqlite") in proc.stderr
    assert {p: p.read_bytes() for p in outputs} == outputs  # the last run's outputs, whole
    assert (project / TRACKED).stat().st_size == size and rows(project / TRACKED) == N
    assert rows(journal / "journal/embeddings.sqlite") == 30  # this run's vectors, kept

    again = embed(project, journal)  # space freed
    assert again.returncode == 0 and encoded(project) == 0 and rows(project / TRACKED) == N + 30
