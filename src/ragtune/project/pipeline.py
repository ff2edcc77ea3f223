"""The pipeline's stage definitions: the one source of dvc.yaml, for this repository and for `ragtune init`.

Each stage names its dependencies and outputs as layout fields (`ragtune.paths.PipelinePaths`, optionally a
file below a folder field), its params sections and its output options; its command passes it every path it
reads or writes (`--corpus data/fetch/corpus.jsonl ...`), as DVC's own examples do, through the launcher
`.ragtune/stage` (which finds the Python that has ragtune: no virtualenv to activate).

`render(code_deps=...)` writes dvc.yaml: with `code_deps` (a source checkout, this repository) each stage also
depends on the ragtune source files its module imports (`ragtune.project.code_deps`); without (a user's project,
ragtune installed) on `.ragtune/ragtune.json`, which names the ragtune version and the definitions' version,
so that an upgrade reruns the pipeline on the new code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..paths import PipelinePaths

# Bumped whenever a stage's command, dependencies or outputs change shape: a project made with other
# definitions is told to run `ragtune init --upgrade`.
DEFINITIONS_VERSION = 1
LAUNCHER = ".ragtune/stage"
PROJECT_FILE = ".ragtune/ragtune.json"


@dataclass(frozen=True)
class Path_:
    """A layout field, or a file below a folder field (`Path_("eval_dir", "report.json")`), with a comment."""

    field: str
    below: str | None = None
    comment: str | None = None

    def path(self, layout: PipelinePaths) -> str:
        base = getattr(layout, self.field)
        return str(base / self.below if self.below else base)


@dataclass(frozen=True)
class Out(Path_):
    """A stage output: `cache: false` for small plain files committed to git (reports, metrics, plots),
    `persist: true` for per-item caches a rerun adds to; `plot` options for a stage-level plot."""

    cache: bool = True
    persist: bool = False
    plot: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str  # a comment above the stage
    deps: tuple[Path_, ...] = ()
    params: tuple[str | tuple[str, str], ...] = ()  # a section/key, or (key, comment)
    outs: tuple[Out, ...] = ()
    metrics: tuple[Out, ...] = ()
    plots: tuple[Out, ...] = ()
    extra_args: tuple[str, ...] = ()  # layout fields the stage reads that are not DVC dependencies
    dev_deps: tuple[str, ...] = ()  # non-Python source files a stage reads (prompts), in a source checkout

    @property
    def path_args(self) -> list[str]:
        """The layout fields passed on the command line, in first-use order."""
        seen: dict[str, None] = {}
        for entry in (*self.deps, *self.outs, *self.metrics, *self.plots):
            seen.setdefault(entry.field)
        for name in self.extra_args:
            seen.setdefault(name)
        return list(seen)

    def command(self, layout: PipelinePaths) -> str:
        args = " ".join(f"--{name.replace('_', '-')} {getattr(layout, name)}" for name in self.path_args)
        return f"sh {LAUNCHER} {self.name}" + (f" {args}" if args else "")


def D(field: str, below: str | None = None, comment: str | None = None) -> Path_:  # noqa: N802 (a table entry)
    return Path_(field, below, comment)


def plain(field: str, below: str | None = None, comment: str | None = None, **plot: str) -> Out:
    """A plain output committed to git (`cache: false`)."""
    return Out(field, below, comment, cache=False, plot=tuple(plot.items()))


STAGES: tuple[Stage, ...] = (
    Stage(
        "check",
        "Every section of params.yaml, and the files and environment variables it names, checked before any stage\n"
        "works (a bad train.* value stops the pipeline here, not after synthesize has paid). Its marker is constant:\n"
        "a valid change of params reruns only the stages that read the changed params.",
        params=("params.yaml:",),
        outs=(plain("params_marker"),),
    ),
    Stage(
        "fetch",
        "The corpus, test questions and labelled training questions from the source params.fetch names.",
        deps=(D("corpus_dir"), D("params_marker")),
        params=(
            ("fetch", ""),
            ("embedding.model", "the tokenizer that fetch.passages counts with (read only when passages are enabled)"),
            ("embedding.revision", ""),
            ("embedding.max_seq_length", ""),
            ("embedding.document_prompt", ""),
        ),
        outs=(
            Out("corpus"),
            Out("fetch_test"),
            Out("real_questions"),
            plain(
                "fetch_report",
                comment="Plain outputs, committed: counts and reports stay out of `dvc metrics`, which shows the "
                "headline files",
            ),
        ),
    ),
    Stage(
        "synthesize",
        "Training questions from the LLM backend in params.llm (or pseudo-queries without a model), through the\n"
        "per-item cache of paid work.",
        deps=(
            D("corpus"),
            D("fetch_test"),
            D("real_questions", comment="their count decides llm.ict.template_share: auto"),
        ),
        params=("llm", "synthesize"),
        outs=(
            Out("questions"),
            Out("test"),
            Out(
                "llm_cache",
                comment="The per-item caches of paid work are DVC-cached outs: `dvc push` sends them to the team's "
                "remote and\n`dvc pull` brings them back, so a teammate's `dvc repro` makes no LLM call and encodes "
                "nothing already\ndone. persist: a rerun adds to the cache instead of starting it over (every row "
                "lands first in the\nper-user journal, $RAGTUNE_CACHE_DIR, which no DVC checkout resets).",
                persist=True,
            ),
            plain("synthesize_dir", "report.json"),
        ),
        metrics=(plain("synthesize_dir", "metrics.json"),),
        dev_deps=("src/ragtune/prompts",),
    ),
    Stage(
        "embed",
        "Float32 matrices of the corpus and every question set, through the per-text embeddings cache.",
        deps=(D("corpus"), D("fetch_report"), D("test"), D("questions"), D("real_questions")),
        params=("embedding",),
        outs=(
            Out("embed_dir", "corpus.npz"),
            Out("embed_dir", "test.npz"),
            Out("embed_dir", "questions.npz"),
            Out("embed_dir", "real.npz"),
            Out("embedding_cache", persist=True),
            plain("embed_dir", "info.json"),
        ),
    ),
    Stage(
        "tune",
        "Optuna over the adapter's hyperparameters on the validation questions (never the test questions).",
        deps=(
            D("embed_dir", "questions.npz"),
            D("embed_dir", "corpus.npz"),
            D("corpus"),
            D("test"),
            D("real_questions"),
            D("embed_dir", "real.npz"),
        ),
        params=("tune", "train"),
        outs=(plain("tune_dir", "best.json"), Out("tune_dir", "storage", cache=False, persist=True)),
        plots=(plain("tune_dir", "trials.csv", x="trial", y="value"),),
    ),
    Stage(
        "train",
        "The tuned adapter (bagged, exported for sentence-transformers and logged to MLflow).",
        deps=(
            D("embed_dir", "questions.npz"),
            D("embed_dir", "corpus.npz"),
            D("embed_dir", "info.json"),
            D("embed_dir", "test.npz"),
            D("corpus"),
            D("test"),
            D("real_questions"),
            D("embed_dir", "real.npz"),
            D("tune_dir", "best.json"),
        ),
        params=("train", "embedding"),
        outs=(
            Out("adapter"),
            Out("split"),
            Out(
                "held_out",
                comment="real validation: each real question's adapted vectors from the members that never "
                "trained on it",
            ),
            plain("train_dir", "report.json"),
        ),
        metrics=(plain("train_dir", "metrics.json"),),
        plots=(plain("train_dir", "history.csv", x="epoch", y="val_hit@5"),),
        extra_args=("train_dir", "linear_adapter"),
    ),
    Stage(
        "eval",
        "Every arm on the same test and validation questions, with intervals, paired tests and the recommended\n"
        "arm; the hybrid as a deployable artefact.",
        deps=(
            D("corpus"),
            D("fetch_report"),
            D("synthesize_dir", "report.json"),
            D("test"),
            D("questions"),
            D("embed_dir", "corpus.npz"),
            D("embed_dir", "test.npz"),
            D("embed_dir", "questions.npz"),
            D("embed_dir", "real.npz"),
            D("real_questions"),
            D("embed_dir", "info.json"),
            D("split"),
            D("held_out"),
            D("adapter"),
        ),
        params=("eval",),
        outs=(
            Out("eval_dir", "per_question.csv"),
            Out(
                "hybrid",
                comment="the hybrid arm as a deployable artefact (ragtune.deploy.artefact): BM25 index, fusion, loader",
            ),
            plain("eval_dir", "hit_rate_at_k.csv"),
            plain("eval_dir", "report.json"),
        ),
        metrics=(plain("eval_dir", "metrics.json"),),
        plots=(plain("eval_dir", "hit_rate_by_arm.png"), plain("eval_dir", "hit_rate_at_k.png")),
        extra_args=("linear_adapter", "train_dir"),
    ),
    Stage(
        "curve",
        "The learning curve over labelled real training questions (one point without them).",
        deps=(
            D("embed_dir", "questions.npz"),
            D("embed_dir", "corpus.npz"),
            D("embed_dir", "test.npz"),
            D("embed_dir", "real.npz"),
            D("corpus"),
            D("fetch_report"),
            D("real_questions"),
            D("test"),
            D("tune_dir", "best.json"),
            D("adapter"),
        ),
        params=("curve", "eval", "train"),
        outs=(plain("curve_dir", "learning_curve.csv"),),
        metrics=(plain("curve_dir", "metrics.json"),),
        plots=(plain("curve_dir", "learning_curve.png"),),
    ),
    Stage(
        "judge",
        "Answers from the cosine and adapter contexts, scored by an LLM judge in both display orders.",
        deps=(D("corpus"), D("test"), D("embed_dir", "corpus.npz"), D("embed_dir", "test.npz"), D("adapter")),
        params=("judge", "llm", "embedding"),
        outs=(
            Out("judge_dir", "answers.jsonl"),
            Out("judge_dir", "scores.csv"),
            Out(
                "judge_llm_cache",
                comment="Its own LLM cache: DVC lets one stage own an out, and synthesize owns the other.",
                persist=True,
            ),
            Out("judge_embedding_cache", persist=True),
            plain("judge_dir", "report.json"),
        ),
        metrics=(plain("judge_dir", "metrics.json"),),
        plots=(plain("judge_dir", "judge_scores.png"), plain("judge_dir", "text_scores.png")),
        extra_args=("train_dir",),
        dev_deps=("src/ragtune/prompts",),
    ),
)

# Stage-level plots take one y column; one line per arm needs the top-level form.
TOP_PLOTS: tuple[tuple[Path_, dict[str, str | list[str]]], ...] = (
    (
        D("eval_dir", "hit_rate_at_k.csv"),
        {
            "x": "k",
            "y": ["cosine", "adapter", "bm25"],
            "template": "simple",
            "title": "Hit rate against k (test questions)",
            "x_label": "k",
            "y_label": "hit rate@k",
        },
    ),
    (
        D("curve_dir", "learning_curve.csv"),
        {
            "x": "n_real",
            "y": ["adapter_mrr@20", "cosine_mrr@20", "bm25_mrr@20"],
            "template": "simple",
            "title": "Learning curve (test MRR@20 against labelled real training questions)",
            "x_label": "real training questions",
            "y_label": "MRR@20",
        },
    ),
)

BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None


# --- rendering ---------------------------------------------------------------------------------------------


def _comment(text: str | None, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()] if text else []


def _scalar(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return value


def _wrap_command(command: str, width: int = 110) -> list[str]:
    """The command as YAML: one line, or a folded block (`>-`) cut between `--option value` pairs."""
    if len(command) + 9 <= width:
        return [f"    cmd: {command}"]
    words = command.split(" ")
    head_end = next(i for i, w in enumerate(words) if w.startswith("--"))
    parts = [" ".join(words[:head_end])] + [f"{words[i]} {words[i + 1]}" for i in range(head_end, len(words), 2)]
    lines, line = [], ""
    for part in parts:
        if line and len(line) + 1 + len(part) > width - 6:
            lines.append(line)
            line = part
        else:
            line = f"{line} {part}" if line else part
    lines.append(line)
    return ["    cmd: >-", *(f"      {x}" for x in lines)]


def _entries(title: str, entries: Sequence[Out], layout: PipelinePaths) -> list[str]:
    if not entries:
        return []
    lines = [f"    {title}:"]
    for e in entries:
        lines += _comment(e.comment, "      ")
        options = ([("cache", "false")] if not e.cache else []) + ([("persist", "true")] if e.persist else [])
        options += list(e.plot)
        if options:
            lines.append(f"      - {e.path(layout)}:")
            lines += [f"          {k}: {v}" for k, v in options]
        else:
            lines.append(f"      - {e.path(layout)}")
    return lines


def render(
    layout: PipelinePaths = PipelinePaths(),  # noqa: B008 (frozen)
    code_deps: Callable[[str], list[str]] | None = None,
    header: str | None = None,
) -> str:
    """dvc.yaml's text. `code_deps(stage name)` gives a stage's source files (a source checkout); without it,
    every stage depends on PROJECT_FILE instead (a project running the installed ragtune)."""
    lines = _comment(header, "") + ["stages:"]
    for s in STAGES:
        lines += _comment(s.doc, "  ") + [f"  {s.name}:"] + _wrap_command(s.command(layout))
        code = [*code_deps(s.name), *s.dev_deps] if code_deps else [PROJECT_FILE]
        deps = [f"      - {c}" for c in code]
        for d in s.deps:
            text = f"      - {d.path(layout)}"
            deps.append(f"{text}   # {d.comment}" if d.comment else text)
        lines += ["    deps:", *deps]
        params = []
        for p in s.params:
            key, note = p if isinstance(p, tuple) else (p, "")
            params += _comment(note, "      ") + [f"      - {key}"]
        lines += ["    params:", *params] if params else []
        lines += _entries("outs", s.outs, layout)
        lines += _entries("metrics", s.metrics, layout)
        lines += _entries("plots", s.plots, layout)
        lines.append("")
    lines += ["# Stage-level plots take one y column; one line per arm needs the top-level form.", "plots:"]
    for target, options in TOP_PLOTS:
        lines.append(f"  - {target.path(layout)}:")
        lines += [f"      {k}: {_scalar(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"
