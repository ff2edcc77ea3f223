"""What makes a generated question usable: cleaning, the filters that drop it (each reason counted), and the
degenerate-question warning (near-copies of their chunk, `textnorm.is_near_copy`, teach nothing).
"""

from __future__ import annotations

import re

from pydantic import Field

from ..params import Section


class FilterParams(Section):
    min_chars: int = Field(10, ge=1, le=1000)
    max_chars: int = Field(300, ge=10, le=5000)
    # LLM questions must end with "?" (ICT pseudo-queries are sentences by design: exempt).
    require_question_mark: bool = True
    drop_references_to_source: bool = True  # "according to the passage", "in this text", …


_SOURCE_REF = re.compile(
    r"\b(?:the|this|that|above|given|provided|following|said)\s+(?:text|passage|excerpt|snippet|chunk|extract)\b"
    r"|\baccording to the (?:document|article|section)\b",
    re.I,
)


# Labels small models put before a question: "1.", "Q:", "Question 2:", "A:", "- ".
_LABEL = re.compile(r"^\s*(?:(?:question|q|a)\s*\d*\s*[:.)-]\s*|\d{1,2}\s*[.):-]\s*|[-*•]\s+)+", re.I)


def clean(q: str) -> str:
    """Collapse whitespace and strip a leading list label or "Question 1:"; the text is otherwise kept."""
    return _LABEL.sub("", " ".join(q.split())).strip()


# The share of degenerate training questions from which synthesize warns.
DEGENERATE_WARN_SHARE = 0.2


def degenerate_warning(count: int, share: float) -> str | None:
    """The warning for `count` degenerate training questions (`share` of those kept), or None below the bar."""
    if share < DEGENERATE_WARN_SHARE:
        return None
    return (
        f"{count} training questions ({share:.0%}) are near-copies of their chunk (chunks of about one "
        "sentence?): validation will look perfect and nothing is learnt. Set llm.ict.style: keyphrase or "
        "both, or use an LLM backend (llm.backend: llamacpp | anthropic)"
    )


def check_question(q: str, f: FilterParams, want_question_mark: bool) -> str | None:
    """The reason to drop `q` on its own (duplicates are handled by the caller), or None to keep it."""
    s = q.strip()
    if not s:
        return "empty"
    if len(s) < f.min_chars:
        return "too_short"
    if len(s) > f.max_chars:
        return "overlong"
    if want_question_mark and f.require_question_mark and not s.endswith("?"):
        return "not_a_question"
    if f.drop_references_to_source and _SOURCE_REF.search(s):
        return "refers_to_source"
    return None
