"""Retrieval arms: each turns a question set into a (n_questions, depth) matrix of corpus rows.

An embedding arm maps query embeddings (n, d) through a transform (raw cosine: the identity; the
adapter: its forward pass; k-fold: each question's own fold's adapter) and searches the corpus exactly;
a lexical arm is BM25 over the chunk texts; a hybrid arm fuses BM25 with an embedding arm
(`ragtune.search.fusion`). `build_arms` assembles the pipeline's arms from its files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import RagtuneError
from ..labels import round_metric
from ..paths import PipelinePaths
from ..search.dense import exact_top_k
from ..search.fusion import HybridParams, Scored, choose_weight, fuse, fusion_params
from ..search.lexical import Bm25Index
from .inputs import Corpus, QuerySet, _optional_json, require_file
from .metrics import EvalParams

log = logging.getLogger(__name__)


class Arm(Protocol):
    @property
    def name(self) -> str:  # read-only: the arms are frozen dataclasses
        ...

    def retrieve(self, queries: QuerySet, depth: int) -> np.ndarray | None:
        """(n_questions, depth) corpus rows, best first, -1 for empty slots; None if the arm cannot run."""


QueryTransform = Callable[[np.ndarray], np.ndarray]


def identity(query_emb: np.ndarray) -> np.ndarray:
    """The raw-cosine arm: queries as embedded."""
    return query_emb


@dataclass(frozen=True)
class EmbeddingArm:
    """Exact dot-product search of `transform(query_emb)` against `corpus_emb` (both L2-normalised)."""

    name: str
    corpus_emb: np.ndarray
    transform: QueryTransform = identity

    def adapt(self, queries: QuerySet) -> np.ndarray:
        """The queries as this arm searches with them, (n_questions, dim) float32."""
        return np.asarray(self.transform(queries.query_emb), dtype=np.float32)

    def search(self, queries: QuerySet, depth: int) -> Scored:
        """(scores, rows), each (n_questions, depth), best first; -1 rows past a small corpus."""
        query_emb = self.adapt(queries)
        if query_emb.shape != (len(queries.ids), self.corpus_emb.shape[1]):
            raise RagtuneError(
                f"arm {self.name}: transformed queries have shape {query_emb.shape}, expected "
                f"({len(queries.ids)}, {self.corpus_emb.shape[1]}); the model does not match "
                "the embeddings, rerun the train stage"
            )
        scores, idx = exact_top_k(query_emb, self.corpus_emb, depth)
        return _pad_scores(scores, depth), _pad(idx, depth)

    def retrieve(self, queries: QuerySet, depth: int) -> np.ndarray:
        return self.search(queries, depth)[1]


@dataclass(frozen=True)
class OutOfFoldArm(EmbeddingArm):
    """k-fold (`ragtune.adapter.folds`): a question of fold f is adapted by fold f's adapter, which never saw it;
    a question in no fold (validation questions) by `transform`, the shipped adapter."""

    fold_of: Mapping[str, int] = field(default_factory=dict)
    fold_transforms: Sequence[QueryTransform] = ()

    def adapt(self, queries: QuerySet) -> np.ndarray:
        out = np.asarray(self.transform(queries.query_emb), dtype=np.float32).copy()
        folds = np.array([self.fold_of.get(q, -1) for q in queries.ids], dtype=np.int64)
        for fold, transform in enumerate(self.fold_transforms):
            rows = np.flatnonzero(folds == fold)
            if len(rows):
                out[rows] = transform(queries.query_emb[rows])
        return out


@dataclass(frozen=True)
class HeldOutArm(EmbeddingArm):
    """The shipped adapter, except on the real validation questions in `held_out` (id -> adapted vector (d,)),
    which are searched with the vectors of the bagged members that never trained on them
    (`ragtune.adapter.held_out`): selection on them reads no question the adapter trained on. Test questions
    are never in `held_out` (a train question that is also a test question is refused)."""

    held_out: Mapping[str, np.ndarray] = field(default_factory=dict)

    def adapt(self, queries: QuerySet) -> np.ndarray:
        out = np.asarray(self.transform(queries.query_emb), dtype=np.float32)
        rows = [i for i, q in enumerate(queries.ids) if q in self.held_out]
        if rows:
            out = out.copy()
            out[rows] = np.stack([self.held_out[queries.ids[i]] for i in rows])
        return out


def fold_info(adapter: Path) -> dict[str, Any] | None:
    """models/adapter/folds/folds.json when the train stage ran k-fold, else None."""
    path = adapter / "folds" / "folds.json"
    return (_optional_json(path) or None) if path.is_file() else None


def adapter_arm(
    name: str,
    corpus_emb: np.ndarray,
    adapter: Path,
    load_adapter: AdapterLoader | None = None,
    held_out: Mapping[str, np.ndarray] | None = None,
) -> EmbeddingArm:
    """The trained adapter as an arm: out-of-fold under k-fold (each test question scored by the adapter
    of the folds it was not in), else the shipped adapter, with the held-out vectors of the real validation
    questions (`held_out`, id -> (d,)) in its place on those questions."""
    load = load_adapter or load_adapter_transform
    folds = fold_info(adapter)
    if folds is None and held_out:
        return HeldOutArm(name, corpus_emb, load(adapter), held_out)
    if folds is None:
        return EmbeddingArm(name, corpus_emb, load(adapter))
    transforms = [load(adapter / "folds" / f"fold-{f}") for f in range(int(folds["k"]))]
    return OutOfFoldArm(name, corpus_emb, load(adapter), dict(folds["fold_of"]), transforms)


@dataclass(frozen=True)
class LexicalArm:
    """BM25 over the corpus texts; needs the question texts."""

    name: str
    index: Bm25Index

    def search(self, queries: QuerySet, depth: int) -> Scored | None:
        """(scores, rows), each (n_questions, depth), -1 rows where no term is shared; None without texts."""
        if queries.texts is None:
            return None
        scores, idx = self.index.top_k(queries.texts, depth)
        return _pad_scores(scores, depth), _pad(idx, depth)

    def retrieve(self, queries: QuerySet, depth: int) -> np.ndarray | None:
        found = self.search(queries, depth)
        return None if found is None else found[1]


@dataclass(frozen=True)
class HybridArm:
    """BM25 fused with an embedding arm (`ragtune.search.fusion.fuse_hybrid`): each part retrieves
    max(`params.candidates`, depth) rows, the fused ranking is cut to depth. `weight` is the weighted
    fusion's dense share, chosen on the validation questions (`fit_hybrid_weights`); RRF needs none."""

    name: str
    dense: EmbeddingArm
    lexical: LexicalArm
    params: HybridParams = HybridParams()
    weight: float | None = None

    @property
    def method(self) -> str:
        return "weighted" if self.params.method == "weighted" and self.weight is not None else "rrf"

    def fusion(self) -> tuple[str, dict[str, float | None]]:
        """(method, params) as `ragtune.deploy.hybrid.fuse` takes them: what this arm fuses by, and what the
        hybrid artefact records."""
        return self.method, fusion_params(self.method, self.params.rrf_k, self.weight)

    def parts(self, queries: QuerySet, depth: int) -> tuple[Scored, Scored] | None:
        """The two candidate lists the fusion reads, or None without question texts (BM25 needs them)."""
        lexical = self.lexical.search(queries, max(self.params.candidates, depth))
        if lexical is None:
            return None
        return self.dense.search(queries, max(self.params.candidates, depth)), lexical

    def retrieve(self, queries: QuerySet, depth: int) -> np.ndarray | None:
        parts = self.parts(queries, depth)
        if parts is None:
            return None
        _, idx = fuse(*self.fusion(), *parts, depth=depth)
        return idx


