"""Eval: every arm on the same questions and the same exact search, with intervals and paired tests.

An arm is either an embedding arm (a function query_emb -> query_emb, searched against the corpus with
`retrieval.exact_top_k`: raw cosine is the identity, the adapter is its forward pass), a lexical arm
(BM25 over the chunk texts) or a hybrid arm (BM25 fused with an embedding arm by `ragtune.fusion`:
`hybrid` with the adapter, `hybrid_cosine` with raw cosine). Each arm yields a (n_questions, depth) matrix
of corpus rows; all metrics come from the boolean hit matrix of that ranking, per question, so intervals
and paired tests are means over questions.

Output (`EvalResult`): a nested metrics dict (what data/eval/metrics.json holds), one row per question
with the rank of its first relevant chunk per arm, and hit rate against k per arm. The metrics also name
the arm a user should deploy (`recommendation`): the best on the validation questions (synthetic ones, the
only selection possible without labelled queries, or the user's real ones when given), with how that
choice fared on the test questions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from pydantic import Field, model_validator

from .errors import RagtuneError
from .fusion import HybridParams, Scored, choose_weight, fuse_hybrid
from .labels import metric_label
from .lexical import Bm25Index, Bm25Params
from .params import Section
from .retrieval import (exact_top_k, first_relevant_rank, ids_to_indices, per_query_ndcg, per_query_recall,
                        relevance_matrix)
from .statistics import bootstrap_ci, holm_adjust, mcnemar_exact, paired_bootstrap, sign_test

log = logging.getLogger(__name__)

K = Annotated[int, Field(ge=1, le=1000)]


class EvalParams(Section):
    """Which cut-offs to report, how to bootstrap, the lexical baseline and the hybrid arms."""

    hit_ks: list[K] = [1, 3, 5, 10, 20]
    recall_ks: list[K] = [5, 10, 20]
    mrr_k: K = 20
    ndcg_k: K = 10
    main_k: K = 5
    mcnemar_ks: list[K] = [5, 20]
    bootstrap_resamples: int = Field(10_000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    seed: int = 42
    linear_adapter: bool = True
    bm25: Bm25Params = Bm25Params()
    hybrid: HybridParams = HybridParams()

    @model_validator(mode="after")
    def _check_ks(self) -> "EvalParams":
        for name in ("hit_ks", "recall_ks", "mcnemar_ks"):
            ks = getattr(self, name)
            if not ks or len(set(ks)) != len(ks):
                raise ValueError(f"{name} must be a non-empty list of distinct cut-offs, got {ks}")
        if self.main_k not in self.hit_ks:
            raise ValueError(f"main_k ({self.main_k}) must be one of hit_ks {self.hit_ks}")
        missing = [k for k in self.mcnemar_ks if k not in self.hit_ks]
        if missing:
            raise ValueError(f"mcnemar_ks {missing} must be among hit_ks {self.hit_ks}")
        return self

    @property
    def depth(self) -> int:
        """How many results each arm retrieves: the largest cut-off any metric needs."""
        return max([*self.hit_ks, *self.recall_ks, self.mrr_k, self.ndcg_k])


# --- questions and arms -----------------------------------------------------------------------

@dataclass(frozen=True)
class QuerySet:
    """Questions of one evaluation set, row-aligned: ids, texts (None where unknown), embeddings
    `query_emb` (n, dim), relevant corpus rows per question, and origin (human|synthetic) per question."""

    name: str
    ids: list[str]
    query_emb: np.ndarray
    relevant: list[np.ndarray]
    origins: list[str]
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.query_emb.shape[0] != n or len(self.relevant) != n or len(self.origins) != n:
            raise ValueError(f"query set {self.name}: rows disagree ({n} ids, {self.query_emb.shape[0]} "
                             f"embeddings, {len(self.relevant)} relevance lists, {len(self.origins)} origins)")
        if self.texts is not None and len(self.texts) != n:
            raise ValueError(f"query set {self.name}: {len(self.texts)} texts for {n} ids")

    @property
    def n_relevant(self) -> np.ndarray:
        return np.array([len(r) for r in self.relevant], dtype=np.int64)


class Arm(Protocol):
    name: str

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
            raise RagtuneError(f"arm {self.name}: transformed queries have shape {query_emb.shape}, expected "
                               f"({len(queries.ids)}, {self.corpus_emb.shape[1]}); the model does not match "
                               "the embeddings, rerun the train stage")
        scores, idx = exact_top_k(query_emb, self.corpus_emb, depth)
        return _pad_scores(scores, depth), _pad(idx, depth)

    def retrieve(self, queries: QuerySet, depth: int) -> np.ndarray:
        return self.search(queries, depth)[1]


@dataclass(frozen=True)
class OutOfFoldArm(EmbeddingArm):
    """k-fold (`ragtune.folds`): a question of fold f is adapted by fold f's adapter, which never saw it;
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


def fold_info(adapter: Path) -> dict[str, Any] | None:
    """models/adapter/folds/folds.json when the train stage ran k-fold, else None."""
    path = adapter / "folds" / "folds.json"
    return (_optional_json(path) or None) if path.is_file() else None


