"""The cross-corpus benchmark: the pipeline (fetch → eval) on several corpora, one table.

    ragtune bench DIR [DIR ...] [--default] [--out data/transfer] [-S key=value ...] [--mlflow]

Each DIR holds `corpus.jsonl` and `test.jsonl` (the documented contracts), and optionally
`train_questions.jsonl` (labelled real training questions, `fetch.jsonl.train_questions`). Every corpus gets its own scratch
workspace `<out>/work/<name>/`: a copy of dvc.yaml, a params.yaml made from the project's (with
`fetch.source=jsonl` on the copied files and the -S overrides), `corpus/` with the copied files, and symlinks
to the project's `stages/` and `src/` so that dvc.yaml's dependencies resolve. `dvc repro eval` runs there,
so the corpus is measured exactly as a user running the pipeline would measure it; workspaces are kept, so a
rerun reuses DVC's results and the persistent LLM/embedding caches. `--default` adds a workspace `default`
with the project's params as they are (its default source).

Then one table of the test-set results per corpus and arm (Hit@main_k, MRR, nDCG with their intervals, the
paired tests against raw cosine, the wall time) goes to `<out>/results.json`, `results.md` and
`results.png` (+ `results_mrr.png`). Rendering is pure (`corpus_row`, `render_markdown`); I/O is at the edges.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from .errors import ParamsError, RagtuneError
from .labels import metric_label

DEFAULT_OUT = Path("data/transfer")
DEFAULT_NAME = "default"
TARGET_STAGES = ("eval", "curve")  # the judge stage is not part of the benchmark
METRICS = Path("data/eval/metrics.json")
CURVE = Path("data/curve/metrics.json")
FETCH_REPORT = Path("data/fetch/report.json")
RUN_RECORD = "bench_run.json"  # in each workspace: the wall time of the last run that ran any stage
TRAIN_QUESTIONS = "train_questions.jsonl"  # optional in a DIR: labelled real questions to train on
LINKED = ("stages", "src")  # project folders the workspace links to (dvc.yaml's code deps)
DVC_CONFIG = "[core]\n    no_scm = True\n    analytics = false\n"
TAIL_LINES = 40
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RUNNING = re.compile(r"Running stage '([^']+)'")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

Echo = Callable[[str], None]


# --- -S overrides (pure) --------------------------------------------------------------------------

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


def apply_overrides(params: Mapping[str, Any], overrides: Sequence[str],
                    known_sections: Iterable[str]) -> dict[str, Any]:
    """A deep copy of `params` with each `section.key=value` set; an unknown section or a path through a
    value that is not a mapping is an error naming the key (unknown keys are caught by validation)."""
    out = copy.deepcopy(dict(params))
    known = set(known_sections) | set(out)
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in known:
            raise ParamsError(f"-S {text}: unknown section '{parts[0]}' in key '{'.'.join(parts)}' "
                              f"(known sections: {', '.join(sorted(known))})")
        node: dict[str, Any] = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ParamsError(f"-S {text}: cannot set '{'.'.join(parts)}': '{'.'.join(parts[:i + 1])}' is a "
                                  f"value ({child!r}), not a section")
            node = child
        node[parts[-1]] = value
    return out


def workspace_params(base: Mapping[str, Any], own_corpus: bool, overrides: Sequence[str], mlflow: bool,
                     known_sections: Iterable[str], project_root: Path | None = None,
                     train_questions: bool = False) -> dict[str, Any]:
    """The params.yaml of one workspace: the project's params, the copied corpus as a jsonl source (unless
    it is the project-default workspace) with its real training questions when the folder has
    train_questions.jsonl, MLflow off unless asked for, then the user's overrides."""
    settings: list[str] = []
    if own_corpus:
        settings += ["fetch.source=jsonl", "fetch.jsonl.corpus=corpus/corpus.jsonl",
                     "fetch.jsonl.test=corpus/test.jsonl"]
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
    from .params import validate_params_file

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(dump_params(params), encoding="utf-8")
        try:
            return validate_params_file(path)
        except ParamsError as exc:
            raise ParamsError(str(exc).replace(str(path), label)) from None


