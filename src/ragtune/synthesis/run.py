"""Synthetic training questions: one generator call per training chunk, through a per-item cache.

Flow: pick the chunks (`synthesize.test_chunks` decides whether test questions' chunks are among them;
chunks held out for synthetic test questions never are), render the versioned
prompt, look every chunk up in the cache, send only the misses to the backend, commit each result
the moment it arrives, then filter (empty, too short, overlong, not a question, pointing at "the
text", duplicates within and across chunks) and count every drop by reason. A failed call is stored
with its reason and retried on the next run (a deterministic backend's content failures are kept:
ragtune.llm.runner); it never becomes "zero questions". Kept questions that are
near-copies of their chunk are counted (`degenerate_*` in the report) and warned about, not dropped.

For a corpus whose test chunks no test question covers (a `jsonl` corpus without a test file), the
same generator writes test questions for those held-out chunks, kept apart in their own file.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from ..cache import ContentCache, content_key
from ..errors import RagtuneError
from ..llm.base import Backend, GenRequest, GenResult
from ..llm.prompts import Prompt, load_prompt
from ..llm.runner import RunStats, run_cached
from ..params import Section
from ..records import Chunk, SyntheticQuestion, TestQuestion
from ..textnorm import is_near_copy, normalise_text
from .filters import FilterParams, check_question, clean, degenerate_warning

log = logging.getLogger(__name__)


_CACHE_VERSION = "synthesize/v1"
TestChunks = Literal["include", "exclude"]


class SynthesizeParams(Section):
    prompt: str = "synthesize_v1"  # a prompt in src/ragtune/prompts/, or the path of a .txt file
    # include: questions for every chunk, test questions' chunks too (the deployment protocol of GPL,
    # InPars, Promptagator: the corpus is known, the queries are not); exclude: never for a chunk a test
    # question is about (the reference study's strict protocol). Test questions never reach training
    # either way, and chunks held out for *synthetic* test questions are always excluded.
    test_chunks: TestChunks = "include"
    questions_per_chunk: int = Field(5, ge=1, le=50)
    # Cap on training chunks sent to the generator (a seeded sample, reported); null: all of them.
    max_chunks: int | None = Field(None, ge=1)
    seed: int = 42
    test_questions_per_chunk: int = Field(1, ge=1, le=50)
    # The stage fails (after writing its outputs) when more than this share of calls failed, so
    # `dvc repro` runs it again and retries them; below it, failures are reported and kept for the next run.
    max_failed_share: float = Field(0.2, ge=0.0, le=1.0)
    filters: FilterParams = FilterParams()


def question_prompt(name: str) -> Prompt:
    """`synthesize.prompt`'s file (`ragtune.llm.prompts.load_prompt`): {n}, {title} and {passage} in its user part."""
    return load_prompt(name, setting="synthesize.prompt", required=("passage",))


def render_question_request(prompt: Prompt, passage: str, n: int, title: str | None) -> str:
    """The user message asking for `n` questions about `passage`; a line about the title is left out when the
    chunk has none. Placeholders are substituted one at a time, the passage last, so braces inside the passage
    are left alone (the text is part of the cache key: keep it byte for byte)."""
    lines = [line for line in prompt.user.split("\n") if not ("{title}" in line and not title)]
    out = "\n".join(lines).replace("{n}", str(n)).replace("{title}", title or "")
    return out.replace("{passage}", passage)


@dataclass
class Job:
    chunk: Chunk
    request: GenRequest
    purpose: str  # "train" or "test"


@dataclass
class Outcome:
    questions: list[SyntheticQuestion]
    test_questions: list[TestQuestion]
    report: dict[str, Any]
    failed_share: float
    forbidden_chunk_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ChunkSelection:
    """Which chunks the generator sees: `train` (training questions), `synthetic_test` (held-out chunks no
    test question covers: they get synthetic test questions and never training ones), and counts."""

    train: list[Chunk]
    synthetic_test: list[Chunk]
    capped: int
    test_included: int  # chunks of human test questions given training questions (protocol include)
    test_excluded: int  # chunks a test question is about that got no training questions
    forbidden: frozenset[str] = frozenset()  # chunks no training question may be about


