"""Inverse Cloze Task pseudo-queries: no model at all. Each "question" is a sentence (or a window of
one) drawn from the chunk, chosen by a generator seeded with (seed, chunk text): deterministic,
instant, and the floor every LLM backend must beat (Lee et al., 2019, "Latent Retrieval for Weakly
Supervised Open Domain Question Answering").

`llm.ict.style` picks the kind: `sentence` (the above), `keyphrase` (2–3 YAKE keyphrases of the chunk
joined, a keyword-style query that is never the chunk itself, even for a one-sentence chunk; Campos et
al., 2020, "YAKE! Keyword extraction from single documents using multiple local features") or `both`
(up to n of each per chunk; a sentence that is a near-copy of the whole chunk is left out). Each result
tags its questions with their style in `GenResult.output = {"styles": [...]}` (parallel to `questions`):
synthesize caps each style at `questions_per_chunk` and counts kept questions by style.

`llm.ict.templates` (question frames such as "What are the rules on {q}?") puts a seeded share
(`llm.ict.template_share`) of the pseudo-queries into a frame: many users type questions, and a query adapter
learns a map of the query space only where its training queries lie (README, "Question-shaped
pseudo-queries").

`llm.ict.processes` > 1 writes them in that many worker processes (YAKE is pure Python, one core each); each
chunk's queries depend only on its text and the params, so the result is the same for any number of processes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import re
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..textnorm import is_near_copy
from .base import GenRequest, GenResult, OnResult, StateStore
from .config import IctParams, LlmParams

# Sentence or clause ends: ". ", "; ", "? ", "! ", ": " before something that starts a new unit.
_SPLIT = re.compile(r"(?<=[.;:?!])\s+(?=[(‘'\"“A-Z0-9])")
# Enumeration marks at the start of a unit: "1. ", "(a) ", "(iv) ", "2.1 ".
_ENUM = re.compile(r"^\s*(?:\(?[0-9]{1,3}[a-z]?[.)]\s*|\([a-z]{1,4}\)\s*|[0-9]+(?:\.[0-9]+)+\s+)+")


def sentences(text: str) -> list[str]:
    out = []
    for part in _SPLIT.split(" ".join(text.split())):
        s = _ENUM.sub("", part).strip(" ;:,")
        if s:
            out.append(s)
    return out


def _rng(text: str, seed: int) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "big"))


def ict_queries(
    text: str, n: int, seed: int, min_words: int, max_words: int, skip: Callable[[str], bool] | None = None
) -> list[str]:
    """Up to `n` distinct pseudo-queries from `text`, the same for the same (text, seed). A candidate
    for which `skip` is true is passed over for the next one (without `skip`: the first n)."""
    rng = _rng(text, seed)
    cands = [s.split() for s in sentences(text)]
    cands = [w for w in cands if len(w) >= min_words]
    rng.shuffle(cands)
    out: list[str] = []
    for words in cands:
        if len(out) >= n:
            break
        if len(words) > max_words:
            start = rng.randrange(0, len(words) - max_words + 1)
            words = words[start : start + max_words]
        query = " ".join(words)
        if skip is None or not skip(query):
            out.append(query)
    return out


def make_extractor(p: IctParams) -> Any:
    """The YAKE keyphrase extractor for `p` (build it once: it loads stopwords and keeps caches)."""
    import yake

    # yake 0.7 spells the dedup threshold `dedup_lim`; the old `dedupLim` keyword is silently ignored.
    return yake.KeywordExtractor(
        lan="en", n=p.keyphrase_max_ngram, top=p.keyphrase_top, dedup_lim=p.keyphrase_dedup_lim
    )


def keyphrases(text: str, extractor: Any) -> list[str]:
    """The chunk's YAKE keyphrases, best first."""
    return [phrase for phrase, _score in extractor.extract_keywords(text)]


def keyphrase_queries(text: str, n: int, seed: int, extractor: Any, p: IctParams) -> list[str]:
    """Up to `n` distinct keyword queries from `text`: each joins k (seeded, keyphrases_per_query_min..max)
    phrases sampled from the chunk's best `keyphrase_pool` keyphrases. None when it has fewer than two."""
    pool = keyphrases(text, extractor)[: p.keyphrase_pool]
    if len(pool) < 2:
        return []
    rng = _rng(text, seed)
    ks = range(p.keyphrases_per_query_min, p.keyphrases_per_query_max + 1)
    out: list[str] = []
    for _ in range(n):
        query = " ".join(rng.sample(pool, min(rng.choice(ks), len(pool))))
        if query not in out:
            out.append(query)
    return out


def framed(queries: Sequence[str], text: str, seed: int, templates: Sequence[str], share: float = 1.0) -> list[str]:
    """Each query, with probability `share`, put into one of `templates` (`{q}` marks its place); the draws
    come from a generator seeded with (seed, text). No templates: the queries unchanged. A leading capital is
    lowered unless the word is all capitals (an acronym), so that a sentence reads as part of the question."""
    if not templates or share <= 0.0:
        return list(queries)
    rng = _rng("frame\x00" + text, seed)
    frames = list(templates)
    out = []
    for q in queries:
        # Both draws are made for every query, so a query's frame does not depend on the share.
        keep, frame = rng.random() >= share, rng.choice(frames)
        if keep:
            out.append(q)
            continue
        first = q.split(" ", 1)[0]
        if first[:1].isupper() and not first.isupper():
            q = q[0].lower() + q[1:]
        out.append(frame.replace("{q}", q))
    return out


