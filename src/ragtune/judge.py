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

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from .cache import content_key
from .errors import RagtuneError
from .params import Section
from .statistics import bootstrap_ci, paired_bootstrap, sign_test

log = logging.getLogger(__name__)

ARMS: tuple[str, str] = ("cosine", "adapter")
JUDGE_METRICS: tuple[str, ...] = ("faithfulness", "answer_relevance", "completeness", "conciseness",
                                  "semantic_similarity", "overall")
TEXT_METRICS: tuple[str, ...] = ("token_f1", "embedding_similarity")
# The display orders of a pair: which arm is Answer 1 and which Answer 2.
ORDERS: tuple[tuple[str, str], ...] = (("cosine", "adapter"), ("adapter", "cosine"))
ORDER_NAMES: tuple[str, ...] = ("cosine_first", "adapter_first")
ANSWER_TOOL = "submit_answer"
JUDGE_TOOL = "submit_scores"
# Reasons a reply may be worth asking again with the validation error spelled out. Transport errors
# (429, 5xx) are retried inside the backend and, if they persist, on the next run.
RETRYABLE = frozenset({"invalid_output", "max_tokens"})


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
    swap_order: bool = True  # judge each pair in both orders (position-bias control)
    schema_retries: int = Field(1, ge=0, le=5)  # re-asks after a reply that breaks the schema
    answer_prompt: str = Field("answer_v1", pattern=r"^[A-Za-z0-9_.-]+$")  # src/ragtune/prompts/<name>.txt
    judge_prompt: str = Field("judge_v1", pattern=r"^[A-Za-z0-9_.-]+$")
    bootstrap_resamples: int = Field(10_000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


# --- prompts ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompt:
    """A versioned prompt file: `=== system ===` and `=== user ===` sections; the user part is a
    template with `{name}` fields. `sha256` covers the whole file and goes into every cache key."""

    name: str
    system: str
    user_template: str
    sha256: str

    def render(self, **fields: str) -> str:
        # str.format would choke on the braces of JSON examples; replace only the named fields.
        return re.sub(r"\{([a-z_0-9]+)\}", lambda m: str(fields[m.group(1)]) if m.group(1) in fields
                      else m.group(0), self.user_template)


def load_prompt(name: str, directory: Path | None = None) -> Prompt:
    """Read `<name>.txt` from `directory` (default: the prompts shipped in the package)."""
    if directory is None:
        source = resources.files("ragtune") / "prompts" / f"{name}.txt"
        where = f"ragtune/prompts/{name}.txt"
    else:
        source = Path(directory) / f"{name}.txt"
        where = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise RagtuneError(f"{where}: prompt file not found; check judge.answer_prompt / judge.judge_prompt") from None
    match = re.fullmatch(r"\s*=== system ===\n(.*?)\n=== user ===\n(.*?)\s*", text, flags=re.S)
    if not match:
        raise RagtuneError(f"{where}: expected a '=== system ===' section followed by a '=== user ===' section")
    return Prompt(name, match.group(1).strip(), match.group(2).strip(),
                  hashlib.sha256(text.encode("utf-8")).hexdigest())


# --- structured output: schemas and validation --------------------------------------------------

def answer_chars(max_tokens: int) -> int:
    """The longest answer accepted: about three characters a token, so a grammar-constrained local
    model closes the JSON before it runs out of tokens (a cut-off reply is a failure)."""
    return max(40, 3 * max_tokens - 30)


def answer_schema(max_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": max_chars,
                       "description": "The short answer, from the context only."},
            "context_sufficient": {"type": "boolean",
                                   "description": "false when the context does not contain the answer"},
        },
        "required": ["answer", "context_sufficient"],
        "additionalProperties": False,
    }


def judge_schema() -> dict[str, Any]:
    score = {"type": "integer", "minimum": 1, "maximum": 5}
    one = {"type": "object", "properties": {m: dict(score) for m in JUDGE_METRICS},
           "required": list(JUDGE_METRICS), "additionalProperties": False}
    return {"type": "object", "properties": {"answer_1": one, "answer_2": dict(one)},
            "required": ["answer_1", "answer_2"], "additionalProperties": False}


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: StrictStr = Field(min_length=1)
    context_sufficient: StrictBool


Score = Field(ge=1, le=5)


class _Scores(BaseModel):
    model_config = ConfigDict(extra="forbid")
    faithfulness: StrictInt = Score
    answer_relevance: StrictInt = Score
    completeness: StrictInt = Score
    conciseness: StrictInt = Score
    semantic_similarity: StrictInt = Score
    overall: StrictInt = Score


class _Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer_1: _Scores
    answer_2: _Scores


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "reply"
    return f"{where}: {err['msg']} (got {err.get('input')!r:.60})"


