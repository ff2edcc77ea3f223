"""Judge: answers built on each retriever's top-k chunks, scored by an LLM judge with swapped order.

For every judged test question and each arm (`cosine`: raw embeddings; `adapter`: the trained query
adapter), the top-k chunks go into one context and the same LLM, with the same prompt, writes a short
answer from that context only. A judge then scores both answers of a question side by side, 1-5 on six
criteria, against the reference: the benchmark's expert answer where there is one (legal-rag-bench),
otherwise the text of the question's relevant chunks (the EU default).

Position bias: each pair is judged twice, cosine's answer shown first and then adapter's answer shown
first; an answer's score is the mean over both orders, and the share of questions on which the two
orders prefer the same answer (`order_agreement`) says how far the judge can be trusted. A judge reply
that breaks the schema is retried with the validation error appended, then recorded as a failure and
counted; a failed question is never silently dropped. Token F1 and embedding similarity to the same
reference need no LLM and come alongside.

Shapes: judge scores are held as `position_scores` (n_questions, n_orders, 2 positions, n_metrics) and
`arm_scores` (n_questions, n_orders, n_arms, n_metrics), NaN where a judgement failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import round_metric
from ..llm.prompts import Prompt
from ..paths import PipelinePaths
from .aggregate import (
    identical_pair_consistency,
    judged_mask,
    mean_over_orders,
    order_agreement,
    position_preference,
    summarise_arms,
    to_arm_scores,
)
from .calls import Complete, LlmCall, complete_with_retries, make_complete
from .config import JudgeParams, judge_llm_params
from .items import JudgeItem, build_items
from .outputs import JudgeResult, answer_rows, judge_warning, score_rows
from .prompts import (
    ANSWER_TOOL,
    ARMS,
    JUDGE_METRICS,
    JUDGE_TOOL,
    ORDER_NAMES,
    ORDERS,
    TEXT_METRICS,
    answer_chars,
    answer_schema,
    judge_schema,
    load_judge_prompts,
    parse_answer,
    parse_judgement,
)

log = logging.getLogger(__name__)


def answer_calls(items: Sequence[JudgeItem], prompt: Prompt, params: JudgeParams) -> list[LlmCall]:
    """One answer request per (question, arm), in item order then ARMS order."""
    return [
        LlmCall(
            "answer",
            f"{it.question_id}/{arm}",
            prompt.system,
            prompt.render(context=it.context[arm], question=it.question),
            ANSWER_TOOL,
            answer_schema(answer_chars(params.answer_max_tokens)),
            params.answer_max_tokens,
            params.answer_temperature,
            prompt.sha256,
            params.answer_repeat_penalty,
        )
        for it in items
        for arm in ARMS
    ]


def judge_calls(
    items: Sequence[JudgeItem], answers: Mapping[tuple[str, str], str], prompt: Prompt, params: JudgeParams
) -> list[tuple[int, int, LlmCall]]:
    """(item index, order index, call) for every item whose two answers exist, in each display order."""
    out = []
    orders = ORDERS if params.swap_order else ORDERS[:1]
    for i, it in enumerate(items):
        if (it.question_id, ARMS[0]) not in answers or (it.question_id, ARMS[1]) not in answers:
            continue
        for o, (first, second) in enumerate(orders):
            user = prompt.render(
                question=it.question,
                reference=it.reference.text,
                reference_kind=it.reference.kind,
                answer_1=answers[(it.question_id, first)],
                answer_2=answers[(it.question_id, second)],
            )
            out.append(
                (
                    i,
                    o,
                    LlmCall(
                        "judge",
                        f"{it.question_id}/{ORDER_NAMES[o]}",
                        prompt.system,
                        user,
                        JUDGE_TOOL,
                        judge_schema(),
                        params.judge_max_tokens,
                        0.0,
                        prompt.sha256,
                    ),
                )
            )
    return out


EmbedTexts = Callable[[Sequence[str]], np.ndarray]


def _failure(question_id: str, kind: str, item: str, reason: str | None, detail: str | None, attempts: int) -> dict:
    """One row of the report's `failures.items`: what failed, why, after how many attempts."""
    return {
        "question_id": question_id,
        "kind": kind,
        "item": item,
        "reason": reason,
        "detail": detail,
        "attempts": attempts,
    }


@dataclass
class _Answers:
    """Both arms' answers: (question id, arm) -> text and -> whether the context sufficed; failed calls."""

    text: dict[tuple[str, str], str] = field(default_factory=dict)
    sufficient: dict[tuple[str, str], bool] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0

    def both(self, question_id: str) -> bool:
        return (question_id, ARMS[0]) in self.text and (question_id, ARMS[1]) in self.text


