"""A tiny pipeline for `ragtune label` tests: what fetch, synthesize, embed and train leave behind, made in a
few seconds with the packaged all-MiniLM-L6-v2 and a real (untrained) adapter, and `ragtune label` servers
started as a user starts them (a subprocess that prints its URL)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pipeline_support import TINY_TOPICS, write_jsonl

from ragtune.adapter.model import AdapterConfig, build_adapter, save_query_adapter
from ragtune.cache import ContentCache
from ragtune.embedding.embedder import CachedEmbedder, load_model
from ragtune.embeddings_npz import save_embeddings
from ragtune.io import write_json
from ragtune.params import EmbeddingParams
from ragtune.records import indexed_text

HERE = Path(__file__).resolve().parent

# Chunk ids: "<topic>-<i>", e.g. gdpr-1 (breach notification), csrd-11 (statutory auditors).
CHUNKS = [
    {"id": f"{topic}-{i}", "text": text, "title": f"{topic.upper()} Art. {i}", "source": topic}
    for i, (topic, text) in enumerate(TINY_TOPICS)
]
TEST_QUESTIONS = [
    {"id": "t-1", "question": "Who must establish a risk management system?", "relevant_ids": ["ai-2"], "answer": None},
    {"id": "t-2", "question": "When is a national cybersecurity strategy adopted?", "relevant_ids": ["nis2-7"]},
]
# What fetch copied from the labels at the last `dvc repro`: the shipped adapter trained on it.
TRAINED_ON = [
    {"id": "old-1", "question": "How long do manufacturers handle vulnerabilities?", "relevant_ids": ["cra-8"]}
]
PARAMS = """\
fetch:
  source: jsonl
  jsonl:
    corpus: corpus/corpus.jsonl
    test: corpus/test.jsonl
    train_questions: corpus/train_questions.jsonl
embedding: {}
eval: {}
"""


def build_pipeline(root: Path) -> Path:
    """corpus/, params.yaml and the stage outputs `ragtune label` reads, under `root`."""
    write_jsonl(root / "corpus/corpus.jsonl", CHUNKS)
    write_jsonl(root / "corpus/test.jsonl", TEST_QUESTIONS)
    write_jsonl(root / "data/fetch/corpus.jsonl", CHUNKS)
    write_jsonl(root / "data/fetch/test.jsonl", TEST_QUESTIONS)
    write_jsonl(root / "data/synthesize/test.jsonl", [{**q, "origin": "human"} for q in TEST_QUESTIONS])
    write_jsonl(root / "data/fetch/train_questions.jsonl", TRAINED_ON)
    write_json(root / "data/fetch/report.json", {"source": "jsonl"})
    params = EmbeddingParams()
    with ContentCache(":memory:") as cache:
        embedder = CachedEmbedder(params, cache, model=load_model(params))
        texts = [indexed_text(c["text"], c["title"], True) for c in CHUNKS]
        save_embeddings(root / "data/embed/corpus.npz", [c["id"] for c in CHUNKS], embedder.encode_documents(texts))
        write_json(root / "data/embed/info.json", embedder.describe())
    save_query_adapter(build_adapter(AdapterConfig(dim=embedder.dim), seed=0), root / "models/adapter")
    (root / "params.yaml").write_text(PARAMS, encoding="utf-8")
    return root


def copy_pipeline(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


class LabelServer:
    """`ragtune label ARGS` (or `python tests/label_slow_server.py MARKER ARGS`) in `cwd` on a free port;
    `url` once it prints one."""

    def __init__(self, cwd: Path, *args: str, slow_marker: Path | None = None, timeout: float = 120):
        command = [sys.executable, "-m", "ragtune.cli"]
        if slow_marker is not None:
            command = [sys.executable, str(HERE / "label_slow_server.py"), str(slow_marker)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*command, "label", "--port", "0", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url(timeout)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_for_url(self, timeout: float) -> str:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"ragtune label printed no URL in {timeout} s:\n" + "\n".join(self.lines)
                ) from None
            if line is None:
                raise AssertionError("ragtune label exited:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if line.startswith("Open http://127.0.0.1:"):
                return line.split()[1]

    def interrupt(self) -> tuple[int, list[str]]:
        """Ctrl-C: (the exit code, every line it printed)."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        while (line := self._lines.get(timeout=30)) is not None:
            self.lines.append(line)
        return code, self.lines

    def kill(self) -> None:
        """SIGKILL: no handler runs, as when the machine or the terminal dies."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