def shared_params_hash(sections: Mapping[str, Any]) -> str:
    """One hash for the params every corpus shares: all sections but fetch (per corpus) and mlflow."""
    from .params import params_hash

    return params_hash(*(sections[name] for name in sorted(sections) if name not in ("fetch", "mlflow")))


# --- planning: everything checked before any work -------------------------------------------------

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
    from .records import load_corpus, load_test

    if not path.is_dir():
        raise RagtuneError(f"{path}: not a folder; each DIR must hold corpus.jsonl and test.jsonl")
    missing = [name for name in ("corpus.jsonl", "test.jsonl") if not (path / name).is_file()]
    if missing:
        raise RagtuneError(f"{path}: {' and '.join(missing)} not found; each DIR must hold corpus.jsonl and "
                           "test.jsonl (the corpus and test contracts in the README)")
    chunks = load_corpus(path / "corpus.jsonl")
    questions = load_test(path / "test.jsonl", corpus_ids=[c.id for c in chunks])
    if not questions:
        raise RagtuneError(f"{path / 'test.jsonl'}: no test questions")
    if (path / TRAIN_QUESTIONS).is_file():
        from .records import load_train_questions
        load_train_questions(path / TRAIN_QUESTIONS, questions, [c.id for c in chunks], str(path / "test.jsonl"))
    return len(chunks), len(questions)


def corpus_names(dirs: Sequence[Path], default: bool) -> list[str]:
    """Workspace names (folder names, then `default`); they must be distinct and safe as folder names."""
    names = [Path(os.path.abspath(d)).name for d in dirs] + ([DEFAULT_NAME] if default else [])
    if not names:
        raise RagtuneError("nothing to run: give at least one DIR (a folder with corpus.jsonl and test.jsonl) "
                           "or --default")
    for d, name in zip(dirs, names):
        if not _NAME_OK.match(name):
            raise RagtuneError(f"{d}: the folder name '{name}' cannot name a workspace; use letters, digits, "
                               "'.', '_' or '-'")
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise RagtuneError(f"two corpora would share the workspace name '{seen[0]}' (the folder name"
                           f"{'; `default` is taken by --default' if seen[0] == DEFAULT_NAME else ''}); "
                           "rename a folder")
    return names


def plan_bench(root: Path, dirs: Sequence[Path], default: bool, out: Path, overrides: Sequence[str],
               mlflow: bool = False) -> BenchPlan:
    """Check the project, every DIR and every workspace's params; nothing is written."""
    from .params import SECTIONS, read_params_file

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
        params = workspace_params(base, src is not None, overrides, mlflow, SECTIONS, root,
                                  train_questions=src is not None and (src / TRAIN_QUESTIONS).is_file())
        sections = validate_params(params, f"params.yaml with -S overrides (workspace {name})")
        digest = shared_params_hash(sections)
        hashes.add(digest)
        workspaces.append(Workspace(name, src, out / "work" / name, dump_params(params), digest))
    return BenchPlan(root, out, workspaces, list(overrides), hashes.pop() if len(hashes) == 1 else "mixed")


# --- workspaces and runs (I/O) --------------------------------------------------------------------

def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    from .io import atomic_open

    with atomic_open(path) as fh:
        fh.write(text)
    return True


def _copy_if_changed(src: Path, dest: Path) -> bool:
    """Copy only when the content differs: an unchanged file keeps its timestamp and DVC skips its stage."""
    if dest.is_file() and not dest.is_symlink() and filecmp.cmp(src, dest, shallow=False):
        return False
    from .io import atomic_path

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
    from .io import read_json, write_json

    cmd = [str(dvc), "repro", *TARGET_STAGES]
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, cwd=ws.path, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
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
        raise RagtuneError(f"corpus '{ws.name}': `dvc repro {' '.join(TARGET_STAGES)}` failed in {ws.path} (exit {rc}); "
                           f"the last lines of its output:\n" + "\n".join(tail))
    ran = stages_run("\n".join(lines))
    record_path = ws.path / RUN_RECORD
    if ran:
        last = {"wall_s": wall, "stages_run": ran}
        write_json(record_path, last)
    else:
        last = read_json(record_path) if record_path.is_file() else {}
    return RunRecord(wall, ran, last)