@dataclass(frozen=True)
class AnswerReply:
    answer: str
    context_sufficient: bool


def parse_answer(obj: Any, max_chars: int | None = None) -> AnswerReply:
    """Validate an answer reply; ValueError says what is wrong. A blank or overlong answer is invalid."""
    try:
        a = _Answer.model_validate(obj)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None
    if not a.answer.strip():
        raise ValueError("answer: is blank")
    if max_chars is not None and len(a.answer) > max_chars:
        raise ValueError(f"answer: {len(a.answer)} characters, more than the {max_chars} allowed")
    return AnswerReply(a.answer.strip(), a.context_sufficient)


def parse_judgement(obj: Any) -> np.ndarray:
    """Validate a judge reply; returns float64 (2 positions, n_metrics) in JUDGE_METRICS order.
    ValueError (naming the field) when any score is missing, not an integer, or outside 1-5."""
    try:
        j = _Judgement.model_validate(obj)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None
    return np.array([[getattr(s, m) for m in JUDGE_METRICS] for s in (j.answer_1, j.answer_2)], dtype=np.float64)


def with_feedback(user: str, error: str, tool: str) -> str:
    """The user message of a retry: the original, then why the last reply was rejected."""
    return (f"{user}\n\nYour previous reply was rejected because it does not match the required format "
            f"({error}). Reply again with the {tool} JSON, with every required field present and valid.")


# --- the LLM seam ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LlmCall:
    """One structured request: `item` names it in reports (e.g. `q7/adapter`, `q7/cosine_first`)."""

    kind: Literal["answer", "judge"]
    item: str
    system: str
    user: str
    tool: str
    schema: dict[str, Any]
    max_tokens: int
    temperature: float
    prompt_sha256: str


@dataclass
class LlmReply:
    """The tool input of a successful call, or a failure reason code with a short explanation."""

    ok: bool
    output: Any = None
    reason: str | None = None
    detail: str | None = None


# Sends calls (each answered at most once; cached items cost nothing) and returns replies in order.
Complete = Callable[[Sequence[LlmCall]], list[LlmReply]]


@dataclass
class Outcome:
    """Where a call ended after its schema retries: parsed value or failure, and how many attempts."""

    value: Any = None
    reason: str | None = None
    detail: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


def complete_with_retries(calls: Sequence[LlmCall], parse: Callable[[Any], Any], complete: Complete,
                          retries: int) -> list[Outcome]:
    """Run `calls` in rounds: a reply that fails `parse` (or the backend's own schema check, or stops
    at max_tokens) is asked again with the error appended, up to `retries` times; then it is a failure
    with its reason. Each round goes through `complete` as one batch."""
    outcomes = [Outcome() for _ in calls]
    pending = list(range(len(calls)))
    current = list(calls)
    for attempt in range(retries + 1):
        if not pending:
            break
        replies = complete([current[i] for i in pending])
        retry: list[int] = []
        for i, reply in zip(pending, replies):
            out = outcomes[i]
            out.attempts = attempt + 1
            if reply.ok:
                try:
                    out.value, out.reason, out.detail = parse(reply.output), None, None
                    continue
                except ValueError as exc:
                    out.reason, out.detail = "invalid_output", f"reply breaks the schema: {exc}"
            else:
                out.reason, out.detail = reply.reason or "failed", reply.detail
            if out.reason in RETRYABLE and attempt < retries:
                base = calls[i]
                current[i] = LlmCall(base.kind, base.item, base.system,
                                     with_feedback(base.user, out.detail or out.reason, base.tool), base.tool,
                                     base.schema, base.max_tokens, base.temperature, base.prompt_sha256)
                retry.append(i)
        pending = retry
    return outcomes


# --- questions, contexts and references -----------------------------------------------------------

def select_questions(n_total: int, max_questions: int | None, seed: int) -> np.ndarray:
    """Row indices of the judged questions: all, or a seeded sample of `max_questions`, in file order."""
    if max_questions is None or max_questions >= n_total:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=max_questions, replace=False)).astype(np.int64)


def _cut(text: str, max_chars: int) -> tuple[str, bool]:
    text = text.strip()
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + " …", True


