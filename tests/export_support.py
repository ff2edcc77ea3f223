"""A real export for the deploy tests: the packaged MiniLM (no Hub) and an MLP adapter with hidden layers
(the case that needs trust_remote_code), with what the pipeline itself computes for the same texts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from ragtune.adapter.export import export_sentence_transformer
from ragtune.adapter.model import AdapterConfig, QueryAdapter, adapt_queries
from ragtune.cache import ContentCache
from ragtune.embedding.embedder import CachedEmbedder, resolve_model
from ragtune.params import EmbeddingParams

EXPORT_DIR = Path("models/adapter/sentence_transformer")  # where the train stage writes it
QUESTIONS = ["Who must be told about a data breach?", "Which AI practices are prohibited?"]
CHUNKS = [
    "The controller shall notify a personal data breach to the supervisory authority within 72 hours.",
    "Financial entities shall report major ICT-related incidents\nto the competent authority.",
    "AI systems that deploy subliminal techniques are prohibited.",
]


@dataclass
class BuiltExport:
    project: Path  # holds EXPORT_DIR, as a pipeline checkout does
    path: Path  # the export folder
    document_model: str  # the base model the document vectors come from (a local folder here)
    adapter: QueryAdapter
    base: SentenceTransformer

    def query_vectors(self, questions: list[str]) -> np.ndarray:
        """(n, d): the pipeline's query embedding (embed stage) through `adapt_queries` (eval stage)."""
        return adapt_queries(self.adapter, self._embed(questions, query=True))

    def document_vectors(self, texts: list[str]) -> np.ndarray:
        """(n, d): the embed stage's document vectors (what an index built from them holds)."""
        return self._embed(texts, query=False)

    def _embed(self, texts: list[str], query: bool) -> np.ndarray:
        with ContentCache(self.project / "embed-cache.sqlite") as cache:
            embedder = CachedEmbedder(EmbeddingParams(), cache, model=self.base)
            return embedder.encode_queries(texts) if query else embedder.encode_documents(texts)


def trained_like_adapter(seed: int = 0) -> QueryAdapter:
    """An MLP adapter with hidden layers and random non-zero weights (far from the identity)."""
    adapter = QueryAdapter(AdapterConfig(dim=384, kind="mlp", hidden_dim=32, n_hidden_layers=2))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return adapter.eval()


def build_export(project: Path) -> BuiltExport:
    document_model = resolve_model("packaged:all-MiniLM-L6-v2")
    base = SentenceTransformer(document_model, device="cpu")
    adapter = trained_like_adapter()
    path = export_sentence_transformer(adapter, project / EXPORT_DIR, base)
    return BuiltExport(project, path, document_model, adapter, base)


def assert_vectors(got, want: np.ndarray, what: str) -> None:
    """`got` (n, d) within 1e-5 of `want`, and not the other side's vector by accident."""
    got = np.asarray(got, dtype=np.float32).reshape(want.shape)
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-5, f"{what}: differs from the library by {diff:.2e}"