# --- the table (pure) -----------------------------------------------------------------------------

def arm_order(name: str) -> tuple[int, str]:
    from .evaluation import _arm_order

    return _arm_order(name)


def metric_keys(metrics: Mapping[str, Any]) -> list[str]:
    """The headline metrics of a metrics.json: Hit@main_k, then the MRR and nDCG cut-offs it holds."""
    arms = metrics.get("test", {}).get("arms", {})
    present = {m for a in arms.values() for m in a if m != "ci"}
    main_k = metrics.get("setup", {}).get("main_k")
    hit = f"hit@{main_k}" if f"hit@{main_k}" in present else next(
        iter(sorted((m for m in present if m.startswith("hit@")), key=_k_of)), None)
    out = [hit] if hit else []
    for kind in ("mrr@", "ndcg@"):
        out += sorted((m for m in present if m.startswith(kind)), key=_k_of)
    return out


def _k_of(metric: str) -> int:
    k = metric.partition("@")[2]
    return int(k) if k.isdigit() else 0


def _seed_ranges(seeds: Any) -> dict[str, Any] | None:
    """{"hit@5": [per-seed values], ..., "seeds": [...]} -> {"seeds": [...], "hit@5": [min, max], ...}."""
    if not isinstance(seeds, Mapping):
        return None
    out: dict[str, Any] = {}
    for key, values in seeds.items():
        if key == "seeds":
            out["seeds"] = list(values) if isinstance(values, (list, tuple)) else values
        elif isinstance(values, (list, tuple)) and values and all(isinstance(v, (int, float)) for v in values):
            out[key] = [min(values), max(values)]
    return out if any(k != "seeds" for k in out) else None


