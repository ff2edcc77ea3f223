"""The requests synthesize and judge would send under the current params, built by the stages' own request
builders (`synthesis.run.plan_jobs`, `judge.run.answer_calls` / `judge_calls`, `judge.calls.gen_requests`,
`AnthropicBackend.request_params`), minus those the LLM caches already answer.

What is not known before a call is carried as a `Slot` of extra input tokens (low, point, high): a judge
request's answers (unwritten until the answer calls run) and, before retrieval has run, each answer
request's context (then approximated by the question's relevant chunks and seeded others).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import ContentCache
from ..llm.base import GenRequest, GenResult
from ..llm.config import LlmParams
from .tokens import LocalCounter


@dataclass(frozen=True)
class Slot:
    """Input tokens a request gains beyond its rendered text, not known before the run: (low, point, high)."""

    low: int = 0
    point: int = 0
    high: int = 0


@dataclass
class Planned:
    """One stage's LLM work: `requests` to send (cache misses, distinct), their slots, how many the cache
    answers, and what bounds the run (schema retries resend a request)."""

    stage: str
    backend: str
    model: str
    requests: list[GenRequest] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    cached: int = 0
    retries: int = 0  # a request may be sent 1 + retries times (judge.schema_retries)
    notes: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.cached + len(self.requests)


class _NoClient:
    """Stands in for the SDK client where only request bodies and cache keys are needed."""


def offline_backend(llm: LlmParams, client: Any = None) -> Any:
    """The Anthropic backend (bodies, identity, prices) without a key check; `client` only to count tokens."""
    from ..llm.anthropic_backend import AnthropicBackend

    return AnthropicBackend(llm, client=client if client is not None else _NoClient())


def cached_results(cache_path: Path, keys: Sequence[str]) -> dict[str, GenResult]:
    """Successful results the LLM cache and its journal hold for `keys` (read only; neither file is written). A
    cached failure is sent again by the runner (the Anthropic backend samples anew), so it costs like a miss."""
    with ContentCache(cache_path, read_only=True) as cache:  # its journal's rows count too: no call for them
        raw = cache.get_many(list(keys))
    results = {k: GenResult.from_json(k, json.loads(v)) for k, v in raw.items()}
    return {k: r for k, r in results.items() if r.ok}


def plan_synthesize(llm: LlmParams, params: Any, fetch_dir: Path, cache_path: Path) -> Planned:
    """synthesize's requests for data/fetch's corpus and test questions (fetch's outputs must exist)."""
    from ..records import load_corpus, load_test
    from ..synthesis.run import plan_jobs

    backend = offline_backend(llm)
    chunks = load_corpus(fetch_dir / "corpus.jsonl")
    tests = load_test(fetch_dir / "test.jsonl", corpus_ids=[c.id for c in chunks])
    _, _, jobs = plan_jobs(chunks, tests, backend, params)
    unique = {j.request.key: j.request for j in jobs}
    hits = cached_results(cache_path, list(unique))
    todo = [r for k, r in unique.items() if k not in hits]
    return Planned("synthesize", "anthropic", backend.model, todo, [Slot()] * len(todo), len(hits))


def plan_judge(llm: LlmParams, params: Any, paths: Any, cache_path: Path) -> Planned:
    """judge's answer and judge requests. Answers the cache holds are used as written; an unwritten one
    is a slot of 0 to answer_max_tokens tokens (point: half) in each judge request that shows it. An
    approximated context (retrieval outputs missing) is a slot from none of it to top_k whole chunks."""
    from ..judge.calls import gen_requests
    from ..judge.prompts import ARMS, answer_chars, load_judge_prompts, parse_answer
    from ..judge.run import answer_calls, judge_calls

    backend = offline_backend(llm)
    answer_prompt, judge_prompt = load_judge_prompts(params.answer_prompt, params.judge_prompt)
    items, approximate = judge_items_for_estimate(paths, params)
    planned = Planned("judge", "anthropic", backend.model, retries=params.schema_retries)
    a_calls = answer_calls(items, answer_prompt, params)
    a_reqs = gen_requests(backend, a_calls)
    hits = cached_results(cache_path, [r.key for r in a_reqs])
    answers: dict[tuple[str, str], str] = {}
    max_chars = answer_chars(params.answer_max_tokens)
    seen: set[str] = set()
    context_bound = params.top_k * (params.max_chunk_chars + 80) // 2  # at least 2 characters a token
    for c, req in enumerate(a_reqs):
        qid, arm = items[c // len(ARMS)].question_id, ARMS[c % len(ARMS)]
        if req.key in hits:
            answers[(qid, arm)] = parse_answer(hits[req.key].output, max_chars).answer
            planned.cached += req.key not in seen
        elif req.key not in seen:
            planned.requests.append(req)
            if approximate:
                context = items[c // len(ARMS)].context[arm]
                ctx = LocalCounter().count({"messages": [{"role": "user", "content": context}]})
                planned.slots.append(Slot(-ctx, 0, max(0, context_bound - ctx)))
            else:
                planned.slots.append(Slot())
        seen.add(req.key)
    unwritten = {(it.question_id, arm) for it in items for arm in ARMS} - set(answers)
    shown = {**answers, **dict.fromkeys(unwritten, "")}
    j_calls = judge_calls(items, shown, judge_prompt, params)
    j_reqs = gen_requests(backend, [call for _, _, call in j_calls])
    j_hits = cached_results(cache_path, [r.key for r in j_reqs])
    half = params.answer_max_tokens // 2
    for (i, _, _), req in zip(j_calls, j_reqs):
        n_unknown = sum((items[i].question_id, arm) in unwritten for arm in ARMS)
        if not n_unknown and req.key in j_hits:
            planned.cached += req.key not in seen
        elif n_unknown or req.key not in seen:  # unwritten answers: no two requests are known to be one
            planned.requests.append(req)
            planned.slots.append(Slot(0, n_unknown * half, n_unknown * params.answer_max_tokens))
        seen.add(req.key)
    if unwritten:
        planned.notes.append(
            f"judge: {len(unwritten)} answers not yet written; each judge request showing one counts 0 to "
            f"{params.answer_max_tokens} tokens for it (point: {half})"
        )
    if approximate:
        planned.notes.append(
            "judge: retrieval has not run (data/embed, models/adapter): contexts approximated by each question's "
            "relevant chunks and seeded others; rerun after `dvc repro train` for exact contexts"
        )
    return planned


def judge_items_for_estimate(paths: Any, params: Any) -> tuple[list[Any], bool]:
    """The judge's items: exactly as the stage builds them when the retrieval outputs exist, else
    approximated (each arm's context: the relevant chunks, then seeded other chunks up to top_k)."""
    from ..judge.items import JudgeItem, build_items, select_questions
    from ..judge.prompts import ARMS, build_reference, render_context
    from ..records import load_corpus, load_test

    retrieval = (paths.embed_dir / "corpus.npz", paths.embed_dir / "test.npz", paths.adapter)
    if all(p.exists() for p in retrieval):
        return build_items(paths, params)[0], False
    corpus = load_corpus(paths.corpus)
    by_id = {c.id: c for c in corpus}
    tests = load_test(paths.test, corpus_ids=list(by_id))
    rng = random.Random(params.seed)
    items = []
    for q in (tests[i] for i in select_questions(len(tests), params.max_questions, params.seed)):
        relevant = [by_id[r] for r in q.relevant_ids]
        context = {}
        for arm in ARMS:
            others = rng.sample(corpus, min(len(corpus), params.top_k))
            picked = (relevant + [c for c in others if c.id not in q.relevant_ids])[: params.top_k]
            context[arm] = render_context([c.title for c in picked], [c.text for c in picked], params.max_chunk_chars)
        reference = build_reference(
            q.answer, [c.title for c in relevant], [c.text for c in relevant], params.max_reference_chars
        )
        items.append(JudgeItem(q.id, q.question, reference, {arm: [] for arm in ARMS}, context))
    return items, True
