"""A tiny real pipeline for the deploy tests: the tiny corpus embedded with the packaged all-MiniLM-L6-v2, real
test and synthetic questions, a (seeded, non-identity) MLP adapter with its sentence-transformers export, laid
out as the stages leave them; `run_eval_stage` runs the real eval stage on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from pipeline_support import tiny_corpus

from ragtune.adapter.export import export_sentence_transformer
from ragtune.adapter.model import AdapterConfig, build_adapter, save_query_adapter
from ragtune.cache import ContentCache
from ragtune.embedding.embedder import CachedEmbedder, load_model
from ragtune.embeddings_npz import save_embeddings
from ragtune.io import write_json
from ragtune.params import EmbeddingParams
from ragtune.records import Chunk, SyntheticQuestion, TestQuestion, write_jsonl

QUESTIONS = [
    ("How quickly must a personal data breach be notified?", 1),
    ("Who must handle vulnerabilities of digital products?", 8),
    ("Which incidents must financial entities classify?", 4),
    ("What must providers of high-risk AI systems establish?", 2),
    ("When must essential entities report significant incidents?", 6),
    ("What goes into the management report of large undertakings?", 10),
    ("How often is digital operational resilience tested?", 5),
    ("Who gives an opinion on sustainability reporting assurance?", 11),
    ("What may importers place on the market?", 9),
    ("Who ensures human oversight of AI systems?", 3),
]


def build_pipeline(root: Path, n_copies: int = 4, eval_params: dict | None = None) -> Path:
    """Write the pipeline's files under `root` (params.yaml included); returns `root`."""
    rows = tiny_corpus(n_copies=n_copies)
    chunks = [Chunk(**r) for r in rows]
    tests = [
        TestQuestion(id=f"q{i}", question=q, relevant_ids=[rows[r]["id"]], origin="human")
        for i, (q, r) in enumerate(QUESTIONS)
    ]
    synth = [
        SyntheticQuestion(
            id=f"s{i}-{j}",
            chunk_id=c.id,
            question=" ".join(c.text.split()[j * 3 : j * 3 + 6]) + "?",
            backend="ict",
            model="none",
            prompt_id="p",
        )
        for i, c in enumerate(chunks)
        for j in range(2)
    ]
    d = root / "data"
    write_jsonl(d / "fetch/corpus.jsonl", chunks)
    write_json(d / "fetch/report.json", {"source": "jsonl"})
    write_jsonl(d / "synthesize/test.jsonl", tests)
    write_jsonl(d / "synthesize/questions.jsonl", synth)
    params = EmbeddingParams()
    model = load_model(params)
    with ContentCache(":memory:") as cache:
        embedder = CachedEmbedder(params, cache, model=model)
        corpus_emb = embedder.encode_documents([c.text for c in chunks])
        save_embeddings(d / "embed/corpus.npz", [c.id for c in chunks], corpus_emb)
        test_emb = embedder.encode_queries([q.question for q in tests])
        save_embeddings(d / "embed/test.npz", [q.id for q in tests], test_emb)
        save_embeddings(
            d / "embed/questions.npz",
            [s.id for s in synth],
            embedder.encode_queries([s.question for s in synth]),
            chunk_ids=[s.chunk_id for s in synth],
        )
        write_json(d / "embed/info.json", embedder.describe())
    half = len(synth) // 2
    write_json(d / "train/split.json", {"train": [s.id for s in synth[:half]], "val": [s.id for s in synth[half:]]})
    adapter = build_adapter(AdapterConfig(dim=embedder.dim, dropout=0.0), seed=0)
    with torch.no_grad():  # an untrained adapter is the identity: move the queries, seeded
        gen = torch.Generator().manual_seed(1)
        adapter.out.weight.copy_(0.2 * torch.randn(adapter.out.weight.shape, generator=gen))
    adapter.eval()
    save_query_adapter(adapter, root / "models/adapter")
    export_sentence_transformer(adapter, root / "models/adapter/sentence_transformer", model, info=embedder.describe())
    settings = {
        "embedding": {},
        "mlflow": {"enabled": False},
        "eval": {"bootstrap_resamples": 200, "linear_adapter": False, **(eval_params or {})},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    return root


def set_eval_params(root: Path, **eval_params) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["eval"] = {**params["eval"], **eval_params}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def run_eval_stage(root: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAGTUNE_LOG": "WARNING"}
    proc = subprocess.run(
        [sys.executable, "-m", "ragtune.stages.eval"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