def _pad_scores(scores: np.ndarray, depth: int) -> np.ndarray:
    if scores.shape[1] >= depth:
        return scores
    return np.concatenate([scores, np.zeros((scores.shape[0], depth - scores.shape[1]), scores.dtype)], axis=1)


def _pad(idx: np.ndarray, depth: int) -> np.ndarray:
    """A corpus smaller than depth gives fewer columns; pad with -1 (nothing retrieved)."""
    if idx.shape[1] >= depth:
        return idx.astype(np.int64, copy=False)
    pad = np.full((idx.shape[0], depth - idx.shape[1]), -1, dtype=np.int64)
    return np.concatenate([idx.astype(np.int64), pad], axis=1)


AdapterLoader = Callable[[Path], QueryTransform]


def load_adapter_transform(path: Path) -> QueryTransform:
    """The trained adapter at `path` as a query_emb -> query_emb function."""
    try:
        from ..adapter.model import adapt_queries, load_query_adapter
    except ImportError as exc:
        raise RagtuneError(f"the adapter module is not available ({exc}); reinstall ragtune") from None
    adapter = load_query_adapter(path)
    return lambda query_emb: np.asarray(adapt_queries(adapter, query_emb), dtype=np.float32)


def build_arms(
    corpus: Corpus,
    paths: PipelinePaths,
    params: EvalParams,
    load_adapter: AdapterLoader = load_adapter_transform,
    source: str | None = None,
    held_out: Mapping[str, np.ndarray] | None = None,
) -> list[Arm]:
    """cosine, adapter, linear (when trained and enabled), bm25 (when enabled), then the hybrid arms
    hybrid_cosine and hybrid (when enabled; they need bm25), in that order. A weighted fusion's weight is
    not chosen here (`fit_hybrid_weights`): until then the hybrid arms fuse by RRF. `held_out`: the real
    validation questions' held-out adapter vectors (`adapter_arm`), which the hybrid arm fuses too."""
    require_file(paths.adapter, "train the adapter first (dvc repro train, or make run)")
    cosine = EmbeddingArm("cosine", corpus.emb, identity)
    adapter = adapter_arm("adapter", corpus.emb, paths.adapter, load_adapter, held_out)
    arms: list[Arm] = [cosine, adapter]
    if isinstance(adapter, OutOfFoldArm) and params.linear_adapter and paths.linear_adapter.exists():
        log.warning("eval: k-fold: the linear comparison adapter trained on every test question; not evaluated")
    elif params.linear_adapter and paths.linear_adapter.exists():
        arms.append(EmbeddingArm("linear", corpus.emb, load_adapter(paths.linear_adapter)))
    if params.bm25.enabled:
        bm25 = LexicalArm("bm25", Bm25Index(corpus.lexical_texts(params.bm25, source), params.bm25))
        arms.append(bm25)
        if params.hybrid.enabled:
            arms += [
                HybridArm("hybrid_cosine", cosine, bm25, params.hybrid),
                HybridArm("hybrid", adapter, bm25, params.hybrid),
            ]
    elif params.hybrid.enabled:
        log.warning(
            "eval: the hybrid arms fuse BM25 with the dense arms, and eval.bm25.enabled is false; "
            "hybrid and hybrid_cosine skipped"
        )
    return arms