def select_chunks(chunks: Sequence[Chunk], tests: Sequence[TestQuestion], params: SynthesizeParams) -> ChunkSelection:
    """Apply the protocol (`params.test_chunks`) and the `max_chunks` cap (a seeded sample), corpus order kept.

    Only chunks of *human* test questions can be included: a synthetic test question measures its chunk
    as unseen, so training on that chunk would measure what was trained."""
    synthetic = {rid for q in tests if q.origin == "synthetic" for rid in q.relevant_ids}
    human = {rid for q in tests if q.origin == "human" for rid in q.relevant_ids} - synthetic
    covered = {rid for q in tests for rid in q.relevant_ids}
    uncovered_test = [c for c in chunks if c.split == "test" and c.id not in covered]
    include = params.test_chunks == "include"
    train = [c for c in chunks if c.split == "train" or (include and c.split == "test" and c.id in human)]
    test_ids = {c.id for c in chunks if c.split == "test"} | covered
    test_included = sum(1 for c in train if c.id in test_ids)
    capped = 0
    if params.max_chunks is not None and len(train) > params.max_chunks:
        rng = random.Random(params.seed)
        keep = set(rng.sample(sorted(c.id for c in train), params.max_chunks))
        capped = len(train) - len(keep)
        train = [c for c in train if c.id in keep]  # corpus order
    forbidden = test_ids - (human if include else set()) | {c.id for c in uncovered_test}
    return ChunkSelection(
        train, uncovered_test, capped, test_included, len(test_ids) - test_included, frozenset(forbidden)
    )


def cache_key(backend: Backend, prompt: Prompt, system: str, user: str, passage: str) -> str:
    return content_key(_CACHE_VERSION, backend.identity(), prompt.sha256, system, user, passage)


def build_jobs(
    train: Sequence[Chunk], test: Sequence[Chunk], backend: Backend, prompt: Prompt, params: SynthesizeParams
) -> list[Job]:
    jobs = []
    for purpose, group in (("train", train), ("test", test)):
        for c in group:
            user = render_question_request(prompt, c.text, params.questions_per_chunk, c.title)
            key = cache_key(backend, prompt, prompt.system, user, c.text)
            jobs.append(
                Job(
                    c,
                    GenRequest(
                        key=key, system=prompt.system, user=user, passage=c.text, max_items=params.questions_per_chunk
                    ),
                    purpose,
                )
            )
    return jobs


def plan_jobs(
    chunks: Sequence[Chunk], tests: Sequence[TestQuestion], backend: Backend, params: SynthesizeParams
) -> tuple[Prompt, ChunkSelection, list[Job]]:
    """The prompt, the chunk selection and one job (its request, with its cache key) per selected chunk: what
    `synthesize` sends and `ragtune estimate` prices, built in one place."""
    prompt = question_prompt(params.prompt)
    selection = select_chunks(chunks, tests, params)
    return prompt, selection, build_jobs(selection.train, selection.synthetic_test, backend, prompt, params)


