"""`ragtune search` and `ragtune index`: the pipeline's retrievers on questions, in memory or through a store.

`search` loads the corpus, the embedder and the adapter once, then answers every question given (the
argument, or one question a line from --file, `-` for stdin): raw cosine, the adapter and the hybrid side by
side, as a table or as one JSON line per question. In memory it searches exactly as eval does (numpy/torch,
eval's BM25 and fusion); with `--store URL` the same adapted vectors query a store that `ragtune index` filled,
and the hybrid is the store's (see ragtune.deploy.stores). Both read what the pipeline produced
(data/fetch/corpus.jsonl, data/embed/, models/adapter/, data/eval/report.json for the fusion eval chose) and
params.yaml (`embedding`, `eval`); `search` writes nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import RagtuneError
from ..paths import PipelinePaths
from ..search.side_by_side import Comparison, CorpusView, HybridSetup, compare_many

_LAYOUT = PipelinePaths()
CORPUS, EMBED_DIR, ADAPTER, EVAL_METRICS = _LAYOUT.corpus, _LAYOUT.embed_dir, _LAYOUT.adapter, _LAYOUT.eval_report
TEXT_SEARCH = {"porter": "english"}  # eval.bm25.stemmer -> the stores' full-text language (else the same name)


def check_pipeline_outputs(corpus: Path, embed_dir: Path, adapter: Path) -> None:
    needed = [(corpus, "fetch"), (embed_dir / "corpus.npz", "embed"), (adapter, "train")]
    for path, stage in needed:
        if not path.exists():
            raise RagtuneError(
                f"{path} not found: the {stage} stage has not run yet. Run the pipeline first "
                f"with `make run` (or `dvc repro {stage}`), from the repository root."
            )


def hybrid_setup(
    texts: Sequence[str] | Callable[[Any], Sequence[str]], params_file: Path, metrics_path: Path = EVAL_METRICS
) -> HybridSetup | None:
    """The hybrid column as eval's `hybrid` arm fuses: BM25 with eval's settings over `texts` (or over
    `texts(bm25_params)`, the corpus texts as eval's BM25 indexes them), fused by the weight eval chose on
    validation when params ask for the weighted fusion (the one weight params give, or the one report.json says
    eval chose among several), else by RRF (`eval.hybrid.rrf_k`). None when `eval.hybrid.enabled` or
    `eval.bm25.enabled` is false."""
    from ..evaluation.metrics import EvalParams
    from ..params import load_section
    from ..search.lexical import Bm25Index

    params = load_section("eval", EvalParams, params_file)
    if not (params.hybrid.enabled and params.bm25.enabled):
        return None
    # One dense share in params is the weight itself (nothing to choose); several are chosen by eval on validation.
    weight = (
        params.hybrid.weights[0] if params.hybrid.method == "weighted" and len(params.hybrid.weights) == 1 else None
    )
    if params.hybrid.method == "weighted" and weight is None and metrics_path.is_file():
        try:
            entry = json.loads(metrics_path.read_text(encoding="utf-8")).get("fusion", {}).get("hybrid", {})
        except (OSError, ValueError, AttributeError):
            entry = {}
        chosen = entry.get("weight") if isinstance(entry, dict) and entry.get("method") == "weighted" else None
        if isinstance(chosen, (int, float)):
            weight = float(chosen)
    method: Literal["rrf", "weighted"] = "weighted" if weight is not None else "rrf"
    indexed = texts(params.bm25) if callable(texts) else texts
    return HybridSetup(
        Bm25Index(indexed, params.bm25),
        method,
        params.hybrid.rrf_k,
        weight,
        max(params.hybrid.candidates, params.depth),
    )


def quiet_model_loading() -> None:
    """No weight-loading progress bars in a command whose output is meant to be read."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def check_same_embedder(fingerprint: str, info_path: Path, params_file: Path) -> None:
    if not info_path.is_file():
        return
    embedded_with = json.loads(info_path.read_text(encoding="utf-8")).get("fingerprint")
    if embedded_with and embedded_with != fingerprint:
        raise RagtuneError(
            f"{params_file}: the embedding model ({fingerprint[:24]}…) is not the one the corpus "
            f"was embedded with ({embedded_with[:24]}…, {info_path}); rerun the pipeline "
            "(make run) so queries and chunks share one embedder"
        )


@dataclass(frozen=True)
class Pipeline:
    """What the pipeline produced, loaded once: the corpus with its embeddings and BM25 texts, the embed
    stage's info.json, and eval's params."""

    corpus: Any  # ragtune.evaluation.inputs.Corpus
    lexical: list[str]
    info: dict[str, Any]
    eval_params: Any  # ragtune.evaluation.metrics.EvalParams
    params_file: Path

    @classmethod
    def load(cls, params_file: Path, corpus_path: Path = CORPUS, embed_dir: Path = EMBED_DIR) -> Pipeline:
        from ..corpus.fetching import report_source
        from ..evaluation.inputs import load_corpus_with_embeddings
        from ..evaluation.metrics import EvalParams
        from ..params import load_section

        eval_params = load_section("eval", EvalParams, params_file)
        corpus = load_corpus_with_embeddings(corpus_path, embed_dir / "corpus.npz")
        lexical = corpus.lexical_texts(eval_params.bm25, report_source(corpus_path.parent / "report.json"))
        info_path = embed_dir / "info.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        return cls(corpus, lexical, info, eval_params, params_file)

    def identity(self):
        """The IndexIdentity of these vectors (embedder fingerprint, dimension, corpus fingerprint)."""
        from .artefact import corpus_fingerprint
        from .stores.base import IndexIdentity

        stemmer = self.eval_params.bm25.stemmer
        return IndexIdentity(
            embedder=str(self.info.get("model", "unknown")),
            embedder_fingerprint=str(self.info.get("fingerprint", "unknown")),
            dim=int(self.corpus.emb.shape[1]),
            corpus_fingerprint=corpus_fingerprint(self.corpus),
            chunks=len(self.corpus.ids),
            text_search=TEXT_SEARCH.get(stemmer, stemmer) if stemmer else "simple",
        )

    def rows(self):
        from .stores.base import Rows

        c = self.corpus
        return Rows(np.arange(len(c.ids), dtype=np.int64), c.ids, c.titles, c.texts, self.lexical, c.emb)


class Searcher:
    """The search side loaded once: pipeline, embedder (queries embedded as the pipeline embedded them),
    adapter, and eval's hybrid (None when eval's params turn it off)."""

    def __init__(self, params_file: Path, corpus_path: Path, embed_dir: Path, adapter_path: Path, metrics_path: Path):
        from ..cache import ContentCache
        from ..embedding.embedder import CachedEmbedder
        from ..evaluation.arms import load_adapter_transform
        from ..params import EmbeddingParams, load_section

        check_pipeline_outputs(corpus_path, embed_dir, adapter_path)
        embedding = load_section("embedding", EmbeddingParams, params_file)
        self.pipeline = Pipeline.load(params_file, corpus_path, embed_dir)
        self.adapt = load_adapter_transform(adapter_path)
        quiet_model_loading()
        # An in-memory cache: searching must not write to the pipeline's tracked embeddings cache.
        self.embedder = CachedEmbedder(embedding, ContentCache(":memory:"))
        check_same_embedder(self.embedder.fingerprint, embed_dir / "info.json", params_file)
        if self.embedder.dim != self.pipeline.corpus.emb.shape[1]:
            raise RagtuneError(
                f"the query embedding has {self.embedder.dim} dimensions, the corpus "
                f"{self.pipeline.corpus.emb.shape[1]}: rerun the pipeline (make run)"
            )
        self.hybrid = hybrid_setup(self.pipeline.lexical, params_file, metrics_path)
        c = self.pipeline.corpus
        self.view = CorpusView(c.ids, c.titles, c.texts)
        self.row_of = {cid: i for i, cid in enumerate(c.ids)}

    def embed(self, questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(raw, adapted) query vectors, each (n, dim) float32."""
        raw = self.embedder.encode_queries(list(questions))
        return raw, np.asarray(self.adapt(raw), dtype=np.float32)

    def compare(self, questions: Sequence[str], k: int) -> list[Comparison]:
        """Exact search in memory, as eval searches."""
        raw, adapted = self.embed(questions)
        return compare_many(questions, raw, adapted, self.pipeline.corpus.emb, self.view, k, self.hybrid)

    def compare_in_store(
        self, store, questions: Sequence[str], k: int, exact: bool, ef_search: int
    ) -> list[Comparison]:
        """The same columns from `store`: its vector search with the raw and the adapted vectors, and its hybrid
        (full-text ranking fused with the adapted vector ranking by RRF, eval's rrf_k)."""
        stored = store.identity()
        if stored is None:
            raise RagtuneError(f"{store.where}: nothing indexed there yet; run `ragtune index --store ...` first")
        self.pipeline.identity().check_same(stored, store.where)
        raw, adapted = self.embed(questions)
        cosine, adapter = store.search(raw, k, exact, ef_search), store.search(adapted, k, exact, ef_search)
        setup, fused = None, None
        if self.hybrid is not None:
            setup = HybridSetup(None, "rrf", self.hybrid.rrf_k, None, self.hybrid.candidates, lexical="full-text")
            fused = store.hybrid(questions, adapted, k, setup.rrf_k, setup.candidates)
        out = []
        for q, question in enumerate(questions):
            raw_rows, adapted_rows = self._rows(cosine[q][0]), self._rows(adapter[q][0])
            hybrid = None
            if fused is not None:
                hybrid = self.view.hits(self._rows(fused[q][0]), fused[q][1], set(raw_rows) | set(adapted_rows))
            out.append(
                Comparison(
                    question,
                    k,
                    self.view.hits(raw_rows, cosine[q][1], set(adapted_rows)),
                    self.view.hits(adapted_rows, adapter[q][1], set(raw_rows)),
                    hybrid,
                    setup,
                )
            )
        return out

    def _rows(self, ids: Sequence[str]) -> list[int]:
        return [self.row_of.get(i, -1) for i in ids]


def search(
    question: str,
    k: int,
    params_file: Path = Path("params.yaml"),
    corpus_path: Path = CORPUS,
    embed_dir: Path = EMBED_DIR,
    adapter_path: Path = ADAPTER,
    metrics_path: Path = EVAL_METRICS,
) -> Comparison:
    """One question, in memory (see `Searcher`)."""
    if not question.strip():
        raise RagtuneError("the question is empty")
    return Searcher(params_file, corpus_path, embed_dir, adapter_path, metrics_path).compare([question], k)[0]


def read_questions(source: str) -> list[str]:
    """One question a line from the file `source` (`-`: stdin); blank lines skipped."""
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RagtuneError(f"--file {source}: cannot read it ({exc})") from None
    questions = [line.strip() for line in text.splitlines() if line.strip()]
    if not questions:
        raise RagtuneError(f"--file {source}: no questions (one question a line)")
    return questions
