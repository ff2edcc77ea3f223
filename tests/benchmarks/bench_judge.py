"""Judge cost with the offline default LLM (SmolLM2-135M through llama.cpp): seconds per answer and per
judge call, tokens per call, for 1 and 2 llama.cpp threads, and the stage time that implies for the
default number of judged questions. This is what sizes `judge.max_questions` for the 20-minute
`make run` budget.

Questions come from the default corpus (data/fetch/corpus.jsonl) when fetched, else generated
passages: the question is a chunk's title, cosine's context that chunk and its next two, the
adapter's that chunk and two others, the reference the chunk's text. No cache is reused.
"""

import tempfile
import time
from pathlib import Path

from ragtune.cache import ContentCache
from ragtune.judge.calls import make_complete
from ragtune.judge.config import JudgeParams
from ragtune.judge.items import JudgeItem
from ragtune.judge.prompts import build_reference, render_context
from ragtune.judge.run import judge_items
from ragtune.llm import LlmParams, RunStats, make_backend
from ragtune.llm.prompts import load_prompt
from ragtune.params import load_section
from ragtune.records import load_corpus

from .common import save

N_QUESTIONS = 2


def chunks() -> list[tuple[str, str]]:
    corpus = Path("data/fetch/corpus.jsonl")
    if corpus.is_file():
        return [(c.title or c.id, c.text) for c in load_corpus(corpus)][:200]
    return [
        (
            f"Obligations of operators {i}",
            f"Operators shall report incident type {i} to the competent "
            f"authority within {i + 24} hours and keep records of it for five years. " * 3,
        )
        for i in range(200)
    ]


def items(params: JudgeParams) -> list[JudgeItem]:
    rows = chunks()
    out = []
    for q in range(N_QUESTIONS):
        i = 17 * q + 3
        picks = {"cosine": [i, i + 1, i + 2], "adapter": [i, i + 40, i + 80]}
        out.append(
            JudgeItem(
                question_id=f"b{q}",
                question=rows[i][0],
                reference=build_reference(None, [rows[i][0]], [rows[i][1]], params.max_reference_chars),
                chunk_ids={arm: [str(r) for r in rs] for arm, rs in picks.items()},
                context={
                    arm: render_context([rows[r][0] for r in rs], [rows[r][1] for r in rs], params.max_chunk_chars)
                    for arm, rs in picks.items()
                },
            )
        )
    return out


def main() -> None:
    try:
        params = load_section("judge", JudgeParams)
        llm = load_section("llm", LlmParams)
    except Exception:  # noqa: BLE001 - outside the repository root: defaults
        params, llm = JudgeParams(), LlmParams()
    llm = llm.model_copy(update={"backend": "llamacpp"})
    params = params.model_copy(update={"bootstrap_resamples": 200})
    work = items(params)
    answer_prompt, judge_prompt = load_prompt(params.answer_prompt), load_prompt(params.judge_prompt)
    results = {"questions": N_QUESTIONS, "judged_by_default": params.max_questions, "runs": {}}
    for threads in (1, 2):
        run_llm = llm.model_copy(update={"llamacpp": llm.llamacpp.model_copy(update={"threads": threads})})
        backend = make_backend(run_llm)
        backend.server()  # load outside the timing
        stats = RunStats()
        with tempfile.TemporaryDirectory() as tmp, ContentCache(Path(tmp) / "llm.sqlite") as cache:
            t0 = time.perf_counter()
            result = judge_items(work, params, make_complete(backend, cache, stats), None, answer_prompt, judge_prompt)
            wall = time.perf_counter() - t0
        backend.close()
        per_question = wall / N_QUESTIONS
        results["runs"][f"threads_{threads}"] = {
            "seconds": round(wall, 1),
            "calls": stats.calls,
            "seconds_per_call": round(wall / max(1, stats.calls), 2),
            "tokens_in_per_call": round(stats.usage.tokens_in / max(1, stats.calls)),
            "tokens_out_per_call": round(stats.usage.tokens_out / max(1, stats.calls)),
            "failures": result.metrics["failures"]["by_reason"],
            "seconds_per_question": round(per_question, 1),
            "projected_stage_seconds": round(per_question * (params.max_questions or 0), 0) or None,
        }
    save("judge", results)
