"""train: the tuned adapter, trained with a fixed seed -> models/adapter/ (state dict, config,
sentence-transformers export), data/train/{history.csv, report.json, metrics.json (its headline numbers),
split.json} and data/train/run.json (seconds and the MLflow run id that eval and judge nest under; not
committed)."""

import csv
import logging
import math
import shutil
from pathlib import Path

import numpy as np

from ragtune.adapter.bagging import train_bagged
from ragtune.adapter.config import TrainParams, load_tuned
from ragtune.adapter.data import load_training_data
from ragtune.adapter.export import (
    export_sentence_transformer,
    load_exported,
    load_query_encoder,
    needs_remote_code,
)
from ragtune.adapter.held_out import held_out_vectors, save_held_out
from ragtune.adapter.mlflow_model import log_query_encoder
from ragtune.adapter.model import adapt_queries, save_query_adapter
from ragtune.embedding.embedder import load_model
from ragtune.errors import RagtuneError
from ragtune.io import atomic_open, read_json, write_json
from ragtune.params import EmbeddingParams, MlflowParams, load_section
from ragtune.paths import PipelinePaths
from ragtune.records import load_corpus
from ragtune.stage import read_run_record, run_main, stage_paths, write_run_record
from ragtune.tracking import pipeline_tags, stage_run

log = logging.getLogger("train")
# With train.bagging > 1, each single-seed member is kept here too (eval reports their spread).
MEMBERS_DIR = "members"
EXPORT_DIR = "sentence_transformer"
FOLDS_DIR = "folds"  # k-fold (train.folds): models/adapter/folds/fold-N and folds.json
EXPORT_TOLERANCE = 1e-5
# metrics.json (what `dvc metrics` and `dvc exp show` compare): validation of the adapter against raw cosine.
HEADLINE = ("val_hit@5", "val_mrr@10", "baseline_val_hit@5", "baseline_val_mrr@10")


def check_embedder(emb: EmbeddingParams, info_path: Path) -> dict:
    info = read_json(info_path)
    if info.get("model") != emb.model:
        raise RagtuneError(
            f"{info_path} was made with embedding.model {info.get('model')!r} but params.yaml says "
            f"{emb.model!r}; rerun the embed stage (dvc repro embed)"
        )
    return info


