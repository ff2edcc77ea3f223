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
    write_jsonl(tmp_path / "mine/corpus.jsonl", rows)
    write_jsonl(
        tmp_path / "mine/test.jsonl",
        [
            {"id": f"q{i}", "question": q, "relevant_ids": [rows[r]["id"]], "answer": None}
            for i, (q, r) in enumerate(questions)
        ],
    )
    ragtune = [str(BIN / "python"), "-m", "ragtune"]
    init = [*ragtune, "init", "project", "--corpus", "mine/corpus.jsonl", "--test", "mine/test.jsonl"]
    out = run([*init, *[a for s in CHEAP for a in ("-S", s)]], tmp_path)
    project = tmp_path / "project"
    assert "dvc repro" in out and (project / ".dvc").is_dir() and (project / "corpus.dvc").is_file()
    assert (project / ".ragtune/python").read_text().strip() == str(BIN / "python")
    assert run(["git", "status", "--porcelain"], project) == ""  # everything committed by init

    dvc = [str(BIN / "dvc")]
    out = run([*dvc, "repro"], project)
    assert "Running stage 'judge'" in out and not repeated_warnings(out), repeated_warnings(out)
    report = json.loads((project / "data/eval/report.json").read_text())
    assert report["recommendation"]["arm"] in report["test"]["arms"]
    assert (project / "models/adapter/sentence_transformer").is_dir() and (project / "models/hybrid").is_dir()
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first run"], project)

    out = run([*dvc, "exp", "run", "-n", "two-per-chunk", "-S", "synthesize.questions_per_chunk=2"], project)
    assert "Running stage 'synthesize'" in out and not repeated_warnings(out), repeated_warnings(out)
    changed = run(["git", "diff", "--numstat", "params.yaml"], project).split()
    assert changed[:2] == ["1", "1"], changed  # -S changed one line: init wrote params.yaml as DVC writes it
    run([*dvc, "exp", "run", "-n", "rrf", "-S", "eval.hybrid.method=rrf"], project)

    table = {r["experiment"]: r for r in json.loads(run([*ragtune, "exps", "--json"], project))}
    assert table["two-per-chunk"]["changed"] == {"synthesize.questions_per_chunk": 2}
    # the second experiment starts from the workspace the first left (its params applied), as DVC runs them
    assert table["rrf"]["changed"] == {"eval.hybrid.method": "rrf", "synthesize.questions_per_chunk": 2}
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
