"""`ragtune init`: a user's own DVC project that runs the installed ragtune on their corpus.

    ragtune init DIR --corpus corpus.jsonl [--test test.jsonl] [--train-questions labels.jsonl] [-S key=value]
    ragtune init --here        record this machine's Python in a cloned project (.ragtune/python)
    ragtune init --upgrade     rewrite a project's stage definitions for the installed ragtune

A project holds: corpus/ (the user's files, tracked by DVC), params.yaml (ragtune's defaults with the comments,
`fetch.source: jsonl` on corpus/), dvc.yaml (the stage definitions of `ragtune.project.pipeline`), .ragtune/
(the stage launcher, the ragtune version the definitions belong to, and this machine's Python, git-ignored),
.gitignore and a short README. Git and DVC are initialised and the first commit made, so `dvc repro` and
`dvc exp run -S ...` work at once, from any shell, without activating a virtualenv.

Upgrading: every stage depends on .ragtune/ragtune.json, so `ragtune init --upgrade` (which rewrites it, dvc.yaml
and the launcher, and adds params that the new version has and the project lacks) makes the next `dvc repro`
rerun the pipeline with the new code. A stage run by another ragtune than the project's stops with that advice.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from ..errors import RagtuneError
from .pipeline import DEFINITIONS_VERSION, LAUNCHER, PROJECT_FILE, render

PYTHON_FILE = ".ragtune/python"
CORPUS_DIR = "corpus"
FILES = {"corpus": "corpus.jsonl", "test": "test.jsonl", "train_questions": "train_questions.jsonl"}
GITIGNORE = """# A stage run's own facts (seconds, MLflow run ids, cache hits): not outputs of the inputs
/data/*/run.json
# MLflow's local store (`ragtune ui` opens it)
/mlflow.db
/mlruns/
/mlartifacts/
# the Python that has ragtune on this machine (`ragtune init --here` records it)
/.ragtune/python
"""


def ragtune_version() -> str:
    try:
        return metadata.version("ragtune")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def project_record() -> dict[str, Any]:
    return {"ragtune": ragtune_version(), "definitions": DEFINITIONS_VERSION}


def check_project_version(root: Path = Path(".")) -> None:
    """In a `ragtune init` project (one with .ragtune/ragtune.json), refuse to run a stage with another ragtune
    than the one its definitions and outputs belong to. A source checkout has no such file: its dvc.yaml lists
    the code itself."""
    path = root / PROJECT_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RagtuneError(f"{path}: unreadable ({exc}); rerun `ragtune init --upgrade` in the project") from None
    current = project_record()
    if recorded != current:
        raise RagtuneError(
            f"{path}: this project's stages were defined by ragtune {recorded.get('ragtune')} (definitions "
            f"v{recorded.get('definitions')}), but ragtune {current['ragtune']} (v{current['definitions']}) is "
            "running them. Run `ragtune init --upgrade` in the project (it rewrites dvc.yaml and .ragtune/, and "
            "the next `dvc repro` reruns every stage with this version), or install the project's version."
        )


def default_params_text() -> str:
    return (resources.files("ragtune.project") / "params.yaml").read_text(encoding="utf-8")


def project_params_text(files: dict[str, str], experiment: str) -> str:
    """ragtune's default params.yaml, comments kept, set to read the project's corpus/ files, written the way
    `dvc exp run -S` rewrites the file (so a later -S changes one line, not the layout)."""
    from dvc.utils.serialize import dumps_yaml, parse_yaml_for_update

    data = parse_yaml_for_update(default_params_text(), "params.yaml")
    data["fetch"]["source"] = "jsonl"
    for key in FILES:
        data["fetch"]["jsonl"][key] = files.get(key)
    data["mlflow"]["experiment"] = experiment
    return dumps_yaml(data)


def readme_text(name: str) -> str:
    return f"""# {name}

A [ragtune](https://pypi.org/project/ragtune/) project: retrieval for a RAG system over the corpus in
`corpus/`, measured and improved by a query-side adapter.

```bash
ragtune estimate              # tokens and USD the LLM stages would cost, before any call
dvc repro                     # the pipeline: check, fetch, synthesize, embed, tune, train, eval, curve, judge
dvc exp run -S synthesize.questions_per_chunk=2   # an experiment with one param changed
ragtune exps                  # the experiments' headline numbers and recommended retriever
ragtune label                 # label real questions (then `dvc repro` trains and selects on them)
ragtune ui                    # MLflow, on this project's runs
```

Results: `data/eval/report.json` (every arm with intervals; `recommendation`: which retriever to deploy) and
`data/eval/metrics.json`. To deploy: `models/adapter/sentence_transformer` (the query encoder) and
`models/hybrid` (BM25 fused with it). Params: `params.yaml` (ragtune's defaults, commented).

Stages run through `.ragtune/stage`, with the Python recorded in `.ragtune/python` (per machine, not committed).
After cloning on another machine: `<python that has ragtune> -m ragtune init --here`.
"""


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RagtuneError(f"ragtune init: {what} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")


def _dvc() -> list[str]:
    return [sys.executable, "-m", "dvc"]


def _check_inputs(corpus: Path, test: Path | None, train_questions: Path | None) -> None:
    """The files in the data contracts, or an error naming file:line, before anything is written."""
    from ..records import load_corpus, load_test, load_train_questions

    for path, option in ((corpus, "--corpus"), (test, "--test"), (train_questions, "--train-questions")):
        if path is not None and not path.is_file():
            raise RagtuneError(f"{option} {path}: not found")
    chunks = load_corpus(corpus)
    ids = [c.id for c in chunks]
    tests = load_test(test, corpus_ids=ids) if test else []
    if train_questions:
        load_train_questions(train_questions, tests, corpus_ids=ids)


def write_project_files(root: Path) -> None:
    """dvc.yaml, the launcher and the version record: what `init` writes and `--upgrade` rewrites."""
    (root / ".ragtune").mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text(render(), encoding="utf-8")
    launcher = (resources.files("ragtune.project") / "launcher.sh").read_text(encoding="utf-8")
    (root / LAUNCHER).write_text(launcher, encoding="utf-8")
    (root / PROJECT_FILE).write_text(json.dumps(project_record(), indent=2) + "\n", encoding="utf-8")


def record_python(root: Path) -> Path:
    """.ragtune/python: this interpreter, which has ragtune (the launcher runs the stages with it)."""
    path = root / PYTHON_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sys.executable + "\n", encoding="utf-8")
    return path


def _commit(root: Path, message: str) -> None:
    identity = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True)
    who = [] if identity.stdout.strip() else ["-c", "user.name=ragtune init", "-c", "user.email=ragtune@localhost"]
    _run(["git", "add", "-A"], root, "git add")
    _run(["git", *who, "commit", "-q", "-m", message], root, "git commit")


def init_project(
    target: Path,
    corpus: Path,
    test: Path | None = None,
    train_questions: Path | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Create the project at `target` (absent or empty). Returns its path."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RagtuneError(f"{target}: exists and is not empty; choose a new folder (or `--upgrade` a project)")
    _check_inputs(corpus, test, train_questions)
    target.mkdir(parents=True, exist_ok=True)
    try:
        files: dict[str, str] = {}
        for key, path in (("corpus", corpus), ("test", test), ("train_questions", train_questions)):
            if path is not None:
                dest = target / CORPUS_DIR / FILES[key]
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
                files[key] = f"{CORPUS_DIR}/{FILES[key]}"
        (target / "params.yaml").write_text(project_params_text(files, target.resolve().name), encoding="utf-8")
        if overrides:
            _apply_overrides(target / "params.yaml", overrides)
        write_project_files(target)
        (target / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
        (target / "README.md").write_text(readme_text(target.resolve().name), encoding="utf-8")
        record_python(target)
        from ..params import validate_params_file

        validate_params_file(target / "params.yaml")  # a bad -S stops here; the check stage checks files too
        _run(["git", "init", "-q"], target, "git init")
        _run([*_dvc(), "init", "-q"], target, "dvc init")
        _run([*_dvc(), "config", "core.analytics", "false"], target, "dvc config")
        _run([*_dvc(), "add", "-q", CORPUS_DIR], target, "dvc add corpus")
        _commit(target, "ragtune init")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-made project
        raise
    return target


def _apply_overrides(path: Path, overrides: list[str]) -> None:
    """`-S key=value` as `dvc exp run -S` applies it (Hydra override grammar)."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    try:
        apply_overrides(path, list(overrides))
    except DvcException as exc:
        cause = exc.__cause__ or exc
        raise RagtuneError(f"-S {' '.join(overrides)}: {str(cause).splitlines()[0]}") from None


def upgrade_project(root: Path) -> list[str]:
    """Rewrite dvc.yaml, the launcher and the version record for the installed ragtune; add the params its
    defaults have and the project's params.yaml lacks (the project's values stay). Returns what changed."""
    from dvc.utils.serialize import dumps_yaml, parse_yaml_for_update

    if not (root / "dvc.yaml").is_file() or not (root / PROJECT_FILE).parent.is_dir():
        raise RagtuneError(f"{root}: not a ragtune project (no dvc.yaml and .ragtune/); create one with ragtune init")
    before = {
        p: (root / p).read_text(encoding="utf-8") if (root / p).is_file() else None
        for p in ("dvc.yaml", LAUNCHER, PROJECT_FILE, "params.yaml")
    }
    write_project_files(root)
    params = parse_yaml_for_update((root / "params.yaml").read_text(encoding="utf-8"), "params.yaml")
    _add_missing(params, parse_yaml_for_update(default_params_text(), "params.yaml"))
    (root / "params.yaml").write_text(dumps_yaml(params), encoding="utf-8")
    return [p for p, text in before.items() if (root / p).read_text(encoding="utf-8") != text]


def _add_missing(ours: Any, defaults: Any) -> None:
    for key, value in defaults.items():
        if key not in ours:
            ours[key] = value
        elif isinstance(value, dict) and isinstance(ours[key], dict):
            _add_missing(ours[key], value)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "init",
        help="create your own ragtune project (git + DVC) for a corpus",
        description="Create DIR as a DVC project that runs the installed ragtune on your corpus: corpus/ (your "
        "files, tracked by DVC), params.yaml (ragtune's defaults), dvc.yaml, .ragtune/ (launcher, version, this "
        "machine's Python), git and DVC initialised and committed. Then, in DIR: `ragtune estimate`, `dvc repro`, "
        "`dvc exp run -S key=value`, `ragtune exps`. With --here or --upgrade, DIR (default: .) is an existing "
        "project.",
    )
    p.add_argument("dir", type=Path, nargs="?", help="the project folder to create (absent or empty)")
    p.add_argument("--corpus", type=Path, help="your corpus.jsonl ({id, text, title?, source?} a line)")
    p.add_argument("--test", type=Path, help="test questions ({id, question, relevant_ids} a line); optional")
    p.add_argument("--train-questions", type=Path, help="labelled real training questions (the test contract)")
    p.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a param in the new params.yaml, as `dvc exp run -S` does; repeatable",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--here", action="store_true", help="record this Python in an existing project (a clone)")
    mode.add_argument("--upgrade", action="store_true", help="rewrite the project's definitions for this ragtune")


def run_from_args(args) -> int:
    if args.here or args.upgrade:
        root = args.dir or Path(".")
        if not (root / "dvc.yaml").is_file():
            raise RagtuneError(f"{root}: no dvc.yaml here; run this in a ragtune project (or `ragtune init DIR`)")
        if args.here:
            print(f"{record_python(root)}: stages will run with {sys.executable}")
            return 0
        changed = upgrade_project(root)
        print(
            f"{root}: rewritten for ragtune {ragtune_version()}: {', '.join(changed) or 'nothing changed'}. "
            "Commit, then `dvc repro` reruns every stage with this version."
        )
        return 0
    if args.dir is None or args.corpus is None:
        raise RagtuneError("ragtune init DIR --corpus FILE: give the project folder and your corpus.jsonl")
    root = init_project(args.dir, args.corpus, args.test, args.train_questions, args.overrides)
    print(
        f"{root}: a ragtune project (git and DVC, first commit made). Next:\n"
        f"  cd {root}\n  ragtune estimate      # what the LLM stages would cost\n"
        "  dvc repro             # the pipeline; results in data/eval/report.json\n"
        "  dvc exp run -S synthesize.questions_per_chunk=2   # an experiment\n  ragtune exps"
    )
    return 0