def synthesize(
    chunks: Sequence[Chunk],
    tests: Sequence[TestQuestion],
    backend: Backend,
    cache: ContentCache,
    params: SynthesizeParams,
    stop: threading.Event | None = None,
    progress: Any = None,
) -> Outcome:
    """Generate (or read from the cache) questions for the selected chunks; return records and report.

    `progress`, if given, is a tqdm-like object: `update(n)` per finished chunk and
    `set_postfix_str(s)` with the running question count and cost.
    """
    t0 = time.perf_counter()
    stop = stop or threading.Event()
    prompt, selection, jobs = plan_jobs(chunks, tests, backend, params)
    train, test_chunks, capped = selection.train, selection.synthetic_test, selection.capped
    by_key: dict[str, list[Job]] = {}
    for j in jobs:
        by_key.setdefault(j.request.key, []).append(j)

    stats = RunStats()
    new_questions = 0

    def show_progress(r: GenResult) -> None:
        nonlocal new_questions
        new_questions += len(r.questions)
        if progress is not None:
            cost = "?" if stats.cost_usd is None else f"{stats.cost_usd:.4f}"
            progress.set_postfix_str(f"questions={new_questions} cost=${cost}", refresh=False)

    results = run_cached(
        backend,
        cache,
        [js[0].request for js in by_key.values()],
        stats,
        stop,
        meta={"stage": "synthesize"},
        progress=progress,
        on_result=show_progress,
    )
    interrupted = stop.is_set() and any(k not in results for k in by_key)

    # --- assemble, filter, count ----------------------------------------------------------------
    want_qmark = backend.uses_prompt
    by_style: Counter[str] = Counter()
    degenerate = 0
    test_norms = {normalise_text(q.question) for q in tests}
    seen: set[str] = set()
    seen_test: set[str] = set()
    dropped: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    questions: list[SyntheticQuestion] = []
    test_out: list[TestQuestion] = []
    generated = 0
    chunks_with = 0
    dataset_cost = 0.0
    dataset_cost_unknown = 0
    pending = 0
    for job in jobs:
        r = results.get(job.request.key)
        if r is None:
            pending += 1
            continue
        if not r.ok:
            failures[r.reason or "unknown"] += 1
            continue
        if r.cost_usd is None:
            dataset_cost_unknown += 1
        else:
            dataset_cost += r.cost_usd
        raw = r.questions
        generated += len(raw)
        # Each style a backend tags its questions with (ict `both`) has its own cap; untagged: one style.
        styles = question_styles(r)
        raw_count: Counter[str | None] = Counter()
        kept_count: Counter[str | None] = Counter()
        kept: list[str] = []
        kept_styles: list[str | None] = []
        limit = params.questions_per_chunk if job.purpose == "train" else params.test_questions_per_chunk
        for q, style in zip(raw, styles):
            raw_count[style] += 1
            if raw_count[style] > params.questions_per_chunk:
                dropped["over_limit"] += 1
                continue
            q = clean(q)
            reason = check_question(q, params.filters, want_qmark)
            norm = normalise_text(q)
            if reason is None:
                if norm in test_norms:
                    reason = "same_as_test_question"
                elif norm in (seen if job.purpose == "train" else seen_test):
                    reason = "duplicate"
                elif kept_count[style] >= limit:
                    reason = "over_limit"
            if reason:
                dropped[reason] += 1
                continue
            (seen if job.purpose == "train" else seen_test).add(norm)
            kept.append(q)
            kept_styles.append(style)
            kept_count[style] += 1
        if job.purpose == "train":
            chunks_with += bool(kept)
            degenerate += sum(is_near_copy(q, job.chunk.text) for q in kept)
            by_style.update(st for st in kept_styles if st is not None)
            for i, q in enumerate(kept):
                questions.append(
                    SyntheticQuestion(
                        id=f"{job.chunk.id}#q{i}",
                        chunk_id=job.chunk.id,
                        question=q,
                        backend=backend.name,
                        model=backend.model,
                        prompt_id=prompt.prompt_id if backend.uses_prompt else "none",
                    )
                )
        else:
            for i, q in enumerate(kept):
                test_out.append(
                    TestQuestion(
                        id=f"synthetic-test-{job.chunk.id}-{i}",
                        question=q,
                        relevant_ids=[job.chunk.id],
                        answer=None,
                        origin="synthetic",
                    )
                )

    n_failed = sum(failures.values())
    answered = len(jobs) - pending
    wall = time.perf_counter() - t0
    degenerate_share = round(degenerate / len(questions), 4) if questions else 0.0
    warning = degenerate_warning(degenerate, degenerate_share)
    if warning:
        log.warning("synthesize: %s", warning)
    report: dict[str, Any] = {
        "backend": backend.name,
        "model": backend.model,
        "prompt_id": prompt.prompt_id if backend.uses_prompt else "none",
        "questions_per_chunk": params.questions_per_chunk,
        "protocol": params.test_chunks,
        "protocol_note": protocol_note(params, selection),
        "chunks": len(chunks),
        "chunks_train": len(train) + capped,
        "chunks_test": sum(1 for c in chunks if c.split == "test"),
        "chunks_capped_out": capped,
        "chunks_requested": len(train),
        "chunks_test_for_synthetic_questions": len(test_chunks),
        "chunks_test_with_training_questions": selection.test_included,
        "chunks_test_without_training_questions": selection.test_excluded,
        "chunks_with_questions": chunks_with,
        "share_chunks_with_question": round(chunks_with / len(train), 4) if train else 0.0,
        "questions_generated": generated,
        "questions_kept": len(questions),
        **({"questions_by_style": dict(sorted(by_style.items()))} if by_style else {}),
        "degenerate_questions": degenerate,
        "degenerate_share": degenerate_share,
        "questions_dropped": sum(dropped.values()),
        "dropped": dict(sorted(dropped.items())),
        "test_questions_kept": len(test_out),
        "failures": n_failed,
        "failures_by_reason": dict(sorted(failures.items())),
        "failures_retried_from_earlier_runs": stats.failures_retried,
        "failures_kept_from_earlier_runs": stats.failures_kept,
        "not_done": pending,
        "interrupted": interrupted,
        "cache_hits": stats.cache_hits,
        "cache_misses": stats.cache_misses if backend.cacheable else 0,
        "calls": stats.calls if backend.cacheable else 0,
        "retries": getattr(backend, "retries", 0),
        "tokens_in": stats.usage.tokens_in,
        "tokens_out": stats.usage.tokens_out,
        "tokens_cache_read": stats.usage.cache_read,
        "tokens_cache_write": stats.usage.cache_write,
        "cost_usd": None if stats.cost_usd is None else round(stats.cost_usd, 6),
        "dataset_cost_usd": round(dataset_cost, 6) if not dataset_cost_unknown else None,
        "seconds": round(wall, 2),
        "generate_seconds": round(stats.seconds, 2),
        "seconds_per_chunk": round(stats.seconds / stats.calls, 4) if stats.calls else None,
    }
    return Outcome(
        questions,
        test_out,
        report,
        failed_share=(n_failed / answered) if answered else 0.0,
        forbidden_chunk_ids=selection.forbidden,
    )