def adapter_arm(name: str, corpus_emb: np.ndarray, adapter: Path,
                load_adapter: AdapterLoader | None = None) -> EmbeddingArm:
    """The trained adapter as an arm: out-of-fold under k-fold (each test question scored by the adapter
    of the folds it was not in), else the shipped adapter."""
    load = load_adapter or load_adapter_transform
    folds = fold_info(adapter)
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
    """BM25 fused with an embedding arm (`ragtune.fusion.fuse_hybrid`): each part retrieves
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
        _, idx = fuse_hybrid(*parts, depth=depth, method=self.method, rrf_k=self.params.rrf_k, weight=self.weight)
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


def hit_matrix(topk_idx: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean (n, depth): is the j-th result relevant? Empty slots (-1) never are."""
    if len(relevant) == 0:
        return np.zeros(topk_idx.shape, dtype=bool)
    return relevance_matrix(topk_idx, relevant) & (topk_idx >= 0)


def document_hits(idx: np.ndarray, relevant: Sequence[np.ndarray], documents: np.ndarray,
                  depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents ranked by their best passage: `idx` (n, D) passage rows, best first (-1 empty) ->
    (hits (n, depth) over each question's first `depth` distinct documents, n_relevant documents (n,)).
    A document is relevant when any of its passages is."""
    doc = np.where(idx >= 0, documents[np.maximum(idx, 0)], -1)
    first = doc >= 0
    for j in range(1, doc.shape[1]):  # depth steps, each over all questions at once
        first[:, j] &= ~(doc[:, j:j + 1] == doc[:, :j]).any(axis=1)
    order = np.argsort(~first, axis=1, kind="stable")
    ranked = np.take_along_axis(doc, order, axis=1)
    ranked[~np.take_along_axis(first, order, axis=1)] = -1
    ranked = ranked[:, :depth]
    if ranked.shape[1] < depth:
        ranked = np.pad(ranked, ((0, 0), (0, depth - ranked.shape[1])), constant_values=-1)
    rel_docs = [np.unique(documents[np.asarray(r, dtype=np.int64)]) for r in relevant]
    return hit_matrix(ranked, rel_docs), np.array([len(r) for r in rel_docs], dtype=np.int64)


# --- per-question metrics and summaries -------------------------------------------------------

def per_question_metrics(hits: np.ndarray, n_relevant: np.ndarray, params: EvalParams) -> dict[str, np.ndarray]:
    """Per-question values (float arrays of length n) of every metric that averages over all questions."""
    rank = first_relevant_rank(hits)
    out = {f"hit@{k}": ((rank > 0) & (rank <= k)).astype(np.float64) for k in params.hit_ks}
    out[f"mrr@{params.mrr_k}"] = np.where((rank > 0) & (rank <= params.mrr_k), 1.0 / np.maximum(rank, 1), 0.0)
    out[f"ndcg@{params.ndcg_k}"] = per_query_ndcg(hits, n_relevant, params.ndcg_k)
    return out


def per_question_recall(hits: np.ndarray, n_relevant: np.ndarray, params: EvalParams) -> dict[str, np.ndarray]:
    return {f"recall@{k}": per_query_recall(hits, n_relevant, k) for k in params.recall_ks}


def _interval_summary(values: Mapping[str, np.ndarray], params: EvalParams) -> dict[str, Any]:
    """Means with bootstrap intervals; all columns share one resampling (same seed) in one matrix product."""
    names = list(values)
    matrix = np.stack([values[n] for n in names], axis=1)
    intervals = bootstrap_ci(matrix, params.bootstrap_resamples, params.confidence, params.seed)
    return {n: iv for n, iv in zip(names, intervals)}


def summarise_arm(hits: np.ndarray, n_relevant: np.ndarray, params: EvalParams) -> dict[str, Any]:
    """{metric: value, ..., "ci": {metric: [low, high]}}; recall only over questions with >= 2 relevant chunks."""
    intervals = _interval_summary(per_question_metrics(hits, n_relevant, params), params)
    multi = n_relevant >= 2
    if multi.any():
        intervals.update(_interval_summary(per_question_recall(hits[multi], n_relevant[multi], params), params))
    out: dict[str, Any] = {name: _round(iv.value) for name, iv in intervals.items()}
    out["ci"] = {name: [_round(iv.low), _round(iv.high)] for name, iv in intervals.items()}
    return out


def compare_arms(hits_base: np.ndarray, hits_new: np.ndarray, n_relevant: np.ndarray, params: EvalParams,
                 name_new: str, name_base: str, set_label: str) -> dict[str, Any]:
    """`name_new` against `name_base`, paired per question: exact McNemar on Hit@k (gained/lost counts),
    paired bootstrap (and sign test) on MRR; Holm correction over these tests for the overall verdict."""
    base = per_question_metrics(hits_base, n_relevant, params)
    new = per_question_metrics(hits_new, n_relevant, params)
    out: dict[str, Any] = {}
    tests: list[tuple[str, float]] = []
    for k in params.mcnemar_ks:
        key = f"hit@{k}"
        m = mcnemar_exact(base[key] > 0, new[key] > 0)
        out[key] = {"diff": _round(float(new[key].mean() - base[key].mean())), "gained": m.gained,
                    "lost": m.lost, "p": _round_p(m.p_value)}
        tests.append((key, m.p_value))
    mrr_key = f"mrr@{params.mrr_k}"
    pb = paired_bootstrap(new[mrr_key], base[mrr_key], params.bootstrap_resamples, params.confidence, params.seed)
    delta = new[mrr_key] - base[mrr_key]
    improved, worsened = int((delta > 0).sum()), int((delta < 0).sum())
    out[mrr_key] = {"diff": _round(pb.diff), "ci": [_round(pb.low), _round(pb.high)], "p": _round_p(pb.p_value),
                    "improved": improved, "worsened": worsened,
                    "sign_test_p": _round_p(sign_test(improved, worsened))}
    tests.append((mrr_key, pb.p_value))
    adjusted = holm_adjust([p for _, p in tests])
    significant_keys = [key for (key, _), p in zip(tests, adjusted) if p < params.alpha]
    for (key, _), p in zip(tests, adjusted):
        out[key]["p_holm"] = _round_p(p)
    out["significant"] = bool(significant_keys)
    out["verdict"] = _verdict(out, tests, significant_keys, params, name_new, name_base, set_label)
    return out


def _verdict(cmp: Mapping[str, Any], tests: Sequence[tuple[str, float]], significant_keys: Sequence[str],
             params: EvalParams, name_new: str, name_base: str, set_label: str) -> str:
    parts = []
    for key, _ in tests:
        c = cmp[key]
        label = metric_label(key)
        if key.startswith("hit@"):
            parts.append(f"{label} {c['diff'] * 100:+.1f} pts ({c['gained']} gained, {c['lost']} lost, "
                         f"McNemar p={c['p']:.3g})")
        else:
            parts.append(f"{label} {c['diff']:+.3f} ({params.confidence:.0%} CI {c['ci'][0]:+.3f} to "
                         f"{c['ci'][1]:+.3f}, p={c['p']:.3g})")
    head = f"{name_new} vs {name_base} on {set_label}: " + "; ".join(parts) + ". "
    if not significant_keys:
        return head + (f"Not significant at alpha={params.alpha:g} (Holm over {len(tests)} tests): "
                       "the difference may be noise.")
    signs = {np.sign(cmp[k]["diff"]) for k in significant_keys}
    direction = "better" if signs == {1.0} else "worse" if signs == {-1.0} else "mixed"
    return head + (f"Significant at alpha={params.alpha:g} (Holm over {len(tests)} tests) on "
                   f"{', '.join(significant_keys)}: {name_new} is {direction}.")


def _round(x: float) -> float:
    return round(float(x), 6)


def _round_p(p: float) -> float:
    # Significant figures, not decimals: a p-value of 2e-9 must not print as 0.
    return float(f"{float(p):.4g}")


def origin_label(origins: Sequence[str]) -> str:
    kinds = sorted(set(origins))
    if len(kinds) == 1:
        return kinds[0]
    counts = ", ".join(f"{origins.count(o)} {o}" for o in kinds)
    return f"mixed ({counts})"


# --- the whole evaluation -----------------------------------------------------------------------

@dataclass
class EvalResult:
    metrics: dict[str, Any]
    per_question: list[dict[str, Any]] = field(default_factory=list)
    hit_rate_at_k: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # set -> rows


def _summarise_set(label: str, hits_by_arm: Mapping[str, np.ndarray], n_relevant: np.ndarray,
                   origins: list[str], params: EvalParams, comparisons: Sequence[tuple[str, str]]) -> dict[str, Any]:
    n = len(origins)
    origin = origin_label(origins)
    out: dict[str, Any] = {
        "questions": n, "origin": origin,
        "human": origins.count("human"), "synthetic": origins.count("synthetic"),
        "multi_relevant": int((n_relevant >= 2).sum()),
        "arms": {name: summarise_arm(h, n_relevant, params) for name, h in hits_by_arm.items()},
    }
    set_label = f"{n} {origin} {label} questions"
    for new, base in comparisons:
        if new in hits_by_arm and base in hits_by_arm:
            out[f"{new}_vs_{base}"] = compare_arms(hits_by_arm[base], hits_by_arm[new], n_relevant, params,
                                                   new, base, set_label)
    return out


def _hit_rate_curve(hits_by_arm: Mapping[str, np.ndarray], params: EvalParams) -> list[dict[str, Any]]:
    """Hit rate at every k from 1 to depth, per arm, with its bootstrap interval (one row per k)."""
    depth = params.depth
    rows = [{"k": k} for k in range(1, depth + 1)]
    for name, hits in hits_by_arm.items():
        rank = first_relevant_rank(hits)
        per_q = ((rank[:, None] > 0) & (rank[:, None] <= np.arange(1, depth + 1)[None, :])).astype(np.float64)
        intervals = bootstrap_ci(per_q, params.bootstrap_resamples, params.confidence, params.seed)
        for row, iv in zip(rows, intervals):
            row[name] = _round(iv.value)
            row[f"{name}_low"] = _round(iv.low)
            row[f"{name}_high"] = _round(iv.high)
    return rows


SINGLE_ARMS = ("cosine", "adapter", "bm25")  # the candidates for "best single arm" (hybrid's paired baseline)
LEXICAL_BASED = ("bm25", "hybrid", "hybrid_cosine")
DEFAULT_COMPARISONS = (("adapter", "cosine"), ("linear", "cosine"), ("bm25", "cosine"), ("hybrid_cosine", "cosine"),
                       ("hybrid", "cosine"), ("hybrid", "hybrid_cosine"))


def _mean_mrr(hits_by_arm: Mapping[str, np.ndarray], n_relevant: np.ndarray, params: EvalParams) -> dict[str, float]:
    key = f"mrr@{params.mrr_k}"
    return {a: float(per_question_metrics(h, n_relevant, params)[key].mean()) for a, h in hits_by_arm.items()}


def best_arm(scores: Mapping[str, float], among: Sequence[str] | None = None) -> str | None:
    """The arm with the highest score (of `among`, if given); ties go to the simpler arm (`_arm_order`)."""
    names = [a for a in sorted(scores, key=_arm_order) if among is None or a in among]
    return max(names, key=lambda a: (scores[a], -names.index(a))) if names else None


def recommend(metrics: Mapping[str, Any], val_mrr: Mapping[str, float], test_mrr: Mapping[str, float] | None,
              params: EvalParams, select_on: str, report_on: str) -> dict[str, Any]:
    """The arm to deploy: best MRR@mrr_k on the validation questions (synthetic ones: a user without labelled
    queries can select on nothing else; or the user's real ones), with its test numbers and the arm that
    would have been best on test."""
    mrr_key, hit_key = f"mrr@{params.mrr_k}", f"hit@{params.main_k}"
    arm = best_arm(val_mrr)
    val_block = metrics[select_on]
    out: dict[str, Any] = {"arm": arm, "by": f"{select_on} {mrr_key}",
                           "val": {a: _round(v) for a, v in sorted(val_mrr.items(), key=lambda kv: _arm_order(kv[0]))}}
    label = f"the {val_block['questions']} {val_block['origin']} {select_on} questions"
    note = f"{arm} has the best {metric_label(mrr_key)} on {label} ({val_mrr[arm]:.3f})"
    test_block = metrics.get(report_on)
    if test_mrr and isinstance(test_block, Mapping) and arm in test_block["arms"]:
        values = test_block["arms"][arm]
        out["test"] = {"questions": test_block["questions"], hit_key: values[hit_key], mrr_key: values[mrr_key],
                       "ci": {k: values["ci"][k] for k in (hit_key, mrr_key)}}
        test_best = best_arm(test_mrr)
        out["test_best_arm"] = test_best
        note += (f"; on the {test_block['questions']} {test_block['origin']} {report_on} questions it reaches "
                 f"{metric_label(hit_key)} {values[hit_key] * 100:.1f}% and {metric_label(mrr_key)} {values[mrr_key]:.3f}")
        if test_best == arm:
            note += ", the best of all arms there too."
        else:
            synthetic = "synthetic" in str(val_block.get("origin", "synthetic"))
            why = (" (synthetic questions often copy their chunk's words, which favours the BM25-based arms)"
                   if arm in LEXICAL_BASED and synthetic else "")
            kind = "synthetic" if synthetic else "real"
            note += (f", where {test_best} would have been best ({metric_label(mrr_key)} {test_mrr[test_best]:.3f}): "
                     f"the choice made on {kind} validation questions differs from the test's best{why}.")
    else:
        note += "; there are no test questions to check the choice on."
    out["note"] = note
    return out


# Passages retrieved per document-level rank: several passages of one document collapse into one rank.
DOCUMENT_DEPTH_FACTOR = 4


def evaluate(query_sets: Sequence[QuerySet], arms: Sequence[Arm], params: EvalParams,
             comparisons: Sequence[tuple[str, str]] = DEFAULT_COMPARISONS,
             setup: Mapping[str, Any] | None = None, fusion: Mapping[str, Any] | None = None,
             select_on: str = "val", report_on: str = "test", documents: np.ndarray | None = None) -> EvalResult:
    """Run every arm on every set. A test set with both human and synthetic questions is also reported
    per origin (`<set>_human`, `<set>_synthetic`), so synthetic questions cannot hide how real ones fare.

    With the `select_on` set (the validation questions) present: `hybrid` is also compared with
    the best single arm there (`hybrid_vs_<arm>`), and `recommendation` names the arm to deploy (best MRR on
    `select_on`) with its numbers on `report_on`. `fusion` (how the hybrid arms fused) is stored as given,
    plus `best_single_on_val`. With `documents` (the document of each corpus row, when long texts were cut
    into passages), every set is also reported per document (`<set>_documents`: documents ranked by their
    best passage, from DOCUMENT_DEPTH_FACTOR x depth passages)."""
    depth = params.depth
    metrics: dict[str, Any] = {"setup": {**(setup or {}), "depth": depth, "main_k": params.main_k,
                                         "bootstrap_resamples": params.bootstrap_resamples,
                                         "confidence": params.confidence, "alpha": params.alpha,
                                         "seed": params.seed}}
    result = EvalResult(metrics)
    retrieved: list[tuple[QuerySet, dict[str, np.ndarray]]] = []
    by_document: list[tuple[QuerySet, dict[str, np.ndarray], np.ndarray]] = []
    for qs in query_sets:
        if not qs.ids:
            log.warning("eval: set %s has no questions; skipped", qs.name)
            continue
        hits_by_arm: dict[str, np.ndarray] = {}
        doc_hits: dict[str, np.ndarray] = {}
        n_docs = None
        for arm in arms:
            idx = arm.retrieve(qs, depth)
            if idx is None:
                log.info("eval: arm %s cannot run on %s (no question texts); skipped", arm.name, qs.name)
                continue
            hits_by_arm[arm.name] = hit_matrix(idx, qs.relevant)
            if documents is not None:
                doc_hits[arm.name], n_docs = document_hits(arm.retrieve(qs, depth * DOCUMENT_DEPTH_FACTOR),
                                                           qs.relevant, documents, depth)
        retrieved.append((qs, hits_by_arm))
        if doc_hits:
            by_document.append((qs, doc_hits, n_docs))

    mrr_by_set = {qs.name: _mean_mrr(h, qs.n_relevant, params) for qs, h in retrieved}
    comparisons = list(comparisons)
    best_single = best_arm(mrr_by_set.get(select_on, {}), SINGLE_ARMS)
    if best_single is not None and ("hybrid", best_single) not in comparisons:
        comparisons.append(("hybrid", best_single))

    for qs, hits_by_arm in retrieved:
        n_relevant = qs.n_relevant
        metrics[qs.name] = _summarise_set(qs.name, hits_by_arm, n_relevant, qs.origins, params, comparisons)
        kinds = sorted(set(qs.origins))
        if len(kinds) > 1:
            origins = np.asarray(qs.origins)
            for kind in kinds:
                mask = origins == kind
                metrics[f"{qs.name}_{kind}"] = _summarise_set(
                    qs.name, {a: h[mask] for a, h in hits_by_arm.items()}, n_relevant[mask],
                    [o for o in qs.origins if o == kind], params, comparisons)
        result.hit_rate_at_k[qs.name] = _hit_rate_curve(hits_by_arm, params)
        ranks_by_arm = {a: first_relevant_rank(h) for a, h in hits_by_arm.items()}
        for i, qid in enumerate(qs.ids):
            row: dict[str, Any] = {"set": qs.name, "id": qid, "origin": qs.origins[i],
                                   "n_relevant": int(n_relevant[i])}
            row.update({f"rank_{a}": int(r[i]) for a, r in ranks_by_arm.items()})
            row["question"] = qs.texts[i] if qs.texts is not None else ""
            result.per_question.append(row)

    for qs, doc_hits, n_docs in by_document:
        metrics[f"{qs.name}_documents"] = _summarise_set(f"{qs.name} (documents)", doc_hits, n_docs, qs.origins,
                                                         params, comparisons)
    if fusion is not None and any(isinstance(a, HybridArm) for a in arms):
        metrics["fusion"] = {**fusion, "best_single_on_val": best_single}
    if mrr_by_set.get(select_on):
        metrics["recommendation"] = recommend(metrics, mrr_by_set[select_on], mrr_by_set.get(report_on), params,
                                              select_on, report_on)
    return result


# --- loading a pipeline's inputs ----------------------------------------------------------------

@dataclass(frozen=True)
class EvalPaths:
    """Where eval reads a pipeline's outputs (paths relative to the repository root by default)."""

    corpus: Path = Path("data/fetch/corpus.jsonl")
    test: Path = Path("data/synthesize/test.jsonl")
    questions: Path = Path("data/synthesize/questions.jsonl")
    embed_dir: Path = Path("data/embed")
    split: Path = Path("data/train/split.json")
    real_questions: Path = Path("data/fetch/train_questions.jsonl")   # when split.json says validation: real
    adapter: Path = Path("models/adapter")
    linear_adapter: Path = Path("models/linear_adapter")


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    titles: list[str | None]
    emb: np.ndarray  # (n_chunks, dim), row-aligned with ids
    documents: np.ndarray | None = None  # (n_chunks,) int64 document of each row, when passages were cut

    def lexical_texts(self, bm25: Bm25Params, source: str | None) -> list[str]:
        """The texts BM25 indexes: with their titles when `bm25.include_title` says so for `source`."""
        from .records import include_title, indexed_text

        with_title = include_title(bm25.include_title, source)
        return [indexed_text(t, title, with_title) for t, title in zip(self.texts, self.titles)]


def require_file(path: Path, how: str) -> Path:
    if not path.exists():
        raise RagtuneError(f"{path}: not found; {how}")
    return path


def load_corpus_with_embeddings(corpus_path: Path, corpus_npz: Path) -> Corpus:
    """Chunks and their embeddings, rows in the embeddings' order; stale embeddings are an error."""
    from .embedding import load_embeddings
    from .records import load_corpus

    require_file(corpus_path, "run the fetch stage first (dvc repro fetch, or make run)")
    require_file(corpus_npz, "run the embed stage first (dvc repro embed, or make run)")
    chunks = {c.id: c for c in load_corpus(corpus_path)}
    ids, emb = load_embeddings(corpus_npz)
    missing = [i for i in ids if i not in chunks]
    if missing or len(ids) != len(chunks):
        raise RagtuneError(f"{corpus_npz} does not match {corpus_path} ({len(ids)} embedded rows, {len(chunks)} "
                           f"chunks; e.g. {missing[:3]}): the embeddings are stale, run dvc repro embed")
    documents = None
    if any(chunks[i].document is not None for i in ids):
        first: dict[str, int] = {}
        documents = np.fromiter((first.setdefault(chunks[i].document or i, len(first)) for i in ids), dtype=np.int64,
                                count=len(ids))
    return Corpus(ids, [chunks[i].text for i in ids], [chunks[i].title for i in ids], emb, documents)


def load_test_set(test_path: Path, test_npz: Path, corpus_ids: Sequence[str], name: str = "test") -> QuerySet:
    from .embedding import embeddings_for
    from .records import load_test

    require_file(test_path, "run the fetch (and synthesize) stages first (make run)")
    require_file(test_npz, "run the embed stage first (dvc repro embed, or make run)")
    questions = load_test(test_path, corpus_ids=corpus_ids)
    emb = embeddings_for([q.id for q in questions], test_npz, f"question ids of {test_path}")
    return QuerySet(name=name, ids=[q.id for q in questions], query_emb=emb,
                    relevant=ids_to_indices(corpus_ids, [q.relevant_ids for q in questions]),
                    origins=[q.origin for q in questions], texts=[q.question for q in questions])


def load_validation_set(split_path: Path, questions_npz: Path, corpus_ids: Sequence[str],
                        questions_path: Path | None = None, name: str = "val",
                        real_path: Path | None = None) -> QuerySet:
    """The questions the train stage held out for validation (ids in split.json["val"]): synthetic ones,
    or with `"validation": "real"` the user's labelled real questions (`real_path`, embedded in real.npz
    beside `questions_npz`)."""
    import json

    from .embedding import load_embeddings_with_columns
    from .records import SyntheticQuestion, read_jsonl

    require_file(split_path, "run the train stage first (dvc repro train)")
    require_file(questions_npz, "run the embed stage on the synthetic questions first (dvc repro embed)")
    split = json.loads(split_path.read_text(encoding="utf-8"))
    if not isinstance(split, dict) or not isinstance(split.get("val"), list):
        raise RagtuneError(f"{split_path}: expected {{\"train\": [...], \"val\": [...]}} of question ids; "
                           "rerun the train stage")
    val_ids = [str(x) for x in split["val"]]
    if split.get("validation") == "real":
        if real_path is None:
            raise RagtuneError(f"{split_path}: validation on real questions, but no train_questions file given")
        full = load_test_set(real_path, questions_npz.parent / "real.npz", corpus_ids, name=name)
        where = {q: i for i, q in enumerate(full.ids)}
        missing = [q for q in val_ids if q not in where]
        if missing:
            raise RagtuneError(f"{split_path}: validation ids {missing[:5]} are not in {real_path}: the split "
                               "is stale, rerun dvc repro train")
        pick = [where[q] for q in val_ids]
        return QuerySet(name=name, ids=val_ids, query_emb=full.query_emb[pick],
                        relevant=[full.relevant[i] for i in pick], origins=["human"] * len(val_ids),
                        texts=[full.texts[i] for i in pick])
    ids, emb, cols = load_embeddings_with_columns(questions_npz)
    if "chunk_ids" not in cols:
        raise RagtuneError(f"{questions_npz}: no chunk_ids column; rerun dvc repro embed")
    row = {qid: i for i, qid in enumerate(ids)}
    missing = [q for q in val_ids if q not in row]
    if missing:
        raise RagtuneError(f"{split_path}: validation ids {missing[:5]} are not in {questions_npz}: "
                           "the split is stale, rerun dvc repro train")
    order = np.array([row[q] for q in val_ids], dtype=np.int64)
    chunk_ids = [cols["chunk_ids"][i] for i in order]
    try:
        relevant = ids_to_indices(corpus_ids, [[c] for c in chunk_ids])
    except KeyError as exc:
        raise RagtuneError(f"{questions_npz}: {exc.args[0]}; rerun dvc repro embed") from None
    texts = None
    if questions_path is not None and questions_path.is_file():
        by_id = {q.id: q.question for q in read_jsonl(questions_path, SyntheticQuestion)}
        if all(q in by_id for q in val_ids):
            texts = [by_id[q] for q in val_ids]
    return QuerySet(name=name, ids=val_ids, query_emb=emb[order], relevant=relevant,
                    origins=["synthetic"] * len(val_ids), texts=texts)


# --- flat views for MLflow and CSV --------------------------------------------------------------

def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves as dotted MLflow-safe keys: `test.adapter.hit_at_5`, `..._ci_low`/`_ci_high` for
    intervals; booleans as 0/1; strings dropped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        name = name.replace("@", "_at_").replace(".arms.", ".")
        if isinstance(value, Mapping):
            if key == "ci":
                for metric, pair in value.items():
                    base = f"{prefix}.{metric}".replace("@", "_at_").replace(".arms.", ".")
                    out[f"{base}_ci_low"], out[f"{base}_ci_high"] = float(pair[0]), float(pair[1])
            else:
                out.update(flat_metrics(value, name))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            out[f"{name}_low"], out[f"{name}_high"] = float(value[0]), float(value[1])
    return out


# --- the stage's work: inputs -> arms -> result -> files ------------------------------------------

AdapterLoader = Callable[[Path], QueryTransform]


def load_adapter_transform(path: Path) -> QueryTransform:
    """The trained adapter at `path` as a query_emb -> query_emb function."""
    try:
        from .adapter import adapt_queries, load_query_adapter
    except ImportError as exc:
        raise RagtuneError(f"the adapter module is not available ({exc}); reinstall ragtune") from None
    adapter = load_query_adapter(path)
    return lambda query_emb: np.asarray(adapt_queries(adapter, query_emb), dtype=np.float32)


def build_arms(corpus: Corpus, paths: EvalPaths, params: EvalParams,
               load_adapter: AdapterLoader = load_adapter_transform, source: str | None = None) -> list[Arm]:
    """cosine, adapter, linear (when trained and enabled), bm25 (when enabled), then the hybrid arms
    hybrid_cosine and hybrid (when enabled; they need bm25), in that order. A weighted fusion's weight is
    not chosen here (`fit_hybrid_weights`): until then the hybrid arms fuse by RRF."""
    require_file(paths.adapter, "train the adapter first (dvc repro train, or make run)")
    cosine = EmbeddingArm("cosine", corpus.emb, identity)
    adapter = adapter_arm("adapter", corpus.emb, paths.adapter, load_adapter)
    arms: list[Arm] = [cosine, adapter]
    if isinstance(adapter, OutOfFoldArm) and params.linear_adapter and paths.linear_adapter.exists():
        log.warning("eval: k-fold: the linear comparison adapter trained on every test question; not evaluated")
    elif params.linear_adapter and paths.linear_adapter.exists():
        arms.append(EmbeddingArm("linear", corpus.emb, load_adapter(paths.linear_adapter)))
    if params.bm25.enabled:
        bm25 = LexicalArm("bm25", Bm25Index(corpus.lexical_texts(params.bm25, source), params.bm25))
        arms.append(bm25)
        if params.hybrid.enabled:
            arms += [HybridArm("hybrid_cosine", cosine, bm25, params.hybrid),
                     HybridArm("hybrid", adapter, bm25, params.hybrid)]
    elif params.hybrid.enabled:
        log.warning("eval: the hybrid arms fuse BM25 with the dense arms, and eval.bm25.enabled is false; "
                    "hybrid and hybrid_cosine skipped")
    return arms


def fit_hybrid_weights(arms: Sequence[Arm], val: QuerySet, params: EvalParams) -> tuple[list[Arm], dict[str, Any]]:
    """For `eval.hybrid.method: weighted`, each hybrid arm's dense share, chosen from `eval.hybrid.weights`
    by MRR@mrr_k on the validation questions `val` (never on test). Without validation texts (BM25 needs
    them) the arm falls back to RRF, with a warning. Returns the arms (hybrid ones with their weight) and
    the `fusion` block of metrics.json."""
    hp = params.hybrid
    info: dict[str, Any] = {"method": hp.method, "rrf_k": hp.rrf_k, "candidates": max(hp.candidates, params.depth)}
    out: list[Arm] = []
    for arm in arms:
        if not isinstance(arm, HybridArm):
            out.append(arm)
            continue
        entry: dict[str, Any] = {"dense": arm.dense.name, "lexical": arm.lexical.name}
        if hp.method == "weighted":
            parts = arm.parts(val, params.depth) if val.ids else None
            if parts is None:
                log.warning("eval: %s: no validation questions with texts to choose the fusion weight on; "
                            "fusing by RRF (k=%g) instead", arm.name, hp.rrf_k)
            else:
                weight, by_weight = choose_weight(*parts, val.relevant, hp.weights, params.mrr_k)
                arm = replace(arm, weight=weight)
                entry.update({"weight": weight, "chosen_on": val.name,
                              f"{val.name}_mrr@{params.mrr_k}_by_weight": {f"{w:g}": _round(m)
                                                                            for w, m in by_weight.items()}})
                log.info("eval: %s: dense share %g chosen on %s (MRR@%d %.3f)", arm.name, weight, val.name,
                         params.mrr_k, by_weight[weight])
        entry["method"] = arm.method
        info[arm.name] = entry
        out.append(arm)
    return out, info


def _optional_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def seed_spread(test: QuerySet, corpus: Corpus, member_dirs: Sequence[Path], params: EvalParams,
                load_adapter: AdapterLoader = load_adapter_transform) -> dict[str, Any]:
    """Test metrics of each single-seed adapter of a bagged run (models/adapter/members/seed-N), so the
    ensemble's number is read beside the spread of the draws a single run would have shipped."""
    keys = [f"hit@{params.main_k}", f"mrr@{params.mrr_k}", f"ndcg@{params.ndcg_k}"]
    out: dict[str, Any] = {"seeds": [], **{k: [] for k in keys}}
    for path in member_dirs:
        hits = hit_matrix(EmbeddingArm(path.name, corpus.emb, load_adapter(path)).retrieve(test, params.depth),
                          test.relevant)
        values = per_question_metrics(hits, test.n_relevant, params)
        out["seeds"].append(int(path.name.removeprefix("seed-")))
        for k in keys:
            out[k].append(_round(values[k].mean()))
    out["range"] = {k: [min(out[k]), max(out[k])] for k in keys}
    return out


def member_dirs(adapter: Path) -> list[Path]:
    """The single-seed members a bagged train stage kept beside the ensemble, by seed."""
    root = adapter / "members"
    found = [p for p in root.glob("seed-*") if p.is_dir()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix("seed-")))


def run_eval(paths: EvalPaths, params: EvalParams, load_adapter: AdapterLoader = load_adapter_transform,
             fetch_report: Path = Path("data/fetch/report.json"),
             synthesize_report: Path = Path("data/synthesize/report.json")) -> EvalResult:
    """Load a pipeline's corpus, embeddings, questions and adapter(s); evaluate every arm."""
    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test_path = paths.test
    test = load_test_set(test_path, paths.embed_dir / "test.npz", corpus.ids)
    val = load_validation_set(paths.split, paths.embed_dir / "questions.npz", corpus.ids, paths.questions,
                              real_path=paths.real_questions)
    from .fetching import report_source

    source = report_source(fetch_report)
    arms, fusion = fit_hybrid_weights(build_arms(corpus, paths, params, load_adapter, source), val, params)
    info = _optional_json(paths.embed_dir / "info.json")
    setup = {"source": source or "unknown",
             "embedding_model": info.get("model", "unknown"), "corpus_chunks": len(corpus.ids),
             "test_file": str(test_path), "arms": ", ".join(a.name for a in arms)}
    synth = _optional_json(synthesize_report)
    if "protocol" in synth:
        setup["protocol"] = synth["protocol"]
    setup["validation"] = _optional_json(paths.split).get("validation", "synthetic")
    folds = fold_info(paths.adapter)
    # Under k-fold the shipped adapter's members trained on every test question: no seed spread on test.
    members = member_dirs(paths.adapter) if folds is None else []
    if folds is not None:
        setup["folds"] = int(folds["k"])
        setup["adapter_arm"] = f"out-of-fold ({folds['k']}-fold over the human test questions)"
    if members:
        setup["bagging"] = len(members)
    if corpus.documents is not None:
        setup["passages"] = {"passages": len(corpus.ids), "documents": int(corpus.documents.max()) + 1}
    result = evaluate([test, val], arms, params, setup=setup, fusion=fusion, documents=corpus.documents)
    if members and "test" in result.metrics:
        result.metrics["test"]["adapter_seeds"] = seed_spread(test, corpus, members, params, load_adapter)
    return result


def write_eval_outputs(result: EvalResult, params: EvalParams, out_dir: Path) -> list[Path]:
    """metrics.json, hit_rate_at_k.csv (test set; k then one column per arm), per_question.csv and the
    two PNGs, each written atomically. Returns the paths written."""
    from .io import write_json
    from .plots import grouped_bar_chart, lines_against_k

    out_dir = Path(out_dir)
    written = [out_dir / "metrics.json", out_dir / "hit_rate_at_k.csv", out_dir / "per_question.csv"]
    write_json(written[0], result.metrics)
    curve = result.hit_rate_at_k.get("test", [])
    arm_names = [k for k in (curve[0] if curve else {}) if k != "k" and not k.endswith(("_low", "_high"))]
    write_csv(written[1], ["k", *arm_names], curve)
    rank_cols = sorted({c for r in result.per_question for c in r if c.startswith("rank_")},
                       key=lambda c: _arm_order(c.removeprefix("rank_")))
    write_csv(written[2], ["set", "id", "origin", "n_relevant", *rank_cols, "question"], result.per_question)

    main_key = f"hit@{params.main_k}"
    sets = [s for s, block in result.metrics.items()
            if s != "setup" and isinstance(block, Mapping) and isinstance(block.get("arms"), Mapping)]
    arms = sorted({a for s in sets for a in result.metrics[s]["arms"]}, key=_arm_order)
    nan = float("nan")
    groups = [f"{s}\n{result.metrics[s]['questions']} {result.metrics[s]['origin'].split(' (')[0]}" for s in sets]
    series = {a: [result.metrics[s]["arms"].get(a, {}).get(main_key, nan) for s in sets] for a in arms}
    intervals = {a: [tuple(result.metrics[s]["arms"].get(a, {}).get("ci", {}).get(main_key, (nan, nan)))
                     for s in sets] for a in arms}
    bar_png = out_dir / "hit_rate_by_arm.png"
    grouped_bar_chart(bar_png, groups, series, intervals, title=f"Hit rate@{params.main_k} by arm "
                      f"({params.confidence:.0%} bootstrap intervals)", ylabel=f"hit rate@{params.main_k}")
    panels, bands = {}, {}
    for set_name, rows in result.hit_rate_at_k.items():
        names = [k for k in rows[0] if k != "k" and not k.endswith(("_low", "_high"))]
        label = f"{set_name} ({result.metrics[set_name]['questions']} {result.metrics[set_name]['origin']})"
        panels[label] = {a: [r[a] for r in rows] for a in sorted(names, key=_arm_order)}
        bands[label] = {a: ([r[f"{a}_low"] for r in rows], [r[f"{a}_high"] for r in rows]) for a in names}
    curve_png = out_dir / "hit_rate_at_k.png"
    ks = [r["k"] for r in next(iter(result.hit_rate_at_k.values()), [])]
    lines_against_k(curve_png, panels, ks, bands, ylabel="hit rate@k")
    return [*written, bar_png, curve_png]


def _arm_order(name: str) -> tuple[int, str]:
    known = ["cosine", "adapter", "linear", "bm25", "hybrid_cosine", "hybrid"]
    return (known.index(name) if name in known else len(known), name)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    import csv

    from .io import atomic_open

    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
