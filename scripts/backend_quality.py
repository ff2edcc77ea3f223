"""The metric guard for an embedding backend (issue 34): re-embed the pipeline's corpus and test questions with
each backend and precision, search with the pipeline's own arms (the trained adapter included), and compare each
arm with the PyTorch fp32 vectors the pipeline made (data/embed): test Hit@main_k and MRR@mrr_k with their
intervals, and the share of test questions whose top-20 changes (as a set of chunks, and in order).

A backend qualifies as the default when its top-20 changes for under 1% of questions and its headline numbers
stay within the fp32 intervals. Needs the pipeline's outputs (make run, or dvc checkout).

    python scripts/backend_quality.py [--variants onnx:int8 onnx:fp32 torch:bf16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ragtune.cache import ContentCache
from ragtune.corpus.fetching import report_source
from ragtune.embedding.embedder import CachedEmbedder
from ragtune.embeddings_npz import save_embeddings
from ragtune.evaluation.arms import build_arms
from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.report import evaluate
from ragtune.io import write_json
from ragtune.params import EmbeddingParams, load_section
from ragtune.paths import PipelinePaths
from ragtune.records import include_title, indexed_text, load_corpus, load_test

TOP = 20
REFERENCE = "torch:fp32"


def embed_variant(variant: str, paths: PipelinePaths, out_dir: Path, cache_path: Path) -> dict:
    """Corpus and test embeddings with `variant` (backend:precision) under out_dir; seconds spent."""
    backend, precision = variant.split(":")
    base = load_section("embedding", EmbeddingParams)
    params = base.model_copy(update={"backend": backend, "precision": precision})
    chunks = load_corpus(paths.corpus)
    tests = load_test(paths.test, corpus_ids=[c.id for c in chunks])
    with_title = include_title(params.include_title, report_source(paths.corpus.parent / "report.json"))
    t0 = time.perf_counter()
    with ContentCache(cache_path) as cache, CachedEmbedder(params, cache) as embedder:
        docs = embedder.encode_documents([indexed_text(c.text, c.title, with_title) for c in chunks])
        queries = embedder.encode_queries([q.question for q in tests])
        fingerprint = embedder.fingerprint
    out_dir.mkdir(parents=True, exist_ok=True)
    save_embeddings(out_dir / "corpus.npz", [c.id for c in chunks], docs)
    save_embeddings(out_dir / "test.npz", [q.id for q in tests], queries)
    return {"seconds": round(time.perf_counter() - t0, 1), "fingerprint": fingerprint}


def arm_rows(paths: PipelinePaths, embed_dir: Path, params: EvalParams) -> tuple[dict[str, np.ndarray], dict]:
    """Each arm's top-TOP corpus rows (n_test, TOP) and the test block of eval's report, for one embed_dir."""
    corpus = load_corpus_with_embeddings(paths.corpus, embed_dir / "corpus.npz")
    test = load_test_set(paths.test, embed_dir / "test.npz", corpus.ids)
    source = report_source(paths.corpus.parent / "report.json")
    arms = build_arms(corpus, paths, params, source=source)
    rows = {a.name: a.retrieve(test, TOP) for a in arms}
    result = evaluate([test], arms, params)
    return {k: v for k, v in rows.items() if v is not None}, result.metrics["test"]


def compare(ref_rows: dict, ref_test: dict, rows: dict, test: dict, params: EvalParams) -> dict:
    hit, mrr = f"hit@{params.main_k}", f"mrr@{params.mrr_k}"
    out = {}
    for arm, ref in ref_rows.items():
        mine = rows[arm]
        set_changed = np.array([set(a) != set(b) for a, b in zip(ref, mine)])
        order_changed = (ref != mine).any(axis=1)
        r, m = ref_test["arms"][arm], test["arms"][arm]
        within = all(r["ci"][k][0] <= m[k] <= r["ci"][k][1] for k in (hit, mrr))
        out[arm] = {
            hit: m[hit],
            f"{hit}_fp32": r[hit],
            mrr: m[mrr],
            f"{mrr}_fp32": r[mrr],
            f"{hit}_ci_fp32": r["ci"][hit],
            f"{mrr}_ci_fp32": r["ci"][mrr],
            "within_fp32_intervals": within,
            "top20_set_changed_share": round(float(set_changed.mean()), 4),
            "top20_order_changed_share": round(float(order_changed.mean()), 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["onnx:int8", "onnx:fp32", "torch:bf16"])
    ap.add_argument("--work", type=Path, default=Path("data/bench/backends"))
    ap.add_argument("--out", type=Path, default=Path("data/bench/backend_quality.json"))
    args = ap.parse_args()
    paths = PipelinePaths()
    params = load_section("eval", EvalParams)
    ref_rows, ref_test = arm_rows(paths, paths.embed_dir, params)
    report: dict = {"reference": REFERENCE, "test_questions": ref_test["questions"], "variants": {}}
    for variant in args.variants:
        out_dir = args.work / variant.replace(":", "_")
        facts = embed_variant(variant, paths, out_dir, args.work / "embeddings.sqlite")
        rows, test = arm_rows(paths, out_dir, params)
        arms = compare(ref_rows, ref_test, rows, test, params)
        worst = max(a["top20_set_changed_share"] for a in arms.values())
        report["variants"][variant] = {
            **facts,
            "arms": arms,
            "max_top20_set_changed_share": worst,
            "guard_holds": worst < 0.01 and all(a["within_fp32_intervals"] for a in arms.values()),
        }
        write_json(args.out, report)
        print(json.dumps({variant: report["variants"][variant]}, indent=1))


if __name__ == "__main__":
    main()
