"""dvc.yaml's code dependencies are derived from the stage scripts' imports (ragtune.project.code_deps): the
listed ones are exactly the ragtune files each stage can run, and a changed module reruns exactly the stages
that import it, as real DVC sees it."""

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

from ragtune.project.code_deps import SourceTree, code_files, compare, expected_code_deps, main, rewrite, script_of

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_lists_exactly_the_code_each_stage_imports():
    problems = compare(yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8")), REPO)
    assert problems == {}, (
        "dvc.yaml's code deps are stale; run `python -m ragtune.project.code_deps --write` and commit: "
        f"{json.dumps(problems, indent=1)}"
    )


def test_every_stage_runs_a_traced_script():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    traced = expected_code_deps({"stages": stages}, REPO)
    assert set(traced) == set(stages), "a stage whose cmd is not `python SCRIPT.py` escapes the dependency check"


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


def test_script_of_reads_the_stage_command():
    assert script_of("python stages/embed.py --corpus data/x.jsonl") == "stages/embed.py"
    assert script_of("/opt/venv/bin/python3 stages/eval.py") == "stages/eval.py"
    assert script_of("dvc exp show") is None


def test_rewrite_and_check_keep_data_deps_and_their_comments(tmp_path, capsys):
    _package(tmp_path, {"ragtune/__init__.py": "", "ragtune/x.py": "", "ragtune/y.py": ""})
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "one.py").write_text("import ragtune.x\n", encoding="utf-8")
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(
        "stages:\n  one:\n    cmd: python stages/one.py\n    deps:\n      - stages/one.py\n"
        "      - src/ragtune/y.py\n      - data/in.jsonl   # read whole\n    outs:\n      - data/out.json\n",
        encoding="utf-8",
    )
    assert main(["--dvc-yaml", str(dvc_yaml), "--check"]) == 1
    out = capsys.readouterr().out
    assert "stage one: missing code dep src/ragtune/x.py" in out and "extra code dep src/ragtune/y.py" in out
    assert rewrite(dvc_yaml, tmp_path) == ["one"]
    assert dvc_yaml.read_text(encoding="utf-8") == (
        "stages:\n  one:\n    cmd: python stages/one.py\n    deps:\n      - stages/one.py\n"
        "      - src/ragtune/__init__.py\n      - src/ragtune/x.py\n      - data/in.jsonl   # read whole\n"
        "    outs:\n      - data/out.json\n"
    )
    assert main(["--dvc-yaml", str(dvc_yaml), "--check"]) == 0
    assert rewrite(dvc_yaml, tmp_path) == []


def test_the_static_trace_covers_every_module_a_stage_loads():
    """What really loads when each stage script's module is imported (its top-level imports) is within what
    the trace lists, so the trace cannot miss an import that Python follows."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    traced = expected_code_deps({"stages": stages}, REPO)
    probe = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('stage_under_test', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for n, m in sys.modules.items()"
        " if n == 'ragtune' or n.startswith('ragtune.'))))\n"
    )
    for name in ("fetch", "eval"):
        script = REPO / script_of(" ".join(str(stages[name]["cmd"]).split()))
        out = subprocess.run([sys.executable, "-c", probe, str(script)], capture_output=True, text=True, check=True)
        loaded = {str(Path(f).resolve().relative_to(REPO)) for f in json.loads(out.stdout) if f}
        assert loaded and loaded <= set(traced[name]), f"{name}: loaded but not traced: {loaded - set(traced[name])}"


@pytest.mark.slow
def test_a_changed_module_reruns_exactly_the_stages_that_import_it(tmp_path):
    """Real DVC on a copy of the project whose data deps and outs are placeholders, committed as they are:
    after an edit to one module, `dvc status` names exactly the stages whose traced code holds it."""
    project = tmp_path / "p"
    for rel in ("stages", "src/ragtune"):
        shutil.copytree(REPO / rel, project / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    stages = yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for stage in stages.values():
        for entry in [
            *stage.get("deps", []),
            *(e for kind in ("outs", "metrics", "plots") for e in _names(stage.get(kind, []))),
        ]:
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
    traced = expected_code_deps({"stages": stages}, project)
    for module in ("src/ragtune/records.py", "src/ragtune/search/lexical.py", "src/ragtune/judge/text_metrics.py"):
        path = project / module
        original = path.read_text(encoding="utf-8")
        path.write_text(original + "\n# edited\n", encoding="utf-8")
        changed = set(json.loads(run("status", "--json")))
        path.write_text(original, encoding="utf-8")
        assert changed == {s for s, files in traced.items() if module in files}, module


def _names(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]