def styled_queries(text: str, n: int, seed: int, p: IctParams, extractor: Any = None) -> tuple[list[str], list[str]]:
    """(queries, their styles) for `text` under `p.style`, each put into a question frame of `p.templates`
    when there are any; `both` interleaves sentence and keyphrase ones (s1, k1, s2, k2, …; up to n of each)
    and leaves out a sentence that is a near-copy of the chunk."""
    queries, styles = _styled(text, n, seed, p, extractor)
    share = p.for_real_questions(0).template_share
    assert share != "auto"  # for_real_questions makes it a number
    return framed(queries, text, seed, p.templates, share), styles


def _styled(text: str, n: int, seed: int, p: IctParams, extractor: Any = None) -> tuple[list[str], list[str]]:
    if p.style == "sentence":
        qs = ict_queries(text, n, seed, p.min_words, p.max_words)
        return qs, ["sentence"] * len(qs)
    extractor = extractor if extractor is not None else make_extractor(p)
    keys = keyphrase_queries(text, n, seed, extractor, p)
    if p.style == "keyphrase":
        return keys, ["keyphrase"] * len(keys)
    sents = ict_queries(text, n, seed, p.min_words, p.max_words, skip=lambda q: is_near_copy(q, text))
    queries: list[str] = []
    styles: list[str] = []
    for i in range(max(len(sents), len(keys))):
        for group, style in ((sents, "sentence"), (keys, "keyphrase")):
            if i < len(group):
                queries.append(group[i])
                styles.append(style)
    return queries, styles


class IctBackend:
    name = "ict"
    model = "ict"
    cacheable = False  # instant and deterministic: nothing worth caching
    deterministic = True
    uses_prompt = False
    takes_repeat_penalty = False

    def __init__(self, params: LlmParams):
        # The synthesize stage resolves `template_share: auto` with the real-question count; a caller that did
        # not has none.
        self.params = params.model_copy(update={"ict": params.ict.for_real_questions(0)})
        self._extractor = make_extractor(params.ict) if params.ict.style != "sentence" else None

    def identity(self) -> dict[str, Any]:
        # Every ict param (style and keyphrase settings included) decides the output; the process count does not.
        return {"backend": self.name, "seed": self.params.seed, **self.params.ict.model_dump(exclude={"processes"})}

    def generate(
        self,
        requests: Sequence[GenRequest],
        on_result: OnResult,
        stop: threading.Event,
        state: StateStore | None = None,
    ) -> None:
        todo = []
        for req in requests:
            if req.tool is not None:  # answers and judgements need a language model
                on_result(GenResult.failure(req.key, "unsupported", "the ict backend only writes pseudo-queries"))
            else:
                todo.append(req)
        jobs = [(req.passage, req.max_items) for req in todo]
        processes = min(self.params.ict.processes, len(jobs) // _MIN_JOBS_PER_PROCESS)
        if processes > 1:
            with _pool(processes, self.params) as pool:
                # Leaving the block terminates the pool: on a stop, the jobs not yet done are dropped.
                self._deliver(todo, pool.imap(_work, jobs, chunksize=_CHUNKSIZE), on_result, stop)
        else:
            _init_worker(self.params, self._extractor)
            self._deliver(todo, map(_work, jobs), on_result, stop)

    @staticmethod
    def _deliver(todo: Sequence[GenRequest], outputs: Any, on_result: OnResult, stop: threading.Event) -> None:
        """Hand each request's (questions, styles) to on_result in request order, until `stop` is set."""
        for req, (questions, styles) in zip(todo, outputs):
            if stop.is_set():
                return
            on_result(GenResult(key=req.key, ok=True, cost_usd=0.0, questions=questions, output={"styles": styles}))

    def close(self) -> None:
        pass


# A process is worth starting for this many chunks or more (a start costs about a second of imports on spawn).
_MIN_JOBS_PER_PROCESS = 64
_CHUNKSIZE = 16  # chunks a worker takes at a time: few round trips, little left over at a stop
_WORKER: dict[str, Any] = {}


def _pool(processes: int, params: LlmParams) -> Any:
    """A pool of `processes` workers, each with its own YAKE extractor. fork where the platform has it (no imports to
    repeat); spawn elsewhere."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(processes, initializer=_init_pool_worker, initargs=(params,))


def _init_pool_worker(params: LlmParams) -> None:
    # A forked worker inherits the stage's handlers (SIGTERM/SIGINT: finish, then stop), which would keep it alive
    # through the pool's terminate. The parent stops the pool; Ctrl-C, sent to the whole process group, is its.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(params, None)


def _init_worker(params: LlmParams, extractor: Any) -> None:
    p = params.ict
    _WORKER.update(
        seed=params.seed,
        ict=p,
        extractor=extractor if extractor is not None or p.style == "sentence" else make_extractor(p),
    )


def _work(job: tuple[str, int]) -> tuple[list[str], list[str]]:
    """(questions, styles) for one (chunk text, max items), with this process's params and extractor."""
    text, n = job
    return styled_queries(text, n, _WORKER["seed"], _WORKER["ict"], _WORKER["extractor"])
