"""Your own corpus in your own project, as a person runs it: `ragtune init` in a fresh folder, `dvc repro` and two
`dvc exp run -S ...` from a shell where no virtualenv is active, `ragtune exps` reading the experiments back, no
warning twice (DVC's own included), this repository untouched; and an upgrade of ragtune said plainly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from doc_blocks import blocks_tagged, command_lines
from pipeline_support import REPO, tiny_corpus, write_jsonl

pytestmark = pytest.mark.slow

CHEAP = [
    "mlflow.enabled=false",
    "tune.n_trials=2",
    "train.max_epochs=2",
    "train.bagging=1",
    "eval.bootstrap_resamples=200",
    "curve.enabled=false",
    "judge.max_questions=1",
    "judge.swap_order=false",
    "judge.bootstrap_resamples=200",
]
BIN = Path(sys.executable).parent


def repeated_warnings(output: str) -> dict[str, int]:
    """Warning lines (DVC's `WARNING:` and logging's ` WARNING `) said more than once, timestamps dropped."""
    lines = [re.sub(r"^\S+ \S+ ", "", line.strip()) for line in output.splitlines() if "WARNING" in line]
    return {line: n for line, n in Counter(lines).items() if n > 1}


JOURNAL: dict[str, str] = {}  # this test's own cache journal (RAGTUNE_CACHE_DIR), set by the test


def shell_env() -> dict[str, str]:
    """A shell with no virtualenv on PATH: ragtune's interpreter is found through the project's launcher."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    return {**env, **JOURNAL}


def run(cmd: list[str], cwd: Path, timeout: int = 1200) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=shell_env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{out[-5000:]}"
    return out


def repo_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout


def test_init_repro_experiments_and_upgrade_in_a_project_of_ones_own(tmp_path, monkeypatch):
    monkeypatch.setitem(JOURNAL, "RAGTUNE_CACHE_DIR", str(tmp_path / "journal"))
    before = repo_status()
    rows = tiny_corpus(n_copies=2)
    questions = [
        ("How quickly must a personal data breach be notified?", 1),
        ("Who must handle vulnerabilities of digital products?", 8),
        ("What must large undertakings report on sustainability?", 10),
    ]
    write_jsonl(tmp_path / "corpus.jsonl", rows)
    write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"id": f"q{i}", "question": q, "relevant_ids": [rows[r]["id"]], "answer": None}
            for i, (q, r) in enumerate(questions)
        ],
    )
    ragtune = [str(BIN / "python"), "-m", "ragtune"]
    dvc = [str(BIN / "dvc")]

    # The README's quickstart block, command by command, as a user pastes it (cheap params added to init).
    (quickstart,) = blocks_tagged("quickstart")
    said: dict[str, str] = {}
    cwd = tmp_path
    for argv in command_lines(quickstart):
        if argv[0] == "cd":
            cwd = cwd / argv[1]
            continue
        assert argv[0] in ("ragtune", "dvc"), argv
        cmd = [*(ragtune if argv[0] == "ragtune" else dvc), *argv[1:]]
        if argv[:2] == ["ragtune", "init"]:
            cmd += [a for s in CHEAP for a in ("-S", s)]
        said[" ".join(argv[:2])] = run(cmd, cwd)
    project = tmp_path / "my-project"
    assert cwd == project
    assert "dvc repro" in said["ragtune init"] and (project / "corpus.dvc").is_file()
    assert (project / ".ragtune/python").read_text().strip() == str(BIN / "python")
    assert "no API cost" in said["ragtune estimate"]  # the offline default pays nothing
    out = said["dvc repro"]
    assert "Running stage 'judge'" in out and not repeated_warnings(out), repeated_warnings(out)
    report = json.loads((project / "data/eval/report.json").read_text())
    assert report["recommendation"]["arm"] in report["test"]["arms"]
    assert (project / "models/adapter/sentence_transformer").is_dir() and (project / "models/hybrid").is_dir()
    out = said["dvc exp"]
    assert "Running stage 'synthesize'" in out and not repeated_warnings(out), repeated_warnings(out)
    assert "synthesize.questions_per_chunk" in said["ragtune exps"]
    changed = run(["git", "diff", "--numstat", "params.yaml"], project).split()
    assert changed[:2] == ["1", "1"], changed  # -S changed one line: init wrote params.yaml as DVC writes it
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first run"], project)

    run([*dvc, "exp", "run", "-n", "rrf", "-S", "eval.hybrid.method=rrf"], project)

    table = {r["experiment"]: r for r in json.loads(run([*ragtune, "exps", "--json"], project))}
    # the second experiment starts from the commit holding the first one's params
    assert table["rrf"]["changed"] == {"eval.hybrid.method": "rrf"}
    for row in table.values():
        assert set(row["arms"]) >= {"cosine", "adapter", "bm25", "hybrid"} and row["questions"] == len(questions)
        assert row["recommended_arm"] in row["arms"]

    header = run([*dvc, "exp", "show", "--csv"], project).splitlines()[0].split(",")
    assert not [c for c in header if c.startswith(("src/", "stages/"))], "a project depends on no source file"
    assert [c for c in header if c.startswith(".ragtune/")] == [".ragtune/ragtune.json"]

    # A project made by an older ragtune (its outputs recorded against that version), run by this one: stop, and
    # say what to do; the upgrade then reruns every stage.
    record = project / ".ragtune/ragtune.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "ragtune": "0.0.1"}))
    run([*dvc, "commit", "-f", "-q"], project)
    proc = subprocess.run([*dvc, "repro", "-f", "check"], cwd=project, env=shell_env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "ragtune init --upgrade" in proc.stdout + proc.stderr
    out = run([*ragtune, "init", "--upgrade"], project)
    assert ".ragtune/ragtune.json" in out and "reruns every stage" in out
    status = json.loads(run([*dvc, "status", "--json"], project))
    assert set(status) == {"check", "fetch", "synthesize", "embed", "tune", "train", "eval", "curve", "judge"}

    assert repo_status() == before, "ragtune init and the project's runs changed nothing in this repository"