def corpus_row(name: str, metrics: Mapping[str, Any], report: Mapping[str, Any] | None = None,
               run: RunRecord | None = None, source_dir: str | None = None,
               curve: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One corpus's row of the results table from its eval metrics.json (and fetch report.json, and the
    curve stage's metrics.json when it has real training questions)."""
    setup = metrics.get("setup", {})
    # Cut into passages (fetch.passages): the document-level block is the one comparable with whole texts.
    level = "documents" if isinstance(metrics.get("test_documents"), Mapping) else "chunks"
    test = metrics.get("test_documents") if level == "documents" else metrics.get("test")
    if not isinstance(test, Mapping) or not test.get("arms"):
        raise RagtuneError(f"corpus '{name}': data/eval/metrics.json has no test results; rerun the benchmark")
    report = report or {}
    keys = metric_keys(metrics)
    arms = {}
    for arm in sorted(test["arms"], key=arm_order):
        values = test["arms"][arm]
        arms[arm] = {m: {"value": values[m], "ci": list(values.get("ci", {}).get(m, []))} for m in keys
                     if m in values}
    vs_cosine = {}
    for arm in arms:
        cmp = test.get(f"{arm}_vs_cosine")
        if arm == "cosine" or not isinstance(cmp, Mapping):
            continue
        entry: dict[str, Any] = {}
        for m in keys:
            c = cmp.get(m)
            if isinstance(c, Mapping):
                entry[m] = {k: c[k] for k in ("diff", "gained", "lost", "improved", "worsened", "ci", "p", "p_holm")
                            if k in c}
        entry["significant"] = bool(cmp.get("significant", False))
        vs_cosine[arm] = entry
    row: dict[str, Any] = {
        "name": name, "source": report.get("source", setup.get("source", "unknown")),
        "chunks": report.get("chunks", setup.get("corpus_chunks")),
        "test_questions": test.get("questions"), "human": test.get("human"), "synthetic": test.get("synthetic"),
        "origin": test.get("origin"), "embedding_model": setup.get("embedding_model"),
        "metrics": keys, "arms": arms, "vs_cosine": vs_cosine,
    }
    if source_dir is not None:
        row["dir"] = source_dir
    if setup.get("protocol") is not None:
        row["protocol"] = setup["protocol"]
    seeds = _seed_ranges(test.get("adapter_seeds"))
    if seeds is not None:
        row["adapter_seeds"] = seeds
    if setup.get("validation") is not None:
        row["validation"] = setup["validation"]
    if level == "documents":
        row["level"] = "documents ranked by their best passage"
        row["passages"] = setup.get("passages")
    if report.get("train_questions"):
        row["train_questions"] = report["train_questions"]
    if curve and curve.get("real_questions"):
        row["curve"] = list(curve.get("points", []))
    if run is not None:
        row["wall_s"] = run.wall_s
        row["stages_run"] = run.stages_run
        if run.last_run:
            row["last_run"] = run.last_run
    return row


def build_results(rows: Sequence[Mapping[str, Any]], *, command: str, overrides: Sequence[str], params_hash: str,
                  main_k: Any = None, confidence: Any = None) -> dict[str, Any]:
    return {"command": command, "overrides": list(overrides), "params_hash": params_hash,
            "params_hash_of": "every params.yaml section but fetch and mlflow", "stages": list(TARGET_STAGES),
            "main_k": main_k, "confidence": confidence, "corpora": list(rows)}


def _pct(metric: str) -> bool:
    return metric.startswith(("hit@", "recall@"))


def _num(metric: str, value: float) -> str:
    return f"{value * 100:.1f}" if _pct(metric) else f"{value:.3f}"


def _p(p: float) -> str:
    return f"{p:.2g}"  # significant figures: 0.45, 0.0004, 2e-09


def _cell(row: Mapping[str, Any], arm: str, metric: str) -> str:
    entry = row["arms"].get(arm, {}).get(metric)
    if not entry:
        return "–"
    text = _num(metric, entry["value"])
    if len(entry.get("ci") or []) == 2:
        text += f" ({_num(metric, entry['ci'][0])}–{_num(metric, entry['ci'][1])})"
    cmp = row.get("vs_cosine", {}).get(arm, {}).get(metric)
    if cmp and "p" in cmp:
        text += f", p={_p(cmp['p'])}"
        if "gained" in cmp:
            text += f" (+{cmp['gained']}/−{cmp['lost']})"
    seeds = row.get("adapter_seeds") if arm == "adapter" else None
    if seeds and metric in seeds:
        lo, hi = seeds[metric]
        text += f"; seeds {_num(metric, lo)}–{_num(metric, hi)}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def _wall(row: Mapping[str, Any]) -> str:
    if "wall_s" not in row:
        return "–"
    text = _duration(row["wall_s"])
    if not row.get("stages_run"):
        last = row.get("last_run") or {}
        text += " (up to date" + (f"; last run {_duration(last['wall_s'])}" if "wall_s" in last else "") + ")"
    return text


def _questions(row: Mapping[str, Any]) -> str:
    n, human, synthetic = row.get("test_questions"), row.get("human") or 0, row.get("synthetic") or 0
    if human and synthetic:
        return f"{n} ({human} human, {synthetic} synthetic)"
    return f"{n} {'human' if human else 'synthetic' if synthetic else ''}".strip()


def render_markdown(results: Mapping[str, Any]) -> str:
    """The results as Markdown: a table of the corpora, one table per metric (rows: corpora, columns: arms),
    the paired tests against raw cosine in the cells, and the params and command used."""
    rows = results.get("corpora", [])
    arms = sorted({a for r in rows for a in r["arms"]}, key=arm_order)
    metrics: list[str] = []
    for r in rows:
        metrics += [m for m in r["metrics"] if m not in metrics]
    conf = results.get("confidence")
    conf_text = f"{float(conf):.0%}" if isinstance(conf, (int, float)) else "95%"
    protocol = any("protocol" in r for r in rows)
    lines = ["| corpus | source | chunks | test questions |" + (" protocol |" if protocol else "") + " wall time |",
             "|---|---|---:|---|" + ("---|" if protocol else "") + "---:|"]
    for r in rows:
        chunks = f"{r['chunks']:,}" if isinstance(r.get("chunks"), int) else str(r.get("chunks", "?"))
        lines.append(f"| {r['name']} | {r['source']} | {chunks} | {_questions(r)} |"
                     + (f" {r.get('protocol', '–')} |" if protocol else "") + f" {_wall(r)} |")
    for metric in metrics:
        unit = " (%)" if _pct(metric) else ""
        lines += ["", f"**{metric_label(metric)}{unit}** on the test questions", "",
                  "| corpus | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for r in rows:
            lines.append(f"| {r['name']} | " + " | ".join(_cell(r, a, metric) for a in arms) + " |")
    tested = sorted({m for r in rows for c in r.get("vs_cosine", {}).values() for m in c if m != "significant"},
                    key=metrics.index)
    notes = [f"{conf_text} bootstrap intervals in parentheses."]
    if tested:
        how = [f"exact McNemar on {metric_label(m)} with questions gained/lost" if m.startswith("hit@")
               else f"paired bootstrap on {metric_label(m)}" for m in tested]
        notes.append("p: paired test of the arm against raw cosine on the same questions (" + "; ".join(how)
                     + "), uncorrected.")
    if any("adapter_seeds" in r for r in rows):
        notes.append("seeds: the range of single-seed adapters' values.")
    split = [r for r in rows if r.get("level")]
    if split:
        notes.append(", ".join(f"`{r['name']}`" for r in split) + ": long texts cut into passages "
                     "(`fetch.passages`); its metrics count documents, each ranked by its best passage.")
    overrides = results.get("overrides") or []
    lines += render_curves(rows, conf_text)
    lines += ["", " ".join(notes), "",
              f"Params hash `{results.get('params_hash', '?')}` ({results.get('params_hash_of', 'params')}); "
              "overrides: " + (", ".join(f"`{o}`" for o in overrides) if overrides else "none")
              + f". Command: `{results.get('command', 'ragtune bench')}`."]
    return "\n".join(lines)


def _curve_keys(point: Mapping[str, Any]) -> tuple[str, str]:
    hit = next(k for k in point if k.startswith("adapter_hit@") and not k.endswith(("_low", "_high")))
    mrr = next(k for k in point if k.startswith("adapter_mrr@") and not k.endswith(("_low", "_high")))
    return hit.removeprefix("adapter_"), mrr.removeprefix("adapter_")


def render_curves(rows: Sequence[Mapping[str, Any]], conf_text: str = "95%") -> list[str]:
    """Markdown lines: one learning-curve table per corpus with real training questions (test scores
    against the number of them), beside raw cosine and BM25."""
    lines: list[str] = []
    for r in rows:
        points = r.get("curve") or []
        if not points:
            continue
        hit, mrr = _curve_keys(points[0])
        base = [a for a in ("cosine", "bm25") if f"{a}_{hit}" in points[0]]
        lines += ["", f"**Learning curve, {r['name']}**: test scores against the number of real training questions "
                      f"({conf_text} intervals; p: paired bootstrap on {metric_label(mrr)} against raw cosine)", "",
                  f"| real questions | adapter {metric_label(hit)} (%) | adapter {metric_label(mrr)} | p |"
                  + "".join(f" {a} {metric_label(hit)} | {a} {metric_label(mrr)} |" for a in base),
                  "|---:|---|---|---:|" + "---:|---:|" * len(base)]
        for p in points:
            lines.append(f"| {p['n_real']} | {100 * p[f'adapter_{hit}']:.1f} ({100 * p[f'adapter_{hit}_low']:.1f}–"
                         f"{100 * p[f'adapter_{hit}_high']:.1f}) | {p[f'adapter_{mrr}']:.3f} ({p[f'adapter_{mrr}_low']:.3f}–"
                         f"{p[f'adapter_{mrr}_high']:.3f}) | {_p(p[f'p_{mrr}_vs_cosine'])} |"
                         + "".join(f" {100 * p[f'{a}_{hit}']:.1f} | {p[f'{a}_{mrr}']:.3f} |" for a in base))
    return lines


def write_curve_chart(path: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
    """One panel per corpus with a curve: the adapter's test MRR (band: its interval) against the number of
    real training questions, raw cosine and BM25 as flat lines. False when no corpus has a curve."""
    from .plots import xy_panels

    with_curve = [r for r in rows if r.get("curve")]
    if not with_curve:
        return False
    _, mrr = _curve_keys(with_curve[0]["curve"][0])
    panels, bands = {}, {}
    for r in with_curve:
        pts = r["curve"]
        xs = [p["n_real"] for p in pts]
        title = f"{r['name']} ({r.get('test_questions')} test questions)"
        panels[title] = {arm: (xs, [p[f"{arm}_{mrr}"] for p in pts]) for arm in ("adapter", "cosine", "bm25")
                         if f"{arm}_{mrr}" in pts[0]}
        bands[title] = {"adapter": (xs, [p[f"adapter_{mrr}_low"] for p in pts], [p[f"adapter_{mrr}_high"] for p in pts])}
    xy_panels(path, panels, bands, xlabel="real training questions", ylabel=metric_label(mrr),
              title="Learning curve: test score against labelled real training questions")
    return True


# --- outputs (I/O) --------------------------------------------------------------------------------

def write_results(out: Path, results: Mapping[str, Any]) -> list[Path]:
    """results.json, results.md, results.png (Hit@main_k) and results_mrr.png (MRR), each atomically."""
    from .io import atomic_open, write_json
    from .plots import grouped_bar_chart

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md"]
    write_json(paths[0], results)
    with atomic_open(paths[1]) as fh:
        fh.write("# Cross-corpus benchmark\n\n" + render_markdown(results) + "\n")
    rows = results["corpora"]
    groups = [f"{r['name']}\n{_questions(r)}" for r in rows]
    arms = sorted({a for r in rows for a in r["arms"]}, key=arm_order)
    conf = results.get("confidence") or 0.95
    charts = [(out / "results.png", next((m for m in rows[0]["metrics"] if m.startswith("hit@")), None)),
              (out / "results_mrr.png", next((m for m in rows[0]["metrics"] if m.startswith("mrr@")), None))]
    for path, metric in charts:
        if metric is None:
            continue
        nan = float("nan")
        series = {a: [r["arms"].get(a, {}).get(metric, {}).get("value", nan) for r in rows] for a in arms}
        intervals = {a: [tuple(r["arms"].get(a, {}).get(metric, {}).get("ci") or (nan, nan)) for r in rows]
                     for a in arms}
        grouped_bar_chart(path, groups, series, intervals, percent=_pct(metric), ylabel=metric_label(metric),
                          title=f"{metric_label(metric)} on each corpus's test questions ({float(conf):.0%} intervals)")
        paths.append(path)
    if write_curve_chart(out / "results_curve.png", rows):
        paths.append(out / "results_curve.png")
    return paths


def collect_row(ws: Workspace, run: RunRecord | None) -> dict[str, Any]:
    from .io import read_json

    metrics_path = ws.path / METRICS
    if not metrics_path.is_file():
        raise RagtuneError(f"corpus '{ws.name}': {metrics_path} not found after dvc repro; rerun the benchmark")
    report_path = ws.path / FETCH_REPORT
    report = read_json(report_path) if report_path.is_file() else {}
    curve_path = ws.path / CURVE
    return corpus_row(ws.name, read_json(metrics_path), report, run,
                      str(ws.source_dir) if ws.source_dir is not None else None,
                      read_json(curve_path) if curve_path.is_file() else None)


def run_bench(plan: BenchPlan, command: str, echo: Echo = lambda line: print(line, file=sys.stderr)) -> list[Path]:
    """Prepare and run every workspace in turn, then write the results; returns the files written."""
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        raise RagtuneError(f"{dvc}: not found; the benchmark runs the venv's dvc (make venv)")
    env = dvc_env()
    rows = []
    for ws in plan.workspaces:
        echo(f"[{ws.name}] workspace {ws.path}")
        prepare_workspace(ws, plan.root, dvc, env)
        run = run_workspace(ws, dvc, env, echo)
        echo(f"[{ws.name}] {'ran ' + ', '.join(run.stages_run) if run.stages_run else 'up to date'} "
             f"in {run.wall_s:.1f} s")
        rows.append(collect_row(ws, run))
    first = _read_setup(plan.workspaces[0])
    results = build_results(rows, command=command, overrides=plan.overrides, params_hash=plan.params_hash,
                            main_k=first.get("main_k"), confidence=first.get("confidence"))
    return write_results(plan.out, results)


def _read_setup(ws: Workspace) -> dict[str, Any]:
    from .io import read_json

    setup = read_json(ws.path / METRICS).get("setup", {})
    return setup if isinstance(setup, dict) else {}