def render_context(titles: Sequence[str | None], texts: Sequence[str], max_chunk_chars: int) -> str:
    """Numbered passages `[1] title` + text, each cut to `max_chunk_chars` characters."""
    parts = []
    for n, (title, text) in enumerate(zip(titles, texts), start=1):
        head = f"[{n}] {title}" if title else f"[{n}]"
        parts.append(f"{head}\n{_cut(text, max_chunk_chars)[0]}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Reference:
    text: str
    kind: Literal["expert answer", "relevant passages"]
    truncated: bool = False


def build_reference(answer: str | None, relevant_titles: Sequence[str | None], relevant_texts: Sequence[str],
                    max_chars: int) -> Reference:
    """The expert answer when the test set has one; otherwise the relevant chunks' text, cut at
    `max_chars` characters."""
    if answer is not None and answer.strip():
        return Reference(answer.strip(), "expert answer")
    joined = render_context(relevant_titles, relevant_texts, max_chars)
    text, truncated = _cut(joined, max_chars)
    return Reference(text, "relevant passages", truncated)


# --- aggregation: swapped orders, agreement, per-arm summaries --------------------------------------

def to_arm_scores(position_scores: np.ndarray, orders: Sequence[tuple[str, str]] = ORDERS,
                  arms: Sequence[str] = ARMS) -> np.ndarray:
    """(n, n_orders, 2 positions, M) -> (n, n_orders, n_arms, M): each arm's scores in each order."""
    out = np.empty(position_scores.shape[:2] + (len(arms),) + position_scores.shape[3:], dtype=np.float64)
    for o, order in enumerate(orders):
        out[:, o] = position_scores[:, o][:, [order.index(a) for a in arms]]
    return out


def judged_mask(arm_scores: np.ndarray) -> np.ndarray:
    """Questions whose every order was judged: bool (n,)."""
    return ~np.isnan(arm_scores).any(axis=(1, 2, 3))


def mean_over_orders(arm_scores: np.ndarray) -> np.ndarray:
    """(n, n_orders, n_arms, M) -> (n, n_arms, M): each answer's score averaged over the display orders."""
    return arm_scores.mean(axis=1)


def order_agreement(arm_scores: np.ndarray, include: np.ndarray | None = None) -> dict[str, Any]:
    """How often the two display orders prefer the same arm (or both tie), per metric, over questions
    judged in both orders (and in `include`, bool (n,)); also the mean absolute change of an answer's
    score between orders. Pairs of identical answers belong outside `include`: both orders are then
    the same request, so they would agree by construction."""
    if arm_scores.shape[1] < 2:
        return {"questions": 0, "note": "swap_order is off: agreement cannot be measured"}
    ok = judged_mask(arm_scores) & (True if include is None else np.asarray(include, dtype=bool))
    s = arm_scores[ok]
    pref = np.sign(s[:, :, 1, :] - s[:, :, 0, :])  # (n, orders, M): +1 when the adapter's answer wins
    agree = (pref[:, 0, :] == pref[:, 1, :])
    shift = np.abs(s[:, 0] - s[:, 1]).mean(axis=(0, 1)) if len(s) else np.full(len(JUDGE_METRICS), np.nan)
    n = int(ok.sum())
    return {"questions": n,
            "rate": {m: _round(agree[:, j].mean()) if n else None for j, m in enumerate(JUDGE_METRICS)},
            "overall_winner_rate": _round(agree[:, -1].mean()) if n else None,
            "mean_abs_score_shift": {m: _round(shift[j]) if n else None for j, m in enumerate(JUDGE_METRICS)}}


def position_preference(position_scores: np.ndarray, metric: str = "overall",
                        include: np.ndarray | None = None) -> dict[str, Any]:
    """Over all valid judgements (of questions in `include`): share where the answer shown first scored
    higher, lower, or the same on `metric`. With both orders judged, each arm is shown first equally
    often, so a judge without position bias prefers first and second equally often."""
    j = JUDGE_METRICS.index(metric)
    rows = slice(None) if include is None else np.asarray(include, dtype=bool)
    s = position_scores[rows][..., j].reshape(-1, 2)
    s = s[~np.isnan(s).any(axis=1)]
    n = len(s)
    diff = s[:, 0] - s[:, 1]
    return {"metric": metric, "judgements": n,
            "first_preferred": _round((diff > 0).mean()) if n else None,
            "second_preferred": _round((diff < 0).mean()) if n else None,
            "tie": _round((diff == 0).mean()) if n else None}


def identical_pair_consistency(position_scores: np.ndarray, identical: np.ndarray) -> dict[str, Any]:
    """On pairs whose two answers are the same text, a consistent judge gives both positions equal
    scores: the share of such pairs with equal `overall` and with all metrics equal. Both display
    orders of such a pair are the same request, so only the first is counted."""
    s = position_scores[np.asarray(identical, dtype=bool), 0]  # (k, 2 positions, M)
    s = s[~np.isnan(s).any(axis=(1, 2))]
    n = len(s)
    return {"pairs": int(np.asarray(identical, dtype=bool).sum()), "judged": n,
            "overall_equal": _round((s[:, 0, -1] == s[:, 1, -1]).mean()) if n else None,
            "all_equal": _round((s[:, 0] == s[:, 1]).all(axis=1).mean()) if n else None}


def summarise_arms(values: np.ndarray, valid: np.ndarray, metric_names: Sequence[str], resamples: int,
                   confidence: float, seed: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-arm means with bootstrap intervals, and adapter-vs-cosine paired counts and tests.

    `values` (n, n_arms, M) per question and arm, `valid` bool (n, M): where both arms have a value.
    Returns ({arm: {metric: mean, ..., "ci": {metric: [low, high]}, "n": {metric: count}}},
             {metric: {"wins", "ties", "losses", "sign_test_p", "diff", "diff_ci", "questions"}})."""
    arms_out: dict[str, dict[str, Any]] = {a: {"ci": {}, "n": {}} for a in ARMS}
    paired: dict[str, Any] = {}
    for j, metric in enumerate(metric_names):
        rows = valid[:, j]
        n = int(rows.sum())
        for a, arm in enumerate(ARMS):
            block = arms_out[arm]
            if n == 0:
                block[metric], block["ci"][metric] = None, None
            else:
                iv = bootstrap_ci(values[rows, a, j], resamples, confidence, seed)
                block[metric], block["ci"][metric] = _round(iv.value), [_round(iv.low), _round(iv.high)]
            block["n"][metric] = n
        if n == 0:
            paired[metric] = {"questions": 0, "wins": 0, "ties": 0, "losses": 0, "sign_test_p": 1.0,
                              "diff": None, "diff_ci": None}
            continue
        new, base = values[rows, 1, j], values[rows, 0, j]
        delta = new - base
        wins, losses = int((delta > 0).sum()), int((delta < 0).sum())
        pb = paired_bootstrap(new, base, resamples, confidence, seed)
        paired[metric] = {"questions": n, "wins": wins, "ties": n - wins - losses, "losses": losses,
                          "sign_test_p": _round_p(sign_test(wins, losses)), "diff": _round(pb.diff),
                          "diff_ci": [_round(pb.low), _round(pb.high)]}
    # Keys in a stable order: metrics first, then their intervals and counts.
    ordered = {arm: {**{m: block[m] for m in metric_names}, "ci": block["ci"], "n": block["n"]}
               for arm, block in arms_out.items()}
    return ordered, paired


def _round(x: float) -> float:
    return round(float(x), 6)


def _round_p(p: float) -> float:
    return float(f"{float(p):.4g}")


# --- the whole judgement ----------------------------------------------------------------------------

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
    return [LlmCall("answer", f"{it.question_id}/{arm}", prompt.system,
                    prompt.render(context=it.context[arm], question=it.question), ANSWER_TOOL,
                    answer_schema(answer_chars(params.answer_max_tokens)),
                    params.answer_max_tokens, params.answer_temperature, prompt.sha256)
            for it in items for arm in ARMS]


def judge_calls(items: Sequence[JudgeItem], answers: Mapping[tuple[str, str], str], prompt: Prompt,
                params: JudgeParams) -> list[tuple[int, int, LlmCall]]:
    """(item index, order index, call) for every item whose two answers exist, in each display order."""
    out = []
    orders = ORDERS if params.swap_order else ORDERS[:1]
    for i, it in enumerate(items):
        if (it.question_id, ARMS[0]) not in answers or (it.question_id, ARMS[1]) not in answers:
            continue
        for o, (first, second) in enumerate(orders):
            user = prompt.render(question=it.question, reference=it.reference.text,
                                 reference_kind=it.reference.kind, answer_1=answers[(it.question_id, first)],
                                 answer_2=answers[(it.question_id, second)])
            out.append((i, o, LlmCall("judge", f"{it.question_id}/{ORDER_NAMES[o]}", prompt.system, user,
                                      JUDGE_TOOL, judge_schema(), params.judge_max_tokens, 0.0, prompt.sha256)))
    return out


EmbedTexts = Callable[[Sequence[str]], np.ndarray]


def judge_items(items: Sequence[JudgeItem], params: JudgeParams, complete: Complete,
                embed_texts: EmbedTexts | None, answer_prompt: Prompt, judge_prompt: Prompt,
                setup: Mapping[str, Any] | None = None) -> JudgeResult:
    """Answers for both arms, the swapped-order judgements, the LLM-free scores and the summary."""
    from .text_metrics import rowwise_cosine, token_f1_many

    n = len(items)
    n_orders = 2 if params.swap_order else 1
    failures: list[dict[str, Any]] = []

    # 1. answers
    a_calls = answer_calls(items, answer_prompt, params)
    max_chars = answer_chars(params.answer_max_tokens)
    a_out = complete_with_retries(a_calls, lambda obj: parse_answer(obj, max_chars), complete,
                                  params.schema_retries)
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
            failures.append({"question_id": qid, "kind": "answer", "item": call.item, "reason": out.reason,
                             "detail": out.detail, "attempts": out.attempts})

    # 2. judgements in both orders
    position_scores = np.full((n, n_orders, 2, len(JUDGE_METRICS)), np.nan)
    j_calls = judge_calls(items, answers, judge_prompt, params)
    j_out = complete_with_retries([c for _, _, c in j_calls], parse_judgement, complete, params.schema_retries)
    for (i, o, call), out in zip(j_calls, j_out):
        attempts["judge"] += out.attempts
        if out.ok:
            position_scores[i, o] = out.value
        else:
            failures.append({"question_id": items[i].question_id, "kind": "judge", "item": call.item,
                             "reason": out.reason, "detail": out.detail, "attempts": out.attempts})
    for it in items:  # a question without both answers is not judged: say why, once per question
        if (it.question_id, ARMS[0]) not in answers or (it.question_id, ARMS[1]) not in answers:
            failures.append({"question_id": it.question_id, "kind": "judge", "item": f"{it.question_id}/*",
                             "reason": "no_answer", "detail": "an answer failed, so the pair was not judged",
                             "attempts": 0})
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
            text_values[rows, cols, 1] = rowwise_cosine(emb[:len(preds)], emb[len(preds):])

    # 4. summary
    values = np.concatenate([per_answer, text_values], axis=2)
    names = [*JUDGE_METRICS, *TEXT_METRICS]
    valid = ~np.isnan(values).any(axis=1)  # (n, M): both arms have the value
    arms_summary, paired = summarise_arms(values, valid, names, params.bootstrap_resamples, params.confidence,
                                          params.seed)
    for arm in ARMS:
        flags = [sufficient[(it.question_id, arm)] for it in items if (it.question_id, arm) in sufficient]
        arms_summary[arm]["context_insufficient_rate"] = _round(1 - np.mean(flags)) if flags else None
    identical = np.array([answers.get((it.question_id, ARMS[0])) is not None
                          and answers.get((it.question_id, ARMS[0])) == answers.get((it.question_id, ARMS[1]))
                          for it in items], dtype=bool)
    same_context = sum(it.chunk_ids[ARMS[0]] == it.chunk_ids[ARMS[1]] for it in items)
    by_reason: dict[str, int] = {}
    for f in failures:
        by_reason[f"{f['kind']}:{f['reason']}"] = by_reason.get(f"{f['kind']}:{f['reason']}", 0) + 1
    metrics: dict[str, Any] = {
        "setup": {**(setup or {}), "questions": n, "judged": int(judged.sum()),
                  "same_context": int(same_context), "identical_answers": int(identical.sum()),
                  "references_truncated": sum(it.reference.truncated for it in items),
                  "top_k": params.top_k, "swap_order": params.swap_order, "seed": params.seed,
                  "answer_prompt": answer_prompt.name, "judge_prompt": judge_prompt.name,
                  "bootstrap_resamples": params.bootstrap_resamples, "confidence": params.confidence},
        "arms": arms_summary,
        "adapter_vs_cosine": paired,
        # Identical answers make both orders one request: kept out of agreement and position bias.
        "order_agreement": order_agreement(arm_scores, include=~identical),
        "position_preference": position_preference(position_scores, include=~identical),
        "identical_answers": identical_pair_consistency(position_scores, identical),
        "failures": {"total": len(failures), "by_reason": dict(sorted(by_reason.items())),
                     "questions_not_judged": int(n - judged.sum()), "attempts": attempts},
    }
    result = JudgeResult(metrics)
    result.answers = _answer_rows(items, answers, sufficient, failures)
    result.scores = _score_rows(items, arm_scores, per_answer, text_values, judged)
    result.metrics["failures"]["items"] = failures
    return result


def _answer_rows(items: Sequence[JudgeItem], answers: Mapping[tuple[str, str], str],
                 sufficient: Mapping[tuple[str, str], bool], failures: Sequence[Mapping[str, Any]]) -> list[dict]:
    failed = {f["item"]: f for f in failures if f["kind"] == "answer"}
    rows = []
    for it in items:
        for arm in ARMS:
            key = (it.question_id, arm)
            f = failed.get(f"{it.question_id}/{arm}")
            rows.append({"question_id": it.question_id, "arm": arm, "question": it.question,
                         "chunk_ids": list(it.chunk_ids[arm]), "answer": answers.get(key),
                         "context_sufficient": sufficient.get(key),
                         "failure": None if f is None else {"reason": f["reason"], "detail": f["detail"]},
                         "reference_kind": it.reference.kind, "reference": it.reference.text})
    return rows


def _score_rows(items: Sequence[JudgeItem], arm_scores: np.ndarray, per_answer: np.ndarray,
                text_values: np.ndarray, judged: np.ndarray) -> list[dict]:
    """Per (question, arm): mean judge scores, the score when shown first / second, and text scores."""
    rows = []
    n_orders = arm_scores.shape[1]
    for i, it in enumerate(items):
        for a, arm in enumerate(ARMS):
            row: dict[str, Any] = {"question_id": it.question_id, "arm": arm, "judged": bool(judged[i])}
            for j, m in enumerate(JUDGE_METRICS):
                row[m] = _cell(per_answer[i, a, j])
            # Order o shows ORDERS[o][0] first: this arm's score when it was first and when second.
            for o in range(n_orders):
                slot = "first" if ORDERS[o][0] == arm else "second"
                for j, m in enumerate(JUDGE_METRICS):
                    row[f"{m}_shown_{slot}"] = _cell(arm_scores[i, o, a, j])
            for j, m in enumerate(TEXT_METRICS):
                row[m] = _cell(text_values[i, a, j])
            rows.append(row)
    return rows


def _cell(x: float) -> float | None:
    return None if np.isnan(x) else _round(x)


def score_columns() -> list[str]:
    """Columns of scores.csv; without swap_order each arm has only one of its two `_shown_` slots."""
    return ["question_id", "arm", "judged", *JUDGE_METRICS,
            *[f"{m}_shown_{s}" for s in ("first", "second") for m in JUDGE_METRICS], *TEXT_METRICS]


def judge_warning(metrics: Mapping[str, Any], backend: str, model: str, threshold: float = 0.8) -> str | None:
    """A plain warning when the judge cannot be trusted: a small local model, or the two display orders
    disagreeing on the overall winner more often than 1 - threshold."""
    agreement = (metrics.get("order_agreement") or {}).get("overall_winner_rate")
    parts = []
    if backend == "llamacpp":
        parts.append(f"the judge is a small local model ({model}); its scores are a smoke test of the "
                     "pipeline, not a measurement of answer quality")
    if agreement is not None and agreement < threshold:
        parts.append(f"the two display orders agree on the overall winner for only {agreement:.0%} of "
                     "questions, so the judge's preferences are largely position noise")
    return "; ".join(parts) if parts else None



# --- loading a pipeline's inputs and writing the outputs ---------------------------------------------

@dataclass(frozen=True)
class JudgePaths:
    """Where the judge reads a pipeline's outputs (relative to the repository root by default)."""

    corpus: Path = Path("data/fetch/corpus.jsonl")
    test: Path = Path("data/synthesize/test.jsonl")
    embed_dir: Path = Path("data/embed")
    adapter: Path = Path("models/adapter")


def build_items(paths: JudgePaths, params: JudgeParams, load_adapter: Callable[[Path], Any] | None = None
                ) -> tuple[list[JudgeItem], dict[str, Any]]:
    """Select the judged questions (seeded), retrieve top-k for both arms with the exact search eval
    uses, render each arm's context and the reference. Returns the items and setup facts for the report."""
    from .evaluation import (EmbeddingArm, QuerySet, adapter_arm, hit_matrix, identity, load_corpus_with_embeddings,
                             load_test_set, require_file)
    from .records import load_test

    corpus = load_corpus_with_embeddings(paths.corpus, paths.embed_dir / "corpus.npz")
    test_path = paths.test
    test = load_test_set(test_path, paths.embed_dir / "test.npz", corpus.ids)
    records = {q.id: q for q in load_test(test_path)}
    require_file(paths.adapter, "train the adapter first (dvc repro train, or make run)")
    # under k-fold (train.folds) each question's answer comes from the adapter that never saw it
    adapter = adapter_arm("adapter", corpus.emb, paths.adapter, load_adapter)

    sel = select_questions(len(test.ids), params.max_questions, params.seed)
    subset = QuerySet(name="judge", ids=[test.ids[i] for i in sel], query_emb=test.query_emb[sel],
                      relevant=[test.relevant[i] for i in sel], origins=[test.origins[i] for i in sel],
                      texts=[test.texts[i] for i in sel] if test.texts is not None else None)
    arms = {"cosine": EmbeddingArm("cosine", corpus.emb, identity),
            "adapter": adapter}
    top = {arm: a.retrieve(subset, params.top_k) for arm, a in arms.items()}  # (m, k), -1 = nothing
    context_hits = {arm: hit_matrix(idx, subset.relevant).any(axis=1) for arm, idx in top.items()}

    row_of = {cid: i for i, cid in enumerate(corpus.ids)}
    items = []
    for q, qid in enumerate(subset.ids):
        rec = records[qid]
        rel_rows = [row_of[r] for r in rec.relevant_ids]
        reference = build_reference(rec.answer, [corpus.titles[r] for r in rel_rows],
                                    [corpus.texts[r] for r in rel_rows], params.max_reference_chars)
        rows = {arm: [int(r) for r in idx[q] if r >= 0] for arm, idx in top.items()}
        items.append(JudgeItem(
            question_id=qid, question=rec.question, reference=reference,
            chunk_ids={arm: [corpus.ids[r] for r in rs] for arm, rs in rows.items()},
            context={arm: render_context([corpus.titles[r] for r in rs], [corpus.texts[r] for r in rs],
                                         params.max_chunk_chars) for arm, rs in rows.items()}))
    kinds = sorted({it.reference.kind for it in items})
    setup = {"test_file": str(test_path), "test_questions": len(test.ids), "corpus_chunks": len(corpus.ids),
             "question_ids": list(subset.ids), "origin": _origin_label(subset.origins),
             "reference": kinds[0] if len(kinds) == 1 else "mixed",
             "context_hit_rate": {arm: _round(h.mean()) if len(h) else None for arm, h in context_hits.items()}}
    return items, setup


def _origin_label(origins: Sequence[str]) -> str:
    kinds = sorted(set(origins))
    return kinds[0] if len(kinds) == 1 else "mixed (" + ", ".join(f"{origins.count(k)} {k}" for k in kinds) + ")"


def flat_judge_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric headline values as MLflow keys under `judge.`: per arm and metric (with `_ci_low` /
    `_ci_high`), adapter-vs-cosine counts and p-values, order agreement, failures, usage."""
    out: dict[str, float] = {}
    for arm, block in metrics["arms"].items():
        for m, v in block.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"judge.{arm}.{m}"] = float(v)
        for m, ci in block.get("ci", {}).items():
            if ci is not None:
                out[f"judge.{arm}.{m}_ci_low"], out[f"judge.{arm}.{m}_ci_high"] = float(ci[0]), float(ci[1])
    for m, c in metrics["adapter_vs_cosine"].items():
        for k in ("wins", "ties", "losses", "sign_test_p", "diff"):
            if c.get(k) is not None:
                out[f"judge.adapter_vs_cosine.{m}.{k}"] = float(c[k])
    agreement = metrics["order_agreement"]
    for m, v in (agreement.get("rate") or {}).items():
        if v is not None:
            out[f"judge.order_agreement.{m}"] = float(v)
    for k in ("first_preferred", "second_preferred", "tie"):
        if metrics["position_preference"].get(k) is not None:
            out[f"judge.position_preference.{k}"] = float(metrics["position_preference"][k])
    out["judge.failures"] = float(metrics["failures"]["total"])
    out["judge.questions_judged"] = float(metrics["setup"]["judged"])
    for k, v in (metrics.get("usage") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"judge.usage.{k}"] = float(v)
    return out


def write_judge_outputs(result: JudgeResult, out_dir: Path) -> list[Path]:
    """metrics.json, answers.jsonl, scores.csv and two grouped-bar PNGs (judge scores by arm, LLM-free
    scores by arm), each written atomically. Returns the paths written."""
    import csv

    from .io import atomic_open, write_json
    from .plots import grouped_bar_chart

    out_dir = Path(out_dir)
    metrics_path, answers_path, scores_path = out_dir / "metrics.json", out_dir / "answers.jsonl", out_dir / "scores.csv"
    write_json(metrics_path, result.metrics)
    with atomic_open(answers_path) as fh:
        for row in result.answers:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with atomic_open(scores_path) as fh:
        writer = csv.DictWriter(fh, fieldnames=score_columns(), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.scores)

    arms = result.metrics["arms"]
    conf = result.metrics["setup"]["confidence"]
    judged = result.metrics["setup"]["judged"]
    nan = float("nan")

    def series(metric_names: Sequence[str]) -> tuple[dict, dict]:
        vals = {a: [nan if arms[a][m] is None else arms[a][m] for m in metric_names] for a in ARMS}
        ivs = {a: [tuple(arms[a]["ci"][m]) if arms[a]["ci"][m] else (nan, nan) for m in metric_names] for a in ARMS}
        return vals, ivs

    judge_png = out_dir / "judge_scores.png"
    vals, ivs = series(JUDGE_METRICS)
    agreement = result.metrics["order_agreement"].get("overall_winner_rate")
    note = f"; orders agree {agreement:.0%}" if agreement is not None else ""
    grouped_bar_chart(judge_png, [m.replace("_", "\n") for m in JUDGE_METRICS], vals, ivs,
                      title=f"LLM judge scores by arm ({judged} questions, {conf:.0%} bootstrap intervals{note})",
                      ylabel="score (1-5, mean of both orders)", ylim=(0.0, 5.0), percent=False)
    text_png = out_dir / "text_scores.png"
    vals, ivs = series(TEXT_METRICS)
    grouped_bar_chart(text_png, [m.replace("_", " ") for m in TEXT_METRICS], vals, ivs,
                      title=f"Answer vs reference without an LLM ({conf:.0%} bootstrap intervals)",
                      ylabel="score (0-1)", ylim=(0.0, 1.0), percent=False)
    return [metrics_path, answers_path, scores_path, judge_png, text_png]


# --- wiring: the LLM layer, the embedder, the whole run -----------------------------------------------

_CACHE_VERSION = "judge/v1"
_TOOL_DESCRIPTIONS = {ANSWER_TOOL: "Submit the answer to the question, written from the context only.",
                      JUDGE_TOOL: "Submit the 1-5 scores of Answer 1 and Answer 2 on every criterion."}


def llm_cache_key(identity: Mapping[str, Any], call: LlmCall) -> str:
    """sha256 of everything that determines a reply: the backend (kind, exact model, seed), the prompt
    file's hash, the rendered messages, the tool and its schema, and this call's sampling params."""
    # The call's own max_tokens and temperature replace the llm section's, so those are not in the key.
    backend = {k: v for k, v in identity.items() if k not in ("max_tokens", "temperature")}
    return content_key(_CACHE_VERSION, backend, call.kind, call.prompt_sha256, call.system, call.user, call.tool,
                       call.schema, call.max_tokens, call.temperature)


def make_complete(backend: Any, cache: Any, stats: Any) -> Complete:
    """A `Complete` over the shared LLM layer: each call becomes a structured GenRequest, answered from
    the cache or by `backend` through `ragtune.llm.run_cached` (each reply committed as it arrives)."""
    from .llm import GenRequest, ToolSpec, run_cached

    identity = backend.identity()

    def complete(calls: Sequence[LlmCall]) -> list[LlmReply]:
        requests = [GenRequest(key=llm_cache_key(identity, c), system=c.system, user=c.user,
                               tool=ToolSpec(c.tool, _TOOL_DESCRIPTIONS.get(c.tool, c.tool), c.schema),
                               max_tokens=c.max_tokens, temperature=c.temperature) for c in calls]
        results = run_cached(backend, cache, requests, stats, meta={"stage": "judge"})
        replies = []
        for req in requests:
            r = results.get(req.key)
            if r is None:
                replies.append(LlmReply(False, reason="not_done", detail="the run stopped before this call"))
            elif r.ok:
                replies.append(LlmReply(True, r.output))
            else:
                replies.append(LlmReply(False, reason=r.reason, detail=r.detail))
        return replies

    return complete


def judge_llm_params(llm_params: Any, params: JudgeParams) -> Any:
    """The `llm` section the judge runs with: `ict` draws pseudo-queries and cannot answer or judge,
    so with `llm.backend: ict` the judge uses `judge.fallback_backend` (same section otherwise)."""
    if llm_params.backend == "ict":
        log.info("judge: llm.backend is ict (no language model); answering and judging with %s "
                 "(judge.fallback_backend)", params.fallback_backend)
        return llm_params.model_copy(update={"backend": params.fallback_backend})
    return llm_params


def run_judge(paths: JudgePaths, params: JudgeParams, llm_params: Any, embedding_params: Any,
              llm_cache_path: Path, embedding_cache_path: Path | None, load_adapter: Callable[[Path], Any] | None = None,
              backend: Any = None, embedding_model: Any = None) -> JudgeResult:
    """The judge stage's work: inputs -> answers -> judgements -> metrics. The backend comes from
    `llm_params` (its API key or model file is checked before any work); `embedding_cache_path` None
    skips embedding similarity."""
    import contextlib

    from .cache import ContentCache
    from .llm import RunStats, make_backend

    llm_params = judge_llm_params(llm_params, params)
    answer_prompt, judge_prompt = load_prompt(params.answer_prompt), load_prompt(params.judge_prompt)
    backend = backend if backend is not None else make_backend(llm_params)
    items, setup = build_items(paths, params, load_adapter)
    setup = {"backend": backend.name, "model": backend.model, **setup}
    stats = RunStats()
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(ContentCache(llm_cache_path))
        embed_texts: EmbedTexts | None = None
        if embedding_cache_path is not None:
            embedder: list[Any] = []

            def embed_texts(texts: Sequence[str]) -> np.ndarray:
                if not embedder:  # loaded only when there are answers to embed
                    from .embedding import CachedEmbedder

                    emb_cache = stack.enter_context(ContentCache(embedding_cache_path))
                    embedder.append(CachedEmbedder(embedding_params, emb_cache, model=embedding_model))
                return embedder[0].encode_documents(list(texts), desc="answers and references")
        try:
            result = judge_items(items, params, make_complete(backend, cache, stats), embed_texts, answer_prompt,
                                 judge_prompt, setup=setup)
        finally:
            backend.close()
    result.metrics["usage"] = stats.as_dict()
    result.metrics["warning"] = judge_warning(result.metrics, backend.name, backend.model)
    return result
