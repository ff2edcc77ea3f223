"""judge: short answers from the cosine and adapter top-k contexts, scored 1-5 on six criteria by an
LLM judge in both display orders, plus token F1 and embedding similarity; report.json, metrics.json (its
headline numbers), answers.jsonl, scores.csv, PNGs, MLflow, and run.json (calls, cache hits, cost and seconds
of this run; not committed). Every LLM reply goes through data/cache/judge_llm.sqlite: a rerun costs no calls."""

from ragtune.judge.config import JudgeParams
from ragtune.judge.outputs import flat_judge_metrics, split_usage, write_judge_outputs
from ragtune.judge.run import run_judge
from ragtune.llm import LlmParams
from ragtune.params import EmbeddingParams, MlflowParams, load_section
from ragtune.stage import log_under_train_run, run_main, stage_paths, write_run_record


def main() -> None:
    paths = stage_paths("judge", __doc__)
    params = load_section("judge", JudgeParams)
    llm_params = load_section("llm", LlmParams)
    embedding_params = load_section("embedding", EmbeddingParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    result = run_judge(paths, params, llm_params, embedding_params, paths.judge_llm_cache, paths.judge_embedding_cache)
    written = write_judge_outputs(result, paths.judge_dir)
    m = result.metrics
    write_run_record(paths.judge_dir, split_usage(m)[1])
    log_under_train_run(
        "judge",
        mlflow_params,
        {"judge": params, "llm": llm_params},
        {"ragtune.llm_backend": m["setup"]["backend"]},
        flat_judge_metrics(m),
        written,
        paths,
        datasets=("corpus", "test"),
    )

    s, arms, usage = m["setup"], m["arms"], m["usage"]
    agreement = m["order_agreement"].get("overall_winner_rate")
    cost = "unknown" if usage.get("cost_usd") is None else f"${usage['cost_usd']:.4f}"
    print(
        f"judge ({s['backend']} {s['model']}): {s['judged']}/{s['questions']} questions judged, "
        f"overall cosine {_fmt(arms['cosine']['overall'])} vs adapter {_fmt(arms['adapter']['overall'])}; "
        f"token F1 {_fmt(arms['cosine']['token_f1'])} vs {_fmt(arms['adapter']['token_f1'])}; "
        f"orders agree {_fmt(agreement, pct=True)}; {m['failures']['total']} failures; "
        f"{usage['calls']} calls ({usage['cache_hits']} cached), cost {cost}"
    )
    if m.get("warning"):
        print(f"judge: WARNING: {m['warning']}")


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0%}" if pct else f"{x:.2f}"


if __name__ == "__main__":
    run_main(main)
