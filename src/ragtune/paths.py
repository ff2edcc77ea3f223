"""Where a pipeline's outputs live: the one paths type of the stages that read them (eval, judge)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PipelinePaths:
    """A pipeline's stage outputs, relative to the repository root by default."""

    corpus: Path = Path("data/fetch/corpus.jsonl")
    test: Path = Path("data/synthesize/test.jsonl")
    questions: Path = Path("data/synthesize/questions.jsonl")
    embed_dir: Path = Path("data/embed")
    split: Path = Path("data/train/split.json")
    held_out: Path = Path("data/train/held_out.npz")  # the real validation questions' held-out adapter vectors
    real_questions: Path = Path("data/fetch/train_questions.jsonl")  # when split.json says validation: real
    adapter: Path = Path("models/adapter")
    linear_adapter: Path = Path("models/linear_adapter")
    train_run: Path = Path("data/train")  # its run.json names the train MLflow run

    def datasets(self, *names: str) -> list[tuple[Path, str]]:
        """The named JSONL inputs (default: all four) with their MLflow dataset context, for a stage run's
        dataset inputs (ragtune.tracking.StageRun.log_datasets)."""
        contexts = {"corpus": "corpus", "test": "test", "questions": "training", "real_questions": "training"}
        return [(getattr(self, name), contexts[name]) for name in names or contexts]
