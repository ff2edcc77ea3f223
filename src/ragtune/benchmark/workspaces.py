"""One scratch DVC workspace per corpus: its params (the project's, with the corpus and -S overrides),
its links to the project's code, and a `dvc repro` of the benchmark's stages in it.

A workspace is kept between runs, so a second `ragtune bench` reruns only what changed; each run's wall
time and the stages DVC ran are recorded in its bench_run.json.
"""

from __future__ import annotations

import copy
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ParamsError, RagtuneError

DEFAULT_OUT = Path("data/transfer")
DEFAULT_NAME = "default"
TARGET_STAGES = ("eval", "curve")  # the judge stage is not part of the benchmark
RUN_RECORD = "bench_run.json"  # in each workspace: the wall time of the last run that ran any stage
TRAIN_QUESTIONS = "train_questions.jsonl"  # optional in a DIR: labelled real questions to train on
LINKED = ("src", ".ragtune")  # what dvc.yaml runs: the source (its code deps) and the stage launcher
DVC_CONFIG = "[core]\n    no_scm = True\n    analytics = false\n"
TAIL_LINES = 40
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RUNNING = re.compile(r"Running stage '([^']+)'")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
Echo = Callable[[str], None]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value), as `dvc exp run -S` reads it."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in parts):
        raise ParamsError(f"-S {text!r}: expected section.key=value (e.g. -S tune.n_trials=10)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ParamsError(f"-S {text!r}: the value is not valid YAML ({exc})") from None
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.2 (what dvc reads) takes 3e-4 as a number; PyYAML's 1.1 does not
    return parts, value


def apply_overrides(
    params: Mapping[str, Any], overrides: Sequence[str], known_sections: Iterable[str]
) -> dict[str, Any]:
    """A deep copy of `params` with each `section.key=value` set; an unknown section or a path through a
    value that is not a mapping is an error naming the key (unknown keys are caught by validation)."""
    out = copy.deepcopy(dict(params))
    known = set(known_sections) | set(out)
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in known:
            raise ParamsError(
                f"-S {text}: unknown section '{parts[0]}' in key '{'.'.join(parts)}' "
                f"(known sections: {', '.join(sorted(known))})"
            )
        node: dict[str, Any] = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ParamsError(
                    f"-S {text}: cannot set '{'.'.join(parts)}': '{'.'.join(parts[: i + 1])}' is a "
                    f"value ({child!r}), not a section"
                )
            node = child
        node[parts[-1]] = value
    return out


def workspace_params(
    base: Mapping[str, Any],
    own_corpus: bool,
    overrides: Sequence[str],
    mlflow: bool,
    known_sections: Iterable[str],
    project_root: Path | None = None,
    train_questions: bool = False,
) -> dict[str, Any]:
    """The params.yaml of one workspace: the project's params, the copied corpus as a jsonl source (unless
    it is the project-default workspace) with its real training questions when the folder has
    train_questions.jsonl, MLflow off unless asked for, then the user's overrides."""
    settings: list[str] = []
    if own_corpus:
        settings += [
            "fetch.source=jsonl",
            "fetch.jsonl.corpus=corpus/corpus.jsonl",
            "fetch.jsonl.test=corpus/test.jsonl",
        ]
        if train_questions:
            settings.append(f"fetch.jsonl.train_questions=corpus/{TRAIN_QUESTIONS}")
    if not mlflow:
        settings.append("mlflow.enabled=false")
    params = apply_overrides(base, settings, known_sections)
    if mlflow and project_root is not None:
        params = _project_tracking_uri(params, project_root)
    return apply_overrides(params, overrides, known_sections)


def _project_tracking_uri(params: dict[str, Any], project_root: Path) -> dict[str, Any]:
    """A relative sqlite tracking URI would make one MLflow store per workspace: point it at the project's."""
    section = params.get("mlflow") or {}
    uri = section.get("tracking_uri", "sqlite:///mlflow.db")
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        params = {**params, "mlflow": {**section, "tracking_uri": f"sqlite:///{project_root / uri[10:]}"}}
    return params


def dump_params(params: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(params), sort_keys=False, allow_unicode=True, default_flow_style=False)


def validate_params(params: Mapping[str, Any], label: str) -> dict[str, Any]:
    """Validate every section as a stage would (ragtune.params.validate_params_file); errors name the key."""
    from ..params import validate_params_file

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(dump_params(params), encoding="utf-8")
        try:
            return validate_params_file(path)
        except ParamsError as exc:
            raise ParamsError(str(exc).replace(str(path), label)) from None


def shared_params_hash(sections: Mapping[str, Any]) -> str:
    """One hash for the params every corpus shares: all sections but fetch (per corpus) and mlflow."""
    from ..params import params_hash

    return params_hash(*(sections[name] for name in sorted(sections) if name not in ("fetch", "mlflow")))


@dataclass(frozen=True)
class Workspace:
    """One corpus of the benchmark: its name, its source folder (None: the project's own params), the
    scratch folder it runs in and the params.yaml text written there."""

    name: str
    source_dir: Path | None
    path: Path
    params_text: str
    params_hash: str


@dataclass(frozen=True)
class BenchPlan:
    root: Path
    out: Path
    workspaces: list[Workspace]
    overrides: list[str]
    params_hash: str


def check_corpus_dir(path: Path) -> tuple[int, int]:
    """Both files exist and every row keeps its contract (errors name file:line); returns (chunks, questions)."""
    from ..records import load_corpus, load_test

    if not path.is_dir():
        raise RagtuneError(f"{path}: not a folder; each DIR must hold corpus.jsonl and test.jsonl")
    missing = [name for name in ("corpus.jsonl", "test.jsonl") if not (path / name).is_file()]
    if missing:
        raise RagtuneError(
            f"{path}: {' and '.join(missing)} not found; each DIR must hold corpus.jsonl and "
            "test.jsonl (the corpus and test contracts in the README)"
        )
    chunks = load_corpus(path / "corpus.jsonl")
    questions = load_test(path / "test.jsonl", corpus_ids=[c.id for c in chunks])
    if not questions:
        raise RagtuneError(f"{path / 'test.jsonl'}: no test questions")
    if (path / TRAIN_QUESTIONS).is_file():
        from ..records import load_train_questions

        load_train_questions(path / TRAIN_QUESTIONS, questions, [c.id for c in chunks], str(path / "test.jsonl"))
    return len(chunks), len(questions)


def corpus_names(dirs: Sequence[Path], default: bool) -> list[str]:
    """Workspace names (folder names, then `default`); they must be distinct and safe as folder names."""
    names = [Path(os.path.abspath(d)).name for d in dirs] + ([DEFAULT_NAME] if default else [])
    if not names:
        raise RagtuneError(
            "nothing to run: give at least one DIR (a folder with corpus.jsonl and test.jsonl) or --default"
        )
    for d, name in zip(dirs, names):
        if not _NAME_OK.match(name):
            raise RagtuneError(
                f"{d}: the folder name '{name}' cannot name a workspace; use letters, digits, '.', '_' or '-'"
            )
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise RagtuneError(
            f"two corpora would share the workspace name '{seen[0]}' (the folder name"
            f"{'; `default` is taken by --default' if seen[0] == DEFAULT_NAME else ''}); "
            "rename a folder"
        )
    return names


def plan_bench(
    root: Path, dirs: Sequence[Path], default: bool, out: Path, overrides: Sequence[str], mlflow: bool = False
) -> BenchPlan:
    """Check the project, every DIR and every workspace's params; nothing is written."""
    from ..params import SECTIONS, read_params_file

    root = root.resolve()
    for name in ("dvc.yaml", "params.yaml", *LINKED):
        if not (root / name).exists():
            raise RagtuneError(f"{root / name}: not found; run `ragtune bench` from the project root")
    out = out if out.is_absolute() else root / out
    names = corpus_names(dirs, default)
    for d in dirs:
        check_corpus_dir(d)
    base = read_params_file(root / "params.yaml")
    workspaces, hashes = [], set()
    sources: list[Path | None] = [d.resolve() for d in dirs] + ([None] if default else [])
    for name, src in zip(names, sources):
        params = workspace_params(
            base,
            src is not None,
            overrides,
            mlflow,
            SECTIONS,
            root,
            train_questions=src is not None and (src / TRAIN_QUESTIONS).is_file(),
        )
        sections = validate_params(params, f"params.yaml with -S overrides (workspace {name})")
        digest = shared_params_hash(sections)
        hashes.add(digest)
        workspaces.append(Workspace(name, src, out / "work" / name, dump_params(params), digest))
    return BenchPlan(root, out, workspaces, list(overrides), hashes.pop() if len(hashes) == 1 else "mixed")


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    from ..io import atomic_open

    with atomic_open(path) as fh:
        fh.write(text)
    return True


def _copy_if_changed(src: Path, dest: Path) -> bool:
    """Copy only when the content differs: an unchanged file keeps its timestamp and DVC skips its stage."""
    if dest.is_file() and not dest.is_symlink() and filecmp.cmp(src, dest, shallow=False):
        return False
    from ..io import atomic_path

    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return True


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise RagtuneError(f"{link}: expected a symlink to {target}; remove the folder and rerun")
    link.symlink_to(target, target_is_directory=True)


def prepare_workspace(ws: Workspace, root: Path, dvc: Path, env: Mapping[str, str]) -> None:
    """Create or refresh a workspace; files are rewritten only when their content changed."""
    ws.path.mkdir(parents=True, exist_ok=True)
    if not (ws.path / ".dvc").is_dir():
        _run_checked([str(dvc), "init", "--no-scm", "-q"], ws.path, env, f"{ws.name}: dvc init")
    _write_if_changed(ws.path / ".dvc" / "config", DVC_CONFIG)
    _copy_if_changed(root / "dvc.yaml", ws.path / "dvc.yaml")
    _write_if_changed(ws.path / "params.yaml", ws.params_text)
    for name in LINKED:
        _link(ws.path / name, root / name)
    corpus = ws.path / "corpus"
    if ws.source_dir is None:
        _link(corpus, root / "corpus")  # the project's own corpus folder, whatever its params read
    else:
        if corpus.is_symlink():
            corpus.unlink()
        corpus.mkdir(exist_ok=True)
        for name in ("corpus.jsonl", "test.jsonl", TRAIN_QUESTIONS):
            if (ws.source_dir / name).is_file():
                _copy_if_changed(ws.source_dir / name, corpus / name)
            elif (corpus / name).exists():
                (corpus / name).unlink()


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["RAGTUNE_PYTHON"] = sys.executable  # the stage launcher runs the stages with this interpreter
    return env


def _run_checked(cmd: list[str], cwd: Path, env: Mapping[str, str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=dict(env), capture_output=True, text=True)
    except OSError as exc:
        raise RagtuneError(f"{what}: could not run {cmd[0]} ({exc}); reinstall the venv (make venv)") from None
    if proc.returncode != 0:
        raise RagtuneError(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


@dataclass
class RunRecord:
    """How one workspace's `dvc repro` went: wall seconds and the stages it ran (none: all up to date),
    and the last run that ran any stage (kept in the workspace, so an up-to-date rerun still shows it)."""

    wall_s: float
    stages_run: list[str]
    last_run: dict[str, Any] = field(default_factory=dict)


def stages_run(output: str) -> list[str]:
    """The stages dvc says it ran, in order."""
    return list(dict.fromkeys(_RUNNING.findall(output)))


def run_workspace(ws: Workspace, dvc: Path, env: Mapping[str, str], echo: Echo) -> RunRecord:
    """`dvc repro eval` in the workspace, its output echoed line by line; a failure names the corpus and
    shows the tail of dvc's output."""
    from ..io import read_json, write_json

    cmd = [str(dvc), "repro", *TARGET_STAGES]
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd, cwd=ws.path, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as exc:
        raise RagtuneError(f"{ws.name}: could not run {dvc} ({exc}); reinstall the venv (make venv)") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        lines.append(line)
        echo(f"[{ws.name}] {line}")
    rc = proc.wait()
    wall = round(time.perf_counter() - start, 1)
    if rc != 0:
        raise RagtuneError(
            f"corpus '{ws.name}': `dvc repro {' '.join(TARGET_STAGES)}` failed in {ws.path} (exit {rc}); "
            f"the last lines of its output:\n" + "\n".join(tail)
        )
    ran = stages_run("\n".join(lines))
    record_path = ws.path / RUN_RECORD
    if ran:
        last = {"wall_s": wall, "stages_run": ran}
        write_json(record_path, last)
    else:
        last = read_json(record_path) if record_path.is_file() else {}
    return RunRecord(wall, ran, last)
