"""Corpus providers. Each returns a `SourceResult`: chunks, test questions and counts for the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...records import Chunk, TestQuestion


@dataclass
class SourceResult:
    chunks: list[Chunk]
    test: list[TestQuestion]
    stats: dict[str, Any] = field(default_factory=dict)
    train_questions: list[TestQuestion] = field(default_factory=list)  # labelled real questions for training
