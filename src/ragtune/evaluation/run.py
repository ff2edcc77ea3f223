"""Eval: every arm on the same questions and the same exact search, with intervals and paired tests.

`run_eval` loads a pipeline's corpus, embeddings, questions and adapter(s) (`inputs`), builds the arms
(`arms`: cosine, adapter, linear, bm25, hybrid), evaluates them (`report.evaluate`) and adds the spread
of the single-seed adapters a bagged run shipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RagtuneError
from ..labels import round_metric
from ..paths import PipelinePaths
from .arms import (
    AdapterLoader,
    Arm,
    EmbeddingArm,
    build_arms,
    fit_hybrid_weights,
    fold_info,
    load_adapter_transform,
    member_dirs,
)
from .inputs import Corpus, QuerySet, _optional_json, load_corpus_with_embeddings, load_test_set, load_validation_set
from .metrics import EvalParams, per_question_metrics
from .ranking import hit_matrix
from .report import EvalResult, evaluate

log = logging.getLogger(__name__)


def seed_spread(
    test: QuerySet,
    corpus: Corpus,
    member_dirs: Sequence[Path],
    params: EvalParams,
    load_adapter: AdapterLoader = load_adapter_transform,
) -> dict[str, Any]:
    """Test metrics of each single-seed adapter of a bagged run (models/adapter/members/seed-N), so the
    ensemble's number is read beside the spread of the draws a single run would have shipped."""
    keys = [f"hit@{params.main_k}", f"mrr@{params.mrr_k}", f"ndcg@{params.ndcg_k}"]
    out: dict[str, Any] = {"seeds": [], **{k: [] for k in keys}}
    for path in member_dirs:
        hits = hit_matrix(
            EmbeddingArm(path.name, corpus.emb, load_adapter(path)).retrieve(test, params.depth), test.relevant
        )
        values = per_question_metrics(hits, test.n_relevant, params)
        out["seeds"].append(int(path.name.removeprefix("seed-")))
        for k in keys:
            out[k].append(round_metric(values[k].mean()))
    out["range"] = {k: [min(out[k]), max(out[k])] for k in keys}
    return out


@dataclass(frozen=True)
class EvalInputs:
    """What eval evaluates: the corpus, the test and validation questions, the arms (hybrid ones with their
    fusion fitted on validation) and the `fusion` block of report.json; also what the hybrid artefact needs."""

    corpus: Corpus
    test: QuerySet
    val: QuerySet
    arms: list[Arm]
    fusion: dict[str, Any]
    source: str | None


def real_held_out(paths: PipelinePaths) -> dict[str, np.ndarray] | None:
    """With real validation questions: question id -> the adapted vector of the members that never trained
    on it (`ragtune.adapter.held_out`), every real question some member held out, in the real file's order.
    None with synthetic validation. Selection must not read the shipped adapter's scores on real questions
    it trained on (train.refit), so a real split without held-out vectors is an error."""
    from ..adapter.held_out import load_held_out
    from ..records import load_test

    split = _optional_json(paths.split)
    if split.get("validation") != "real":
        return None
    held = load_held_out(paths.held_out)
    if held is None or not held.ids:
        raise RagtuneError(
            f"{paths.held_out}: no held-out adapter vectors for the real validation questions; rerun the train "
            "stage (dvc repro train)"
        )
    merged = held.merged()
    order = [q.id for q in load_test(paths.real_questions) if q.id in merged]
    return {q: merged[q] for q in order}


def prepare_eval(
    paths: PipelinePaths,
    params: EvalParams,
    load_adapter: AdapterLoader = load_adapter_transform,
    fetch_report: Path | None = None,
) -> EvalInputs:
    """Load a pipeline's corpus, embeddings, questions and adapter(s); build the arms and fit the fusion."""
    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test = load_test_set(paths.test, paths.embed_dir / "test.npz", corpus.ids)
    if not test.ids:  # an eval without test numbers is no eval: say why instead of exiting 0 with none
        raise RagtuneError(
            f"{paths.test}: no test questions, so there is nothing to evaluate; give a test file with questions "
            "(fetch.jsonl.test), or leave it null so that fetch.jsonl.test_fraction of the chunks is held out "
            "for synthetic test questions (see data/synthesize/report.json for why none were written)"
        )
    held_out = real_held_out(paths)
    val = load_validation_set(
        paths.split,
        paths.embed_dir / "questions.npz",
        corpus.ids,
        paths.questions,
        real_path=paths.real_questions,
        real_ids=list(held_out) if held_out else None,
    )
    from ..corpus.fetching import report_source

    source = report_source(fetch_report or paths.fetch_report)
    arms, fusion = fit_hybrid_weights(
        build_arms(corpus, paths, params, load_adapter, source, held_out=held_out), val, params
    )
    return EvalInputs(corpus, test, val, arms, fusion, source)


def run_eval(
    paths: PipelinePaths,
    params: EvalParams,
    load_adapter: AdapterLoader = load_adapter_transform,
    fetch_report: Path | None = None,
    synthesize_report: Path | None = None,
    inputs: EvalInputs | None = None,
) -> EvalResult:
    """Evaluate every arm on a pipeline's files (`inputs`, when already prepared by `prepare_eval`)."""
    inputs = inputs or prepare_eval(paths, params, load_adapter, fetch_report)
    corpus, test, val, arms, fusion, source = (
        inputs.corpus,
        inputs.test,
        inputs.val,
        inputs.arms,
        inputs.fusion,
        inputs.source,
    )
    test_path = paths.test
    info = _optional_json(paths.embed_dir / "info.json")
    setup = {
        "source": source or "unknown",
        "embedding_model": info.get("model", "unknown"),
        "corpus_chunks": len(corpus.ids),
        "test_file": str(test_path),
        "arms": ", ".join(a.name for a in arms),
    }
    synth = _optional_json(synthesize_report or paths.synthesize_dir / "report.json")
    if "protocol" in synth:
        setup["protocol"] = synth["protocol"]
    split = _optional_json(paths.split)
    setup["validation"] = split.get("validation", "synthetic")
    if split.get("refit"):  # the shipped adapter trained on the validation questions after selection
        setup["refit"] = True
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