def write_history(path: Path, history: list[dict]) -> None:
    """history.csv without the epochs' wall seconds (the file is committed; MLflow has them)."""
    with atomic_open(path) as fh:
        writer = csv.DictWriter(
            fh, fieldnames=[k for k in history[0] if k != "seconds"], extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for row in history:
            writer.writerow(
                {
                    k: (
                        ""
                        if isinstance(v, float) and not math.isfinite(v)
                        else round(v, 6)
                        if isinstance(v, float)
                        else v
                    )
                    for k, v in row.items()
                }
            )


def export_and_check(
    adapter, out_dir: Path, base_model, emb: EmbeddingParams, probe_texts: list[str], info: dict
) -> float:
    """Export, reload, and compare with the library on a few texts: the export's query route and its query
    encoder alone (query/) must reproduce the adapter (embed-stage normalisation and prompts included) to
    EXPORT_TOLERANCE."""
    export_sentence_transformer(
        adapter,
        out_dir,
        base_model,
        emb.query_prompt,
        emb.document_prompt,
        emb.normalize,
        info={"embedder": info.get("model"), "fingerprint": info.get("fingerprint")},
    )
    exported = load_exported(out_dir)
    library = adapt_queries(
        adapter,
        base_model.encode(
            probe_texts, prompt=emb.query_prompt or None, normalize_embeddings=emb.normalize, convert_to_numpy=True
        ),
    )
    diff = max(
        float(np.abs(model_vectors - library).max())
        for model_vectors in (
            exported.encode_query(probe_texts, convert_to_numpy=True),
            load_query_encoder(out_dir).encode(probe_texts, convert_to_numpy=True),
        )
    )
    if not diff <= EXPORT_TOLERANCE:
        raise RagtuneError(
            f"{out_dir}: the export differs from the adapter by {diff:.2e} (> {EXPORT_TOLERANCE}); "
            "this is a bug in ragtune.adapter.export"
        )
    return diff


def save_members(bagged, members_dir: Path, params: TrainParams) -> None:
    """Keep each single-seed adapter of a bagged run (eval reports their test spread); remove stale ones."""
    if members_dir.exists():
        shutil.rmtree(members_dir)
    if len(bagged.members) < 2:
        return
    for seed, member in zip(bagged.seeds, bagged.members):
        save_query_adapter(
            member.adapter,
            members_dir / f"seed-{seed}",
            extra={
                "train": params.model_copy(update={"seed": seed}).model_dump(mode="json"),
                "interpolation": bagged.interpolation,
            },
        )


def warn_if_degenerate(stats: dict) -> None:
    """Questions that are near-copies of their chunk teach nothing and make validation trivial: say so."""
    share = stats.get("near_copy_share", 0.0)
    if share >= 0.2:
        print(
            f"train: warning: {share:.0%} of the training questions are near-copies of their chunk (raw cosine "
            f">= 0.95); validation will look perfect and the adapter learns little. See "
            "data/synthesize/report.json (degenerate questions) and consider llm.ict.style or an LLM backend."
        )


def train_test_folds(params: TrainParams, data, paths: PipelinePaths):
    """k-fold (train.folds): one adapter per fold of the human test questions, saved under
    models/adapter/folds/ with folds.json (question -> fold), which eval reads to score each test question
    with its own fold's adapter. Returns (a summary, the data the shipped adapter trains on: all of them)."""
    from ragtune.adapter.folds import assign_folds, train_folds, with_all_test_questions
    from ragtune.adapter.real_questions import load_real_questions

    test_real = load_real_questions(paths.test, paths.embed_dir / "test.npz", data.corpus_ids, human_only=True)
    if test_real.n_distinct < params.folds:
        raise RagtuneError(
            f"train.folds is {params.folds} but {paths.test} has {test_real.n_distinct} distinct human "
            "test question(s); lower train.folds or set it to 0"
        )
    fold_of = assign_folds(test_real, params.folds, params.seed)
    results = train_folds(params, data, test_real, fold_of)
    root = paths.adapter / FOLDS_DIR
    if root.exists():
        shutil.rmtree(root)
    for fr in results:
        save_query_adapter(fr.result.adapter, root / f"fold-{fr.fold}", extra={"train": params.model_dump(mode="json")})
    write_json(
        root / "folds.json",
        {
            "k": params.folds,
            "seed": params.seed,
            "fold_of": fold_of,
            "real_questions_per_fold": [len(fr.trained_on) for fr in results],
        },
    )
    summary = {
        "k": params.folds,
        "test_questions": len(test_real.ids),
        "val_hit@5": [fr.result.members[0].best["hit@5"] for fr in results],
    }
    return summary, with_all_test_questions(data, test_real)


def main() -> None:
    paths = stage_paths("train", __doc__)
    params, best = load_tuned(load_section("train", TrainParams), paths.best)
    emb = load_section("embedding", EmbeddingParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    info = check_embedder(emb, paths.embed_dir / "info.json")
    data = load_training_data(*paths.training_inputs(), round_trip_top_k=params.round_trip_top_k)
    folds = None  # the k-fold summary for report.json, when train.folds asks for k-fold
    if params.folds:
        folds, data = train_test_folds(params, data, paths)
    probe = [c.text[:300] for c in load_corpus(paths.corpus)[:8]]
    # The shipped sentence-transformers export runs on PyTorch fp32 whatever backend embedded the corpus: the
    # portable artefact (an int8 ONNX backend's vectors are within its guard of these; README, "Embedding backends").
    base_model = load_model(emb.model_copy(update={"backend": "torch", "precision": "fp32"}))

    validation = "real" if data.has_real and folds is None else "synthetic"
    with stage_run(
        "train",
        mlflow_params,
        params={"train": params},
        datasets=paths.datasets(),
        tags={
            "ragtune.tuned_from": (
                read_run_record(paths.tune_dir).get("study", str(paths.best)) if best else "params.yaml"
            ),
            "ragtune.validation": validation,
        },
    ) as run:
        kinds = [params.kind] + (["linear"] if params.compare_linear and params.kind != "linear" else [])
        metrics: dict = {}
        seconds: dict[str, float] = {}  # per kind, for run.json (a wall time is no output of the inputs)
        dirs_written: list[Path] = []
        model_id = None  # the logged model's: its validation metrics are the model's metrics too
        for kind in kinds:
            p = params if kind == params.kind else params.model_copy(update={"kind": kind})
            # k-fold: the shipped adapter trains on every test question, so it validates on synthetic questions
            # (eval's recommendation then selects on those, never on test questions)
            bagged = train_bagged(p, data, "synthetic" if folds is not None else "auto")
            if kind == params.kind:
                shipped = bagged  # the adapter eval's arms use (the linear comparison is not selected from)
            result = bagged.members[0]
            model_dir = paths.adapter if kind == params.kind else paths.linear_adapter
            dirs_written.append(model_dir)
            # `interpolation`: the alpha applied (train.interpolation may say auto)
            save_query_adapter(
                bagged.adapter,
                model_dir,
                extra={"train": p.model_dump(mode="json"), "interpolation": bagged.interpolation},
            )
            if folds is None and (model_dir / FOLDS_DIR).exists():
                shutil.rmtree(model_dir / FOLDS_DIR)  # from an earlier k-fold run: eval would use them
            save_members(bagged, model_dir / MEMBERS_DIR, p)
            diff = export_and_check(bagged.adapter, model_dir / EXPORT_DIR, base_model, emb, probe, info)
            if run.run_id is not None and kind == params.kind:  # run.active
                model = log_query_encoder(
                    run.run_id,
                    model_dir / EXPORT_DIR,
                    bagged.adapter.config.dim,
                    [probe[0][:120]],
                    mlflow_params.register_model_name,
                    pipeline_tags("train"),
                )
                model_id = model.model_id
                log.info(
                    "train: logged the adapter as MLflow model %s%s",
                    model.model_uri,
                    f" (registered {mlflow_params.register_model_name} version {model.registered_model_version})"
                    if mlflow_params.register_model_name
                    else "",
                )
            summary = {
                **bagged.summary(),
                "kind": kind,
                "loss": p.loss,
                "bagging": len(bagged.members),
                "export_max_abs_diff": diff,
                "export_needs_trust_remote_code": needs_remote_code(bagged.adapter),
            }
            prefix = "" if kind == params.kind else "linear_"
            run.log_metrics(
                {
                    f"{prefix}{k}": v
                    for k, v in summary.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                },
                model_id=model_id if kind == params.kind else None,
                dataset=paths.questions,
            )
            seconds[kind] = summary.pop("seconds")
            if kind == params.kind:
                metrics.update(summary)
                write_history(paths.train_dir / "history.csv", result.history)
            else:
                metrics["linear"] = summary
                write_history(paths.linear_adapter / "history.csv", result.history)
            for key in ("train_loss", "val_hit@5", "val_mrr@10", "seconds"):
                values = [row[key] for row in result.history[1:]]
                run.log_points([(f"{prefix}epoch_{key}", v, i + 1) for i, v in enumerate(values) if math.isfinite(v)])
            run.log_artifact(model_dir / "adapter.pt", f"{prefix}adapter")
            run.log_artifact(model_dir / "config.json", f"{prefix}adapter")
        run.log_artifact(paths.train_dir / "history.csv")

    if folds is not None:
        metrics["folds"] = folds
    if paths.linear_adapter not in dirs_written and paths.linear_adapter.exists():
        shutil.rmtree(paths.linear_adapter)  # a comparison from earlier params: eval would report it as current
    split = shipped.splits[0]
    if split.val_real is not None:
        assert data.real is not None  # real validation questions are drawn from data.real
        real_ids = data.real.ids
        val_ids = [real_ids[i] for i in split.val_real]
    else:
        val_ids = [data.question_ids[i] for i in split.val]
    # Real validation: the adapted vectors of every real question some member held out, from the members that
    # never trained on it (before any refit); eval selects on these questions with them (held_out.npz).
    save_held_out(paths.held_out, held_out_vectors(shipped, data))
    metrics.update(
        validation=validation,
        n_train_questions=len(dict.fromkeys(data.question_ids[i] for i in split.train)),
        n_val_questions=len(val_ids),
        dropped_test_chunk_questions=data.dropped.get("test_chunk_questions", 0),
        dropped_round_trip=data.dropped.get("round_trip", 0),
        **data.stats,
        tuned_trial=best.get("trial"),
    )
    warn_if_degenerate(data.stats)
    # Eval's synthetic validation set is member 0's; with bagging the other members trained on some of it.
    # `validation: real`: the val ids are real questions (data/fetch/train_questions.jsonl); eval validates on
    # every real question in held_out.npz instead, scoring the adapter with the members that held it out.
    refit = any(m.refit for m in shipped.members)
    write_json(
        paths.split,
        {
            "validation": validation,
            "refit": refit,
            "train": list(dict.fromkeys(data.question_ids[i] for i in split.train)),
            "val": val_ids,
            "bagging": len(shipped.members),
            "seeds": shipped.seeds,
        },
    )
    write_json(paths.train_dir / "report.json", metrics)
    write_json(paths.train_dir / "metrics.json", {k: metrics[k] for k in HEADLINE})
    write_run_record(
        paths.train_dir, {"seconds": seconds[params.kind], "seconds_by_kind": seconds, "mlflow_run_id": run.run_id}
    )
    print(
        f"train: {params.kind} adapter, epoch {metrics['best_epoch']} of {metrics['epochs_run']}: "
        f"val Hit@5 {metrics['val_hit@5']:.4f} (raw cosine {metrics['baseline_val_hit@5']:.4f}), "
        f"{seconds[params.kind]:.1f} s"
    )


if __name__ == "__main__":
    run_main(main)