def question_styles(r: GenResult) -> list[str | None]:
    """The style of each of `r.questions`: a backend may tag them (`output={"styles": [...]}`, parallel to
    `questions`; the ict backend does); None for each when it does not."""
    styles = r.output.get("styles") if isinstance(r.output, dict) else None
    if isinstance(styles, list) and len(styles) == len(r.questions) and all(isinstance(x, str) for x in styles):
        return list(styles)
    return [None] * len(r.questions)


def protocol_note(params: SynthesizeParams, selection: ChunkSelection) -> str:
    """One line for the report: what the protocol did to test chunks."""
    if params.test_chunks == "exclude":
        return (
            f"exclude: the {selection.test_excluded} chunks test questions are about got no training "
            "questions (the strict protocol)"
        )
    note = (
        f"include: training questions for every chunk, the {selection.test_included} chunks of human test "
        "questions too; the test questions themselves never reach training"
    )
    if selection.synthetic_test:
        note += (
            f"; the {len(selection.synthetic_test)} chunks held out for synthetic test questions stay excluded "
            "(the test set is synthetic: training on its chunks would measure what was trained)"
        )
    return note


def check_no_leak(questions: Iterable[SyntheticQuestion], forbidden_chunk_ids: Set[str]) -> None:
    """Training questions must never come from a chunk held out for synthetic test questions (nor, under
    the exclude protocol, from a test chunk): the caller passes those ids."""
    bad = [q.chunk_id for q in questions if q.chunk_id in forbidden_chunk_ids]
    if bad:
        raise RagtuneError(f"internal error: training questions generated for held-out test chunks {bad[:5]}")
