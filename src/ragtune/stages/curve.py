"""curve: the learning curve over labelled real training questions -> data/curve/{learning_curve.csv,
learning_curve.png, metrics.json}. Without real questions (fetch.jsonl.train_questions) it is the one
synthetic-only point: the shipped adapter, evaluated, not retrained."""

from pathlib import Path

from ragtune.adapter.config import TrainParams, load_tuned
from ragtune.adapter.data import load_training_data
from ragtune.adapter.model import adapt_queries, load_query_adapter
from ragtune.corpus.fetching import report_source
from ragtune.evaluation.arms import EmbeddingArm, LexicalArm, identity
from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set
from ragtune.evaluation.learning_curve import CurveArm, CurveParams, arm_scores, learning_curve, summary_row
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.report import write_csv
from ragtune.io import read_json, write_json
from ragtune.params import MlflowParams, load_section
from ragtune.plots import lines_against_k
from ragtune.search.lexical import Bm25Index
from ragtune.stage import run_main, stage_paths
from ragtune.tracking import stage_run


def shipped_for_all_point(train_params: TrainParams, adapter_dir: Path):
    """The train stage's adapter for the curve's every-real-question point when it was trained as that point
    would be (the same train params, saved in its config.json; no k-fold, where it also trained on the test
    questions), else None: the point is trained here."""
    config = adapter_dir / "config.json"
    saved = read_json(config).get("train") if config.is_file() else None
    if train_params.folds or saved != train_params.model_dump(mode="json"):
        return None
    return load_query_adapter(adapter_dir)


def main() -> None:
    paths = stage_paths("curve", __doc__)
    out = paths.curve_dir
    curve = load_section("curve", CurveParams)
    params = load_section("eval", EvalParams)
    train_params, _ = load_tuned(load_section("train", TrainParams), paths.best)
    mlflow_params = load_section("mlflow", MlflowParams)
    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test = load_test_set(paths.test, paths.embed_dir / "test.npz", corpus.ids)
    cosine = arm_scores(EmbeddingArm("cosine", corpus.emb, identity).retrieve(test, params.depth), test, params)
    baselines: dict[str, CurveArm] = {"cosine": cosine}
    if params.bm25.enabled:
        source = report_source(paths.fetch_report)
        bm25 = LexicalArm("bm25", Bm25Index(corpus.lexical_texts(params.bm25, source), params.bm25))
        top = bm25.retrieve(test, params.depth)
        assert top is not None  # load_test_set keeps the question texts BM25 needs
        baselines["bm25"] = arm_scores(top, test, params)
    data = load_training_data(*paths.training_inputs(), round_trip_top_k=train_params.round_trip_top_k)

    if data.has_real and curve.enabled:
        shipped_adapter = shipped_for_all_point(train_params, paths.adapter)
        rows = learning_curve(train_params, data, test, corpus.emb, baselines, params, curve, shipped=shipped_adapter)
        last_point_shipped = shipped_adapter is not None
    else:
        # The synthetic-only point is the train stage's own adapter (same params, data and seeds).
        adapter = load_query_adapter(paths.adapter)
        shipped = EmbeddingArm("adapter", corpus.emb, lambda q: adapt_queries(adapter, q))
        rows = [summary_row(0, arm_scores(shipped.retrieve(test, params.depth), test, params), baselines, params)]
        last_point_shipped = True

    hit_key, mrr_key = f"hit@{params.main_k}", f"mrr@{params.mrr_k}"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "learning_curve.csv", list(rows[0]), rows)
    sizes = [r["n_real"] for r in rows]
    arms = ["adapter", *baselines]
    panels = {
        label: {arm: [r[f"{arm}_{key}"] for r in rows] for arm in arms}
        for label, key in ((f"Hit@{params.main_k}", hit_key), (f"MRR@{params.mrr_k}", mrr_key))
    }
    bands = {
        label: {"adapter": ([r[f"adapter_{key}_low"] for r in rows], [r[f"adapter_{key}_high"] for r in rows])}
        for label, key in ((f"Hit@{params.main_k}", hit_key), (f"MRR@{params.mrr_k}", mrr_key))
    }
    lines_against_k(
        out / "learning_curve.png",
        panels,
        sizes,
        bands,
        ylabel="test score",
        xlabel="real training questions",
        log_x=False,
        title=f"Learning curve ({len(test.ids)} test questions)",
    )
    metrics = {
        "real_questions": sizes[-1],
        "test_questions": len(test.ids),
        "points": rows,
        "enabled": curve.enabled,
        "last_point_is_shipped_adapter": last_point_shipped,
    }
    write_json(out / "metrics.json", metrics)
    with stage_run("curve", mlflow_params, params={"curve": curve}, datasets=paths.datasets()) as run:
        run.log_points(
            [
                (f"curve_{arm}_{key}", r[f"{arm}_{key}"], r["n_real"])
                for r in rows
                for arm in arms
                for key in (hit_key, mrr_key)
            ]
        )
        run.log_artifact(out / "learning_curve.png")
    last = rows[-1]
    print(
        f"curve: {len(rows)} point(s); with {last['n_real']} real questions adapter {hit_key} "
        f"{last[f'adapter_{hit_key}']:.1%} (cosine {last[f'cosine_{hit_key}']:.1%})"
    )


if __name__ == "__main__":
    run_main(main)
