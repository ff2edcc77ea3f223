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
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..labels import origin_label, round_metric
from ..llm.prompts import Prompt
from ..params import Section
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
from .outputs import answer_rows, judge_warning, score_rows
from .prompts import (
    ANSWER_TOOL,
    ARMS,
    JUDGE_METRICS,
    JUDGE_TOOL,
    ORDER_NAMES,
    ORDERS,
    TEXT_METRICS,
    Reference,
    answer_chars,
    answer_schema,
    build_reference,
    judge_schema,
    load_judge_prompts,
    parse_answer,
    parse_judgement,
    render_context,
)

log = logging.getLogger(__name__)


class JudgeParams(Section):
    """How many questions are judged, how answers are built, and the statistics of the report.
    The LLM itself (backend, model, prices) comes from the shared `llm` section."""

    # Defaults fit the offline budget (SmolLM2 on 2 cores, ~4 minutes); with Claude, raise them.
    max_questions: int | None = Field(8, ge=1, le=100_000)  # seeded subset of the test set; null: all
    # `ict` (the default question generator) is no language model: the judge then uses this backend.
    fallback_backend: Literal["llamacpp", "anthropic"] = "llamacpp"
    seed: int = 42
    top_k: int = Field(3, ge=1, le=50)  # chunks in each answer's context
    max_chunk_chars: int = Field(600, ge=100, le=100_000)  # each context chunk is cut to this length
    max_reference_chars: int = Field(1500, ge=100, le=200_000)  # relevant-chunk references are cut here
    answer_max_tokens: int = Field(150, ge=16, le=8192)  # also bounds the answer: 3 chars a token
    judge_max_tokens: int = Field(256, ge=32, le=8192)
    answer_temperature: float = Field(0.0, ge=0.0, le=2.0)  # the judge itself always runs at 0
    # Local models only (llamacpp; the Anthropic API has no such setting, so it is neither sent nor keyed
    # there). Above 1 it penalises tokens repeated in the last 64, which stops the loops a small model falls
    # into at temperature 0. Answers only: on the judge's scores it would push repeated integers apart.
    answer_repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    swap_order: bool = True  # judge each pair in both orders (position-bias control)
    schema_retries: int = Field(1, ge=0, le=5)  # re-asks after a reply that breaks the schema
    answer_prompt: str = Field("answer_v1", pattern=r"^[A-Za-z0-9_.-]+$")  # src/ragtune/prompts/<name>.txt
    judge_prompt: str = Field("judge_v1", pattern=r"^[A-Za-z0-9_.-]+$")
    bootstrap_resamples: int = Field(10_000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


def select_questions(n_total: int, max_questions: int | None, seed: int) -> np.ndarray:
    """Row indices of the judged questions: all, or a seeded sample of `max_questions`, in file order."""
    if max_questions is None or max_questions >= n_total:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=max_questions, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class JudgeItem:
    """One judged question with both arms' retrieved chunks, as the stage hands it to `judge_items`."""

    question_id: str
    question: str
    reference: Reference
    chunk_ids: Mapping[str, list[str]]  # arm -> retrieved chunk ids, best first
    context: Mapping[str, str]  # arm -> rendered context


@dataclass
class JudgeResult:
    metrics: dict[str, Any]
    answers: list[dict[str, Any]] = field(default_factory=list)  # one row per (question, arm)
    scores: list[dict[str, Any]] = field(default_factory=list)  # one row per (question, arm)


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
    from .text_metrics import rowwise_cosine, token_f1_many

    n = len(items)
    n_orders = 2 if params.swap_order else 1
    failures: list[dict[str, Any]] = []

    # 1. answers
    a_calls = answer_calls(items, answer_prompt, params)
    max_chars = answer_chars(params.answer_max_tokens)
    a_out = complete_with_retries(a_calls, lambda obj: parse_answer(obj, max_chars), complete, params.schema_retries)
    answers: dict[tuple[str, str], str] = {}
    sufficient: dict[tuple[str, str], bool] = {}
    attempts: dict[str, int] = {"answer": 0, "judge": 0}
    for c, (call, out) in enumerate(zip(a_calls, a_out)):
        qid, arm = items[c // len(ARMS)].question_id, ARMS[c % len(ARMS)]
        attempts["answer"] += out.attempts
        if out.ok:
            answers[(qid, arm)] = out.value.answer
            sufficient[(qid, arm)] = out.value.context_sufficient
        else:
            failures.append(
                {
                    "question_id": qid,
                    "kind": "answer",
                    "item": call.item,
                    "reason": out.reason,
                    "detail": out.detail,
                    "attempts": out.attempts,
                }
            )

    # 2. judgements in both orders
    position_scores = np.full((n, n_orders, 2, len(JUDGE_METRICS)), np.nan)
    j_calls = judge_calls(items, answers, judge_prompt, params)
    j_out = complete_with_retries([c for _, _, c in j_calls], parse_judgement, complete, params.schema_retries)
    for (i, o, call), out in zip(j_calls, j_out):
        attempts["judge"] += out.attempts
        if out.ok:
            position_scores[i, o] = out.value
        else:
            failures.append(
                {
                    "question_id": items[i].question_id,
                    "kind": "judge",
                    "item": call.item,
                    "reason": out.reason,
                    "detail": out.detail,
                    "attempts": out.attempts,
                }
            )
    for it in items:  # a question without both answers is not judged: say why, once per question
        if (it.question_id, ARMS[0]) not in answers or (it.question_id, ARMS[1]) not in answers:
            failures.append(
                {
                    "question_id": it.question_id,
                    "kind": "judge",
                    "item": f"{it.question_id}/*",
                    "reason": "no_answer",
                    "detail": "an answer failed, so the pair was not judged",
                    "attempts": 0,
                }
            )
    arm_scores = to_arm_scores(position_scores, ORDERS[:n_orders])
    judged = judged_mask(arm_scores)
    per_answer = mean_over_orders(arm_scores)  # (n, arms, M), NaN where not judged

    # 3. scores that need no LLM, where an answer exists
    text_values = np.full((n, len(ARMS), len(TEXT_METRICS)), np.nan)
    keys = [(i, a) for i, it in enumerate(items) for a, arm in enumerate(ARMS) if (it.question_id, arm) in answers]
    if keys:
        preds = [answers[(items[i].question_id, ARMS[a])] for i, a in keys]
        refs = [items[i].reference.text for i, _ in keys]
        rows, cols = np.array([k[0] for k in keys]), np.array([k[1] for k in keys])
        text_values[rows, cols, 0] = token_f1_many(preds, refs)
        if embed_texts is not None:
            emb = embed_texts([*preds, *refs])
            text_values[rows, cols, 1] = rowwise_cosine(emb[: len(preds)], emb[len(preds) :])

    # 4. summary
    values = np.concatenate([per_answer, text_values], axis=2)
    names = [*JUDGE_METRICS, *TEXT_METRICS]
    valid = ~np.isnan(values).any(axis=1)  # (n, M): both arms have the value
    arms_summary, paired = summarise_arms(
        values, valid, names, params.bootstrap_resamples, params.confidence, params.seed
    )
    for arm in ARMS:
        flags = [sufficient[(it.question_id, arm)] for it in items if (it.question_id, arm) in sufficient]
        arms_summary[arm]["context_insufficient_rate"] = round_metric(float(1 - np.mean(flags))) if flags else None
    identical = np.array(
        [
            answers.get((it.question_id, ARMS[0])) is not None
            and answers.get((it.question_id, ARMS[0])) == answers.get((it.question_id, ARMS[1]))
            for it in items
        ],
        dtype=bool,
    )
    same_context = sum(it.chunk_ids[ARMS[0]] == it.chunk_ids[ARMS[1]] for it in items)
    by_reason: dict[str, int] = {}
    for f in failures:
        by_reason[f"{f['kind']}:{f['reason']}"] = by_reason.get(f"{f['kind']}:{f['reason']}", 0) + 1
    metrics: dict[str, Any] = {
        "setup": {
            **(setup or {}),
            "questions": n,
            "judged": int(judged.sum()),
            "same_context": int(same_context),
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
            "by_reason": dict(sorted(by_reason.items())),
            "questions_not_judged": int(n - judged.sum()),
            "attempts": attempts,
        },
    }
    result = JudgeResult(metrics)
    result.answers = answer_rows(items, answers, sufficient, failures)
    result.scores = score_rows(items, arm_scores, per_answer, text_values, judged)
    result.metrics["failures"]["items"] = failures
    return result


def build_items(
    paths: PipelinePaths, params: JudgeParams, load_adapter: Callable[[Path], Any] | None = None
) -> tuple[list[JudgeItem], dict[str, Any]]:
    """Select the judged questions (seeded), retrieve top-k for both arms with the exact search eval
    uses, render each arm's context and the reference. Returns the items and setup facts for the report."""
    from ..evaluation.arms import EmbeddingArm, adapter_arm, identity
    from ..evaluation.inputs import QuerySet, load_corpus_with_embeddings, load_test_set, require_file
    from ..evaluation.ranking import hit_matrix
    from ..records import load_test

    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test_path = paths.test
    test = load_test_set(test_path, paths.embed_dir / "test.npz", corpus.ids)
    records = {q.id: q for q in load_test(test_path)}
    require_file(paths.adapter, "train the adapter first (dvc repro train, or make run)")
    # under k-fold (train.folds) each question's answer comes from the adapter that never saw it
    adapter = adapter_arm("adapter", corpus.emb, paths.adapter, load_adapter)

    sel = select_questions(len(test.ids), params.max_questions, params.seed)
    subset = QuerySet(
        name="judge",
        ids=[test.ids[i] for i in sel],
        query_emb=test.query_emb[sel],
        relevant=[test.relevant[i] for i in sel],
        origins=[test.origins[i] for i in sel],
        texts=[test.texts[i] for i in sel] if test.texts is not None else None,
    )
    arms = {"cosine": EmbeddingArm("cosine", corpus.emb, identity), "adapter": adapter}
    top = {arm: a.retrieve(subset, params.top_k) for arm, a in arms.items()}  # (m, k), -1 = nothing
    context_hits = {arm: hit_matrix(idx, subset.relevant).any(axis=1) for arm, idx in top.items()}

    row_of = {cid: i for i, cid in enumerate(corpus.ids)}
    items = []
    for q, qid in enumerate(subset.ids):
        rec = records[qid]
        rel_rows = [row_of[r] for r in rec.relevant_ids]
        reference = build_reference(
            rec.answer,
            [corpus.titles[r] for r in rel_rows],
            [corpus.texts[r] for r in rel_rows],
            params.max_reference_chars,
        )
        rows = {arm: [int(r) for r in idx[q] if r >= 0] for arm, idx in top.items()}
        items.append(
            JudgeItem(
                question_id=qid,
                question=rec.question,
                reference=reference,
                chunk_ids={arm: [corpus.ids[r] for r in rs] for arm, rs in rows.items()},
                context={
                    arm: render_context(
                        [corpus.titles[r] for r in rs], [corpus.texts[r] for r in rs], params.max_chunk_chars
                    )
                    for arm, rs in rows.items()
                },
            )
        )
    kinds = sorted({it.reference.kind for it in items})
    setup = {
        "test_file": str(test_path),
        "test_questions": len(test.ids),
        "corpus_chunks": len(corpus.ids),
        "question_ids": list(subset.ids),
        "origin": origin_label(subset.origins),
        "reference": kinds[0] if len(kinds) == 1 else "mixed",
        "context_hit_rate": {arm: round_metric(h.mean()) if len(h) else None for arm, h in context_hits.items()},
    }
    return items, setup


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


def judge_llm_params(llm_params: Any, params: JudgeParams) -> Any:
    """The `llm` section the judge runs with: `ict` draws pseudo-queries and cannot answer or judge,
    so with `llm.backend: ict` the judge uses `judge.fallback_backend` (same section otherwise)."""
    if llm_params.backend == "ict":
        log.info(
            "judge: llm.backend is ict (no language model); answering and judging with %s (judge.fallback_backend)",
            params.fallback_backend,
        )
        return llm_params.model_copy(update={"backend": params.fallback_backend})
    return llm_params
