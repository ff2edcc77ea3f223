"""dvc.yaml is generated from the stage definitions (ragtune.project.pipeline) with each stage's code dependencies
derived from its module's imports (ragtune.project.code_deps): the listed files are exactly the ragtune source a
stage can run, and a changed module reruns exactly the stages that import it, as real DVC sees it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ragtune.paths import PipelinePaths
from ragtune.project.code_deps import SourceTree, code_files, source_code_deps, stage_module_file
from ragtune.project.pipeline import STAGES, render
from ragtune.project.sync import main as sync_main
from ragtune.project.sync import stale_files

REPO = Path(__file__).resolve().parents[2]


def test_the_generated_files_are_current():
    assert stale_files(REPO) == [], "run `python -m ragtune.project --write` and commit"


def test_every_stage_runs_its_module_through_the_launcher_with_every_path_in_its_command():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert list(stages) == [s.name for s in STAGES]
    layout = PipelinePaths()
    for s in STAGES:
        cmd = " ".join(str(stages[s.name]["cmd"]).split())
        assert cmd.startswith(f"sh .ragtune/stage {s.name}")
        assert stage_module_file(s.name, REPO / "src").is_file()
        # every dependency and output path (or its folder) is passed on the command line
        for entry in (*s.deps, *s.outs, *s.metrics, *s.plots):
            assert f"--{entry.field.replace('_', '-')} {getattr(layout, entry.field)}" in cmd, (s.name, entry)


def test_render_without_source_depends_on_the_project_record_instead_of_code():
    text = render()
    stages = yaml.safe_load(text)["stages"]
    for stage in stages.values():
        assert ".ragtune/ragtune.json" in stage["deps"] and not any(d.startswith("src/") for d in stage["deps"])


def _package(tmp_path: Path, files: dict[str, str]) -> SourceTree:
    for rel, text in files.items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return SourceTree(tmp_path / "src")


def test_trace_follows_relative_lazy_and_package_imports_but_not_type_checking(tmp_path):
    tree = _package(
        tmp_path,
        {
            "ragtune/__init__.py": "",
            "ragtune/a.py": "from .b import thing\n",
            "ragtune/b.py": "def thing():\n    from .sub import deep\n",
            "ragtune/sub/__init__.py": "",
            "ragtune/sub/deep.py": "from .. import leaf\n",
            "ragtune/leaf.py": "import json\n",
            "ragtune/typed.py": "",
            "ragtune/unused.py": "",
            "ragtune/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .typed import T\nelse:\n"
                "    from . import leaf\n"
            ),
        },
    )
    script = tmp_path / "stages" / "s.py"
    script.parent.mkdir()
    script.write_text("from ragtune.a import thing\nimport ragtune.c\n", encoding="utf-8")
    names = {str(p.relative_to(tmp_path)) for p in code_files(script, tree)}
    assert names == {
        "stages/s.py",
        "src/ragtune/__init__.py",
        "src/ragtune/a.py",
        "src/ragtune/b.py",
        "src/ragtune/c.py",
        "src/ragtune/sub/__init__.py",
        "src/ragtune/sub/deep.py",
        "src/ragtune/leaf.py",
    }


def test_sync_check_names_a_stale_file_and_write_mends_it(tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / ".ragtune").mkdir()
    shutil.copy(REPO / ".ragtune/stage", repo / ".ragtune/stage")
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    assert sync_main(["--check", "--repo", str(repo)]) == 0
    module = repo / "src/ragtune/stages/judge.py"
    module.write_text(module.read_text(encoding="utf-8") + "\nimport ragtune.experiments  # a new import\n")
    assert sync_main(["--check", "--repo", str(repo)]) == 1
    assert "dvc.yaml: stale" in capsys.readouterr().err
    assert sync_main(["--write", "--repo", str(repo)]) == 0
    judge = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["judge"]
    assert "src/ragtune/experiments.py" in judge["deps"]
    assert sync_main(["--check", "--repo", str(repo)]) == 0


def test_the_static_trace_covers_every_module_a_stage_loads():
    """What really loads when each stage's module is imported (its top-level imports) is within what the trace
    lists, so the trace cannot miss an import that Python follows."""
    deps = source_code_deps(REPO)
    probe = (
        "import importlib, json, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for n, m in sys.modules.items()"
        " if n == 'ragtune' or n.startswith('ragtune.'))))\n"
    )
    for name in ("fetch", "eval"):
        out = subprocess.run(
            [sys.executable, "-c", probe, f"ragtune.stages.{name}"], capture_output=True, text=True, check=True
        )
        loaded = {str(Path(f).resolve().relative_to(REPO)) for f in json.loads(out.stdout) if f}
        assert loaded and loaded <= set(deps(name)), f"{name}: loaded but not traced: {loaded - set(deps(name))}"


@pytest.mark.slow
def test_a_changed_module_reruns_exactly_the_stages_that_import_it(tmp_path):
    """Real DVC on a copy of the project whose data deps and outs are placeholders, committed as they are:
    after an edit to one module, `dvc status` names exactly the stages whose traced code holds it."""
    project = tmp_path / "p"
    shutil.copytree(REPO / "src/ragtune", project / "src/ragtune", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    stages = yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for stage in stages.values():
        outputs = (e for kind in ("outs", "metrics", "plots") for e in _names(stage.get(kind, [])))
        for entry in [*stage.get("deps", []), *outputs]:
            path = project / entry
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"placeholder {entry}\n", encoding="utf-8")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]

    def run(*args: str) -> str:
        done = subprocess.run([*dvc, *args], cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stderr}"
        return done.stdout

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run("init", "-q")
    run("commit", "-f")
    assert json.loads(run("status", "--json")) == {}
    traced = {s.name: source_code_deps(project)(s.name) for s in STAGES}
    for module in ("src/ragtune/records.py", "src/ragtune/search/lexical.py", "src/ragtune/judge/text_metrics.py"):
        path = project / module
        original = path.read_text(encoding="utf-8")
        path.write_text(original + "\n# edited\n", encoding="utf-8")
        changed = set(json.loads(run("status", "--json")))
        path.write_text(original, encoding="utf-8")
        expected = {s for s, files in traced.items() if module in files}
        assert changed == expected, module
        # records.py is everywhere (the data contracts); the other two only where eval and judge run
        assert module.endswith("records.py") or expected < set(stages), module


def _names(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]
