"""Where a pipeline's files live: the one layout type.

Every stage receives its paths from its command line (`--corpus data/fetch/corpus.jsonl ...`), written into
dvc.yaml from these defaults by `ragtune.project.pipeline`; the commands, the README generator and the
benchmark read the same defaults. Paths are relative to the project root.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class PipelinePaths:
    """A pipeline's inputs and stage outputs, relative to the project root."""

    # check: every section of params.yaml valid (a constant marker fetch depends on)
    params_marker: Path = Path("data/check/params.ok")
    # fetch: the user's files (corpus/) -> the pipeline's corpus, test and labelled training questions
    corpus_dir: Path = Path("corpus")
    corpus: Path = Path("data/fetch/corpus.jsonl")
    fetch_test: Path = Path("data/fetch/test.jsonl")
    real_questions: Path = Path("data/fetch/train_questions.jsonl")  # when split.json says validation: real
    fetch_report: Path = Path("data/fetch/report.json")
    # synthesize: training questions, and the pipeline's test set (fetch's, plus synthetic ones if needed)
    questions: Path = Path("data/synthesize/questions.jsonl")
    test: Path = Path("data/synthesize/test.jsonl")
    synthesize_dir: Path = Path("data/synthesize")  # report.json, metrics.json
    llm_cache: Path = Path("data/cache/llm.sqlite")
    # embed: corpus.npz, test.npz, questions.npz, real.npz, info.json
    embed_dir: Path = Path("data/embed")
    embedding_cache: Path = Path("data/cache/embeddings.sqlite")
    # tune: best.json, trials.csv, storage/
    tune_dir: Path = Path("data/tune")
    # train: history.csv, report.json, metrics.json, split.json, held_out.npz, run.json (its MLflow run)
    train_dir: Path = Path("data/train")
    split: Path = Path("data/train/split.json")
    held_out: Path = Path("data/train/held_out.npz")  # the real validation questions' held-out adapter vectors
    adapter: Path = Path("models/adapter")
    linear_adapter: Path = Path("models/linear_adapter")  # only with train.compare_linear (not a DVC output)
    # eval: report.json, metrics.json, per_question.csv, hit_rate_at_k.csv, PNGs; the hybrid as an artefact
    eval_dir: Path = Path("data/eval")
    hybrid: Path = Path("models/hybrid")
    # curve: learning_curve.csv, metrics.json, learning_curve.png
    curve_dir: Path = Path("data/curve")
    # judge: answers.jsonl, scores.csv, report.json, metrics.json, PNGs, and its own caches
    judge_dir: Path = Path("data/judge")
    judge_llm_cache: Path = Path("data/cache/judge_llm.sqlite")
    judge_embedding_cache: Path = Path("data/cache/judge_embeddings.sqlite")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def under(self, root: str | Path) -> PipelinePaths:
        """The same layout below `root` (a workspace that is not the current directory)."""
        return PipelinePaths(**{name: Path(root) / getattr(self, name) for name in self.names()})

    @property
    def train_run(self) -> Path:
        """The folder whose run.json names the train stage's MLflow run (eval and judge link to it)."""
        return self.train_dir

    @property
    def eval_report(self) -> Path:
        return self.eval_dir / "report.json"

    @property
    def best(self) -> Path:
        return self.tune_dir / "best.json"

    def training_inputs(self) -> tuple[Path, ...]:
        """What tune, train and curve read, in `ragtune.adapter.data.load_training_data`'s order: synthetic
        question vectors, corpus vectors, corpus, test questions (never trained on; their chunks' twins are
        told apart), labelled real questions and their vectors."""
        return (
            self.embed_dir / "questions.npz",
            self.embed_dir / "corpus.npz",
            self.corpus,
            self.test,
            self.real_questions,
            self.embed_dir / "real.npz",
        )

    def datasets(self, *names: str) -> list[tuple[Path, str]]:
        """The named JSONL inputs (default: all four) with their MLflow dataset context, for a stage run's
        dataset inputs (ragtune.tracking.StageRun.log_datasets)."""
        contexts = {"corpus": "corpus", "test": "test", "questions": "training", "real_questions": "training"}
        return [(getattr(self, name), contexts[name]) for name in names or contexts]
