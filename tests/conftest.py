"""Shared helpers: a tiny corpus, a counting fake backend, and a scratch project directory for stages."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # fake_anthropic

from ragtune.llm.base import GenRequest, GenResult, Usage  # noqa: E402
from ragtune.records import Chunk, TestQuestion, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_chunks(n: int = 6, test_ids: Sequence[int] = ()) -> list[Chunk]:
    topics = [
        "incident reporting deadlines",
        "data subject access rights",
        "conformity assessment bodies",
        "penalties for infringements",
        "supervisory authority powers",
        "risk management measures",
        "vulnerability disclosure duties",
        "transparency obligations",
        "market surveillance checks",
        "sustainability reporting standards",
        "third-party ICT providers",
        "record keeping rules",
    ]
    return [
        Chunk(
            id=f"c{i}",
            text=f"Operators shall comply with rules on {topics[i % len(topics)]} (case {i}). "
            f"The competent authority shall monitor {topics[i % len(topics)]} every year.",
            title=f"Regulation Art. {i}",
            source="test",
            split="test" if i in test_ids else "train",
        )
        for i in range(n)
    ]


class CountingBackend:
    """A fake generator: records every request; a passage containing FAIL fails with `fail_reason`."""

    name = "fake"
    model = "fake-1"
    cacheable = True
    uses_prompt = True
    deterministic = False
    takes_repeat_penalty = False
    fail_reason = "invalid_output"

    def __init__(self, questions: Any = None):
        self.calls: list[GenRequest] = []
        self.questions = questions or (
            lambda req: [
                f"What are the rules on {req.passage.split('rules on ')[1].split(' (')[0]}?",
                f"How often is {req.passage.split('monitor ')[1].split(' every')[0]} monitored?",
            ]
        )
        self.fail = True

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model}

    def generate(
        self, requests: Sequence[GenRequest], on_result: Any, stop: threading.Event, state: Any = None
    ) -> None:
        for req in requests:
            if stop.is_set():
                return
            self.calls.append(req)
            if self.fail and "FAIL" in req.passage:
                on_result(GenResult.failure(req.key, self.fail_reason, "no JSON", usage=Usage(10, 2)))
            else:
                on_result(
                    GenResult(
                        key=req.key, ok=True, questions=list(self.questions(req)), usage=Usage(100, 20), cost_usd=0.001
                    )
                )

    def close(self) -> None:
        pass


@pytest.fixture(scope="session", autouse=True)
def _session_journal(tmp_path_factory):
    """Cache journals (ragtune.cache) of module- and session-wide fixtures and their subprocesses in a temporary
    directory: no test reads or writes the real ~/.cache/ragtune."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("journal-session")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _journal(tmp_path_factory, monkeypatch):
    """Each test its own journal directory: no test sees rows that another made."""
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("journal")))


@pytest.fixture
def backend() -> CountingBackend:
    return CountingBackend()


def write_project(
    root: Path,
    chunks: Sequence[Chunk],
    tests: Sequence[TestQuestion] = (),
    llm: dict | None = None,
    synthesize: dict | None = None,
    mlflow: dict | None = None,
    train_questions: Sequence[TestQuestion] = (),
) -> Path:
    """A scratch project: params.yaml plus data/fetch/{corpus,test,train_questions}.jsonl, as the fetch stage
    leaves them."""
    root.mkdir(parents=True, exist_ok=True)
    params = {"llm": llm or {"backend": "ict"}, "synthesize": synthesize or {}, "mlflow": mlflow or {"enabled": False}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    write_jsonl(root / "data/fetch/corpus.jsonl", chunks)
    write_jsonl(root / "data/fetch/test.jsonl", tests)
    write_jsonl(root / "data/fetch/train_questions.jsonl", train_questions)
    return root