def fit_hybrid_weights(arms: Sequence[Arm], val: QuerySet, params: EvalParams) -> tuple[list[Arm], dict[str, Any]]:
    """For `eval.hybrid.method: weighted`, each hybrid arm's dense share: the one value of `eval.hybrid.weights`
    (fixed), or chosen from several by MRR@mrr_k on the validation questions `val` (never on test; synthetic
    validation favours low dense shares, as it favours BM25). Without validation texts (BM25 needs them) a
    chosen share falls back to RRF, with a warning. Returns the arms (hybrid ones with their weight) and the
    `fusion` block of report.json."""
    hp = params.hybrid
    info: dict[str, Any] = {"method": hp.method, "rrf_k": hp.rrf_k, "candidates": max(hp.candidates, params.depth)}
    out: list[Arm] = []
    for arm in arms:
        if not isinstance(arm, HybridArm):
            out.append(arm)
            continue
        entry: dict[str, Any] = {"dense": arm.dense.name, "lexical": arm.lexical.name}
        if hp.method == "weighted" and len(hp.weights) == 1:  # a fixed dense share: nothing to choose
            arm = replace(arm, weight=float(hp.weights[0]))
            entry.update({"weight": arm.weight, "chosen_on": None})
        elif hp.method == "weighted":
            parts = arm.parts(val, params.depth) if val.ids else None
            if parts is None:
                log.warning(
                    "eval: %s: no validation questions with texts to choose the fusion weight on; "
                    "fusing by RRF (k=%g) instead",
                    arm.name,
                    hp.rrf_k,
                )
            else:
                weight, by_weight = choose_weight(*parts, val.relevant, hp.weights, params.mrr_k)
                arm = replace(arm, weight=weight)
                entry.update(
                    {
                        "weight": weight,
                        "chosen_on": val.name,
                        f"{val.name}_mrr@{params.mrr_k}_by_weight": {
                            f"{w:g}": round_metric(m) for w, m in by_weight.items()
                        },
                    }
                )
                log.info(
                    "eval: %s: dense share %g chosen on %s (MRR@%d %.3f)",
                    arm.name,
                    weight,
                    val.name,
                    params.mrr_k,
                    by_weight[weight],
                )
        entry["method"] = arm.method
        info[arm.name] = entry
        out.append(arm)
    return out, info


def member_dirs(adapter: Path) -> list[Path]:
    """The single-seed members a bagged train stage kept beside the ensemble, by seed."""
    root = adapter / "members"
    found = [p for p in root.glob("seed-*") if p.is_dir()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix("seed-")))
