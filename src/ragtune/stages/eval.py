"""eval: raw cosine, the trained adapter(s) and BM25 on the same test and validation questions, with
bootstrap intervals and paired tests; report.json (all of it), metrics.json (the headline numbers DVC compares),
hit_rate_at_k.csv, per_question.csv and PNGs; and models/hybrid/, the hybrid arm as a deployable artefact."""

from ragtune.deploy.artefact import write_hybrid_artefact
from ragtune.evaluation.arms import HybridArm
from ragtune.evaluation.inputs import _optional_json
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.report import flat_metrics, write_eval_outputs
from ragtune.evaluation.run import prepare_eval, run_eval
from ragtune.params import MlflowParams, load_section
from ragtune.stage import log_under_train_run, run_main, stage_paths


def main() -> None:
    paths = stage_paths("eval", __doc__)
    params = load_section("eval", EvalParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    inputs = prepare_eval(paths, params)
    result = run_eval(paths, params, inputs=inputs)
    written = write_eval_outputs(result, params, paths.eval_dir)
    hybrid = next((a for a in inputs.arms if isinstance(a, HybridArm) and a.name == "hybrid"), None)
    write_hybrid_artefact(
        paths.hybrid,
        inputs.corpus,
        hybrid,
        params.bm25,
        inputs.source,
        _optional_json(paths.embed_dir / "info.json"),
        paths.adapter / "sentence_transformer",
        params.depth,
        reason_off="eval.hybrid.enabled or eval.bm25.enabled is false",
    )

    flat = flat_metrics({k: v for k, v in result.metrics.items() if k != "setup"})
    protocol = result.metrics["setup"].get("protocol")
    # The headline test numbers also tag the registered model versions of the train run.
    headline = {
        k: v
        for k, v in flat.items()
        if k.startswith("test.")
        and k.count(".") == 2
        and k.endswith((f".hit_at_{params.main_k}", f".mrr_at_{params.mrr_k}"))
    }
    log_under_train_run(
        "eval",
        mlflow_params,
        {"eval": params},
        {"ragtune.protocol": protocol} if protocol else {},
        flat,
        written,
        paths,
        headline,
        datasets=("corpus", "test", "questions", "real_questions"),
    )

    main_k = params.main_k
    for set_name in ("test", "test_documents", "val"):
        block = result.metrics.get(set_name)
        if not block:
            continue
        arms = ", ".join(f"{a} {m[f'hit@{main_k}']:.1%}" for a, m in block["arms"].items())
        print(f"eval {set_name} ({block['questions']} {block['origin']}): Hit@{main_k} {arms}")
        if "adapter_vs_cosine" in block:
            print(f"  {block['adapter_vs_cosine']['verdict']}")
    if "recommendation" in result.metrics:
        print(f"eval recommendation: {result.metrics['recommendation']['note']}")


if __name__ == "__main__":
    run_main(main)
