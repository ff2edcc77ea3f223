"""synthesize: training questions (and, for held-out chunks no test question covers, test questions)
from the LLM backend in params.llm, through the per-chunk cache data/cache/llm.sqlite.

Writes data/synthesize/questions.jsonl (training), data/synthesize/test.jsonl (the pipeline's test set:
fetch's test questions followed by the synthetic ones, `origin: synthetic`), report.json (the headline numbers
in metrics.json) and run.json (this run's calls, cache hits, tokens, cost and seconds; not committed).

SIGTERM or Ctrl-C stops taking new chunks, lets the calls in flight finish and commits them, then
exits non-zero: a rerun resumes where this one stopped and pays for no chunk twice.
"""

import signal
import threading
from typing import Any

from tqdm.auto import tqdm

from ragtune.cache import ContentCache
from ragtune.errors import RagtuneError
from ragtune.io import write_json
from ragtune.llm import LlmParams, make_backend
from ragtune.llm.runner import CONTENT_FAILURES
from ragtune.params import MlflowParams, load_section
from ragtune.records import load_corpus, load_test, load_train_questions, write_jsonl
from ragtune.stage import run_main, split_run_facts, stage_paths, write_run_record
from ragtune.synthesis.filters import degenerate_warning
from ragtune.synthesis.run import SynthesizeParams, check_no_leak, synthesize
from ragtune.tracking import stage_run

# What this run did rather than what it made: a rerun on a warm cache makes no calls and pays nothing, for the
# same questions (dataset_cost_usd, in report.json, is what the whole question set cost).
RUN_FACTS = (
    "cache_hits",
    "journal_hits",
    "cache_misses",
    "calls",
    "retries",
    "tokens_in",
    "tokens_out",
    "tokens_cache_read",
    "tokens_cache_write",
    "cost_usd",
    "failures_retried_from_earlier_runs",
    "failures_kept_from_earlier_runs",
    "seconds",
    "generate_seconds",
    "seconds_per_chunk",
)
# Each a column of `dvc exp show`; the shares are in report.json.
HEADLINE = ("questions_kept", "failures", "dataset_cost_usd")


def _numeric(report: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in report.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    return out


def main() -> None:
    paths = stage_paths("synthesize", __doc__)
    llm_params = load_section("llm", LlmParams)
    params = load_section("synthesize", SynthesizeParams)
    mlflow_params = load_section("mlflow", MlflowParams)
    chunks = load_corpus(paths.corpus)
    chunk_ids = [c.id for c in chunks]
    tests = load_test(paths.fetch_test, corpus_ids=chunk_ids)
    real_path = paths.real_questions  # fetch always writes it; absent (an older fetch): none
    n_real = len(load_train_questions(real_path, tests, corpus_ids=chunk_ids)) if real_path.is_file() else 0
    # `llm.ict.template_share: auto` frames none of the pseudo-queries when real questions show the query form.
    llm_params = llm_params.model_copy(update={"ict": llm_params.ict.for_real_questions(n_real)})
    backend = make_backend(llm_params)  # checks the API key or the model file before any work

    stop = threading.Event()

    def _stop(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print(
            f"\nsynthesize: {signal.Signals(signum).name}: finishing the calls in flight, then stopping "
            "(again to abort)",
            flush=True,
        )
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    with ContentCache(paths.llm_cache) as cache:
        # disable None: a progress bar on a terminal only, none in logs
        bar_args: dict[str, Any] = {"unit": "chunk", "total": None, "dynamic_ncols": True, "disable": None}
        with tqdm(desc=f"synthesize ({backend.name})", **bar_args) as bar:
            outcome = synthesize(chunks, tests, backend, cache, params, stop=stop, progress=bar)
    backend.close()
    outcome.report["journal_hits"] = cache.journal_hits  # answers an earlier, unfinished run paid for
    outcome.report["real_training_questions"] = n_real
    if llm_params.backend == "ict":  # the share that ran (`auto` resolved)
        outcome.report["ict_template_share"] = llm_params.ict.template_share
    committed, facts = split_run_facts(outcome.report, RUN_FACTS)
    write_json(paths.synthesize_dir / "report.json", committed)
    write_json(paths.synthesize_dir / "metrics.json", {k: committed[k] for k in HEADLINE})
    write_run_record(paths.synthesize_dir, facts)
    report = outcome.report  # all of it, this run's facts included, for MLflow and the log
    if report["interrupted"]:
        raise RagtuneError(
            f"synthesize: stopped with {report['not_done']} chunks not done; every finished chunk is kept "
            f"({paths.llm_cache} and its journal {cache.journal}), so a rerun resumes from here, "
            "with dvc repro or dvc exp run"
        )
    check_no_leak(outcome.questions, outcome.forbidden_chunk_ids)
    write_jsonl(paths.questions, outcome.questions)
    # The pipeline's whole test set: fetch's questions, then synthetic ones for held-out chunks no question covers.
    write_jsonl(paths.test, [*tests, *outcome.test_questions])

    with stage_run(
        "synthesize",
        mlflow_params,
        params={"llm": llm_params, "synthesize": params},
        tags={"ragtune.llm_backend": backend.name, "ragtune.protocol": params.test_chunks},
        datasets=[(paths.corpus, "corpus"), (paths.fetch_test, "test")],
    ) as run:
        run.log_metrics(_numeric(report))
        run.log_artifact(paths.synthesize_dir / "report.json")

    cost = "unknown" if report["cost_usd"] is None else f"${report['cost_usd']:.4f}"
    print(
        f"synthesize: {report['questions_kept']} questions for {report['chunks_with_questions']}/"
        f"{report['chunks_requested']} chunks ({report['questions_dropped']} dropped), "
        f"{report['test_questions_kept']} synthetic test questions; {report['calls']} calls, "
        f"{report['cache_hits']} cache hits ({report['journal_hits']} from the journal), {report['failures']} "
        f"failures, cost {cost}, {report['seconds']} s"
    )
    warning = degenerate_warning(report["degenerate_questions"], report["degenerate_share"])
    if warning:
        print(f"synthesize: WARNING: {warning}")
    if report["failures"]:
        print(
            f"synthesize: failures by reason {report['failures_by_reason']}; the next run retries them, except "
            f"a deterministic backend's content failures ({', '.join(sorted(CONTENT_FAILURES))}), which are kept"
        )
    if outcome.failed_share > params.max_failed_share:
        raise RagtuneError(
            f"synthesize: {outcome.failed_share:.0%} of calls failed (more than "
            f"synthesize.max_failed_share={params.max_failed_share}); see {paths.synthesize_dir / 'report.json'}. "
            "Outputs are written; rerun to retry the failed chunks"
        )


if __name__ == "__main__":
    run_main(main)