def _answer(items: Sequence[JudgeItem], prompt: Prompt, params: JudgeParams, complete: Complete) -> _Answers:
    """Step 1: one answer per (question, arm), each from its arm's context only."""
    calls = answer_calls(items, prompt, params)
    max_chars = answer_chars(params.answer_max_tokens)
    outcomes = complete_with_retries(calls, lambda obj: parse_answer(obj, max_chars), complete, params.schema_retries)
    out = _Answers()
    for c, (call, result) in enumerate(zip(calls, outcomes)):
        qid, arm = items[c // len(ARMS)].question_id, ARMS[c % len(ARMS)]
        out.attempts += result.attempts
        if result.ok:
            out.text[(qid, arm)] = result.value.answer
            out.sufficient[(qid, arm)] = result.value.context_sufficient
        else:
            out.failures.append(_failure(qid, "answer", call.item, result.reason, result.detail, result.attempts))
    return out


def _judge(
    items: Sequence[JudgeItem], answers: _Answers, prompt: Prompt, params: JudgeParams, complete: Complete
) -> tuple[np.ndarray, list[dict[str, Any]], int]:
    """Step 2: each pair with both answers judged in each display order. Returns `position_scores`
    (n, n_orders, 2 positions, M), NaN where not judged, the failures (a question without both answers
    once, as `no_answer`) and the attempts made."""
    n_orders = 2 if params.swap_order else 1
    position_scores = np.full((len(items), n_orders, 2, len(JUDGE_METRICS)), np.nan)
    calls = judge_calls(items, answers.text, prompt, params)
    outcomes = complete_with_retries([c for _, _, c in calls], parse_judgement, complete, params.schema_retries)
    failures: list[dict[str, Any]] = []
    attempts = 0
    for (i, o, call), result in zip(calls, outcomes):
        attempts += result.attempts
        if result.ok:
            position_scores[i, o] = result.value
        else:
            failures.append(
                _failure(items[i].question_id, "judge", call.item, result.reason, result.detail, result.attempts)
            )
    for it in items:  # a question without both answers is not judged: say why, once per question
        if not answers.both(it.question_id):
            failures.append(
                _failure(
                    it.question_id,
                    "judge",
                    f"{it.question_id}/*",
                    "no_answer",
                    "an answer failed, so the pair was not judged",
                    0,
                )
            )
    return position_scores, failures, attempts


def _text_scores(
    items: Sequence[JudgeItem], answers: Mapping[tuple[str, str], str], embed_texts: EmbedTexts | None
) -> np.ndarray:
    """Step 3: scores that need no LLM, where an answer exists: (n, arms, TEXT_METRICS), NaN elsewhere (and
    embedding similarity NaN without `embed_texts`)."""
    from .text_metrics import rowwise_cosine, token_f1_many

    text_values = np.full((len(items), len(ARMS), len(TEXT_METRICS)), np.nan)
    keys = [(i, a) for i, it in enumerate(items) for a, arm in enumerate(ARMS) if (it.question_id, arm) in answers]
    if keys:
        preds = [answers[(items[i].question_id, ARMS[a])] for i, a in keys]
        refs = [items[i].reference.text for i, _ in keys]
        rows, cols = np.array([k[0] for k in keys]), np.array([k[1] for k in keys])
        text_values[rows, cols, 0] = token_f1_many(preds, refs)
        if embed_texts is not None:
            emb = embed_texts([*preds, *refs])
            text_values[rows, cols, 1] = rowwise_cosine(emb[: len(preds)], emb[len(preds) :])
    return text_values


def _identical_answers(items: Sequence[JudgeItem], answers: Mapping[tuple[str, str], str]) -> np.ndarray:
    """(n,) bool: both arms answered, with the same text."""
    return np.array(
        [
            answers.get((it.question_id, ARMS[0])) is not None
            and answers.get((it.question_id, ARMS[0])) == answers.get((it.question_id, ARMS[1]))
            for it in items
        ],
        dtype=bool,
    )


def _failure_counts(failures: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    by_reason: dict[str, int] = {}
    for f in failures:
        by_reason[f"{f['kind']}:{f['reason']}"] = by_reason.get(f"{f['kind']}:{f['reason']}", 0) + 1
    return dict(sorted(by_reason.items()))


def judge_items(
    items: Sequence[JudgeItem],
    params: JudgeParams,
    complete: Complete,
    embed_texts: EmbedTexts | None,
    answer_prompt: Prompt,
    judge_prompt: Prompt,
    setup: Mapping[str, Any] | None = None,
) -> JudgeResult:
    """Answers for both arms, the swapped-order judgements, the LLM-free scores and the summary."""
    n = len(items)
    n_orders = 2 if params.swap_order else 1
    answers = _answer(items, answer_prompt, params, complete)
    position_scores, judge_failures, judge_attempts = _judge(items, answers, judge_prompt, params, complete)
    failures = answers.failures + judge_failures
    arm_scores = to_arm_scores(position_scores, ORDERS[:n_orders])
    judged = judged_mask(arm_scores)
    per_answer = mean_over_orders(arm_scores)  # (n, arms, M), NaN where not judged
    text_values = _text_scores(items, answers.text, embed_texts)

    # 4. summary
    values = np.concatenate([per_answer, text_values], axis=2)
    names = [*JUDGE_METRICS, *TEXT_METRICS]
    valid = ~np.isnan(values).any(axis=1)  # (n, M): both arms have the value
    arms_summary, paired = summarise_arms(
        values, valid, names, params.bootstrap_resamples, params.confidence, params.seed
    )
    for arm in ARMS:
        flags = [answers.sufficient[key] for it in items if (key := (it.question_id, arm)) in answers.sufficient]
        arms_summary[arm]["context_insufficient_rate"] = round_metric(float(1 - np.mean(flags))) if flags else None
    identical = _identical_answers(items, answers.text)
    metrics: dict[str, Any] = {
        "setup": {
            **(setup or {}),
            "questions": n,
            "judged": int(judged.sum()),
            "same_context": int(sum(it.chunk_ids[ARMS[0]] == it.chunk_ids[ARMS[1]] for it in items)),
            "identical_answers": int(identical.sum()),
            "references_truncated": sum(it.reference.truncated for it in items),
            "top_k": params.top_k,
            "swap_order": params.swap_order,
            "seed": params.seed,
            "answer_prompt": answer_prompt.name,
            "judge_prompt": judge_prompt.name,
            "bootstrap_resamples": params.bootstrap_resamples,
            "confidence": params.confidence,
        },
        "arms": arms_summary,
        "adapter_vs_cosine": paired,
        # Identical answers make both orders one request: kept out of agreement and position bias.
        "order_agreement": order_agreement(arm_scores, include=~identical),
        "position_preference": position_preference(position_scores, include=~identical),
        "identical_answers": identical_pair_consistency(position_scores, identical),
        "failures": {
            "total": len(failures),
            "by_reason": _failure_counts(failures),
            "questions_not_judged": int(n - judged.sum()),
            "attempts": {"answer": answers.attempts, "judge": judge_attempts},
        },
    }
    result = JudgeResult(metrics)
    result.answers = answer_rows(items, answers.text, answers.sufficient, failures)
    result.scores = score_rows(items, arm_scores, per_answer, text_values, judged)
    result.metrics["failures"]["items"] = failures
    return result


def run_judge(
    paths: PipelinePaths,
    params: JudgeParams,
    llm_params: Any,
    embedding_params: Any,
    llm_cache_path: Path,
    embedding_cache_path: Path | None,
    load_adapter: Callable[[Path], Any] | None = None,
    backend: Any = None,
    embedding_model: Any = None,
) -> JudgeResult:
    """The judge stage's work: inputs -> answers -> judgements -> metrics. The backend comes from
    `llm_params` (its API key or model file is checked before any work); `embedding_cache_path` None
    skips embedding similarity."""
    import contextlib

    from ..cache import ContentCache
    from ..llm import RunStats, make_backend

    llm_params = judge_llm_params(llm_params, params)
    answer_prompt, judge_prompt = load_judge_prompts(params.answer_prompt, params.judge_prompt)
    backend = backend if backend is not None else make_backend(llm_params)
    items, setup = build_items(paths, params, load_adapter)
    setup = {
        "backend": backend.name,
        "model": backend.model,
        # the penalty the answers were written with; null where the backend has none to send
        "answer_repeat_penalty": params.answer_repeat_penalty if backend.takes_repeat_penalty else None,
        **setup,
    }
    stats = RunStats()
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(ContentCache(llm_cache_path))
        embed_texts: EmbedTexts | None = None
        if embedding_cache_path is not None:
            embedder: list[Any] = []

            def embed_texts(texts: Sequence[str]) -> np.ndarray:
                if not embedder:  # loaded only when there are answers to embed
                    from ..embedding.embedder import CachedEmbedder

                    emb_cache = stack.enter_context(ContentCache(embedding_cache_path))
                    embedder.append(CachedEmbedder(embedding_params, emb_cache, model=embedding_model))
                return embedder[0].encode_documents(list(texts), desc="answers and references")

        try:
            result = judge_items(
                items,
                params,
                make_complete(backend, cache, stats),
                embed_texts,
                answer_prompt,
                judge_prompt,
                setup=setup,
            )
        finally:
            backend.close()
    result.metrics["usage"] = stats.as_dict()
    result.metrics["warning"] = judge_warning(result.metrics, backend.name, backend.model)
    return result
