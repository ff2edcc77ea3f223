"""What the judge's LLM sees and must return: the answer and score schemas, contexts, references.

Its prompt files (src/ragtune/prompts/<name>.txt) are read by `ragtune.llm.prompts.load_prompt`, versioned
by their hash. An answer is one string of at most `answer_chars(max_tokens)` characters; a judgement is six
1-5 integers for each of two answers. Replies that break a schema raise `ValidationError` with the first error
named (`_first_error`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from ..llm.prompts import Prompt, load_prompt

ARMS: tuple[str, str] = ("cosine", "adapter")
JUDGE_METRICS: tuple[str, ...] = (
    "faithfulness",
    "answer_relevance",
    "completeness",
    "conciseness",
    "semantic_similarity",
    "overall",
)
TEXT_METRICS: tuple[str, ...] = ("token_f1", "embedding_similarity")
# The display orders of a pair: which arm is Answer 1 and which Answer 2.
ORDERS: tuple[tuple[str, str], ...] = (("cosine", "adapter"), ("adapter", "cosine"))
ORDER_NAMES: tuple[str, ...] = ("cosine_first", "adapter_first")
ANSWER_TOOL = "submit_answer"
JUDGE_TOOL = "submit_scores"


def load_judge_prompts(answer_prompt: str, judge_prompt: str) -> tuple[Prompt, Prompt]:
    """The prompt files `judge.answer_prompt` and `judge.judge_prompt` name: (answer prompt, judge prompt)."""
    return (
        load_prompt(answer_prompt, setting="judge.answer_prompt"),
        load_prompt(judge_prompt, setting="judge.judge_prompt"),
    )


def answer_chars(max_tokens: int) -> int:
    """The longest answer accepted: about three characters a token, so a grammar-constrained local
    model closes the JSON before it runs out of tokens (a cut-off reply is a failure)."""
    return max(40, 3 * max_tokens - 30)


def answer_schema(max_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "answer": {
                "type": "string",
                "maxLength": max_chars,
                "description": "The short answer, from the context only.",
            },
            "context_sufficient": {
                "type": "boolean",
                "description": "false when the context does not contain the answer",
            },
        },
        "required": ["answer", "context_sufficient"],
        "additionalProperties": False,
    }


def judge_schema() -> dict[str, Any]:
    score = {"type": "integer", "minimum": 1, "maximum": 5}
    one = {
        "type": "object",
        "properties": {m: dict(score) for m in JUDGE_METRICS},
        "required": list(JUDGE_METRICS),
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"answer_1": one, "answer_2": dict(one)},
        "required": ["answer_1", "answer_2"],
        "additionalProperties": False,
    }


Score = Field(ge=1, le=5)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: StrictStr = Field(min_length=1)
    context_sufficient: StrictBool


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
    return (
        f"{user}\n\nYour previous reply was rejected because it does not match the required format "
        f"({error}). Reply again with the {tool} JSON, with every required field present and valid."
    )


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


def build_reference(
    answer: str | None, relevant_titles: Sequence[str | None], relevant_texts: Sequence[str], max_chars: int
) -> Reference:
    """The expert answer when the test set has one; otherwise the relevant chunks' text, cut at
    `max_chars` characters."""
    if answer is not None and answer.strip():
        return Reference(answer.strip(), "expert answer")
    joined = render_context(relevant_titles, relevant_texts, max_chars)
    text, truncated = _cut(joined, max_chars)
    return Reference(text, "relevant passages", truncated)
