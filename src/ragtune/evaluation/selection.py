"""Which retriever to deploy, from labelled real questions: the best arm, how sure that is, and what would settle it.

`choose_with_labels` takes each arm's per-question score on labelled questions that no arm trained on (the
reciprocal rank of the first relevant chunk within MRR@k, (n,) per arm) and names the arm with the best mean,
compared with the runner-up by a paired bootstrap on the same questions. The statement says, in words a user
can act on, whether the choice is settled and, if not, about how many more labelled questions would settle it.

"Settled" means one of three things: the best arm is ahead of the runner-up beyond chance (paired p < alpha);
the two are practically equal (the interval of their difference lies within `margin` of zero, so either can be
deployed); or the runner-up is not ahead of the best by more than `margin` (the interval's lower end is above
-margin: deploying the best costs at most that). Otherwise more labels are needed: the estimate is the sample
size at which, with 80% power at this mean difference and spread, the difference would show beyond chance or the
runner-up's possible lead would shrink within the margin, whichever comes first (`questions_to_settle`).

With a `prior` (the arm eval would deploy without labels), the labels' best replaces it only when ahead of it
beyond chance; otherwise the prior is compared with the labels' best as above and stays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from .statistics import paired_bootstrap

# The power a "label about N more" estimate aims at.
POWER = 0.8
# Below this many labelled questions nothing is called settled: a handful of questions can agree by chance,
# and a bootstrap interval over them is too narrow to mean anything.
MIN_SETTLED = 10


@dataclass(frozen=True)
class LabelledChoice:
    """The arm to deploy on labelled questions, with the evidence behind it."""

    arm: str
    runner_up: str | None
    questions: int
    scores: dict[str, float]  # mean score per arm on the labelled questions
    diff: float | None  # best minus runner-up (mean paired difference)
    interval: tuple[float, float] | None  # its bootstrap interval
    p_value: float | None  # paired bootstrap, best vs runner-up
    settled: bool
    more_questions: int | None  # labels to add to settle it; None when settled or not estimable
    statement: str
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {
            "arm": self.arm,
            "runner_up": self.runner_up,
            "questions": self.questions,
            "scores": {a: round(v, 4) for a, v in self.scores.items()},
            "diff": None if self.diff is None else round(self.diff, 4),
            "interval": None if self.interval is None else [round(x, 4) for x in self.interval],
            "p_value": None if self.p_value is None else float(f"{self.p_value:.3g}"),
            "settled": self.settled,
            "more_questions": self.more_questions,
            "statement": self.statement,
        }
        return {**out, **self.extra}


def questions_to_detect(diffs: np.ndarray, alpha: float, power: float = POWER) -> int | None:
    """Paired questions needed to detect the mean of `diffs` (n,) at two-sided `alpha` with `power`
    (normal approximation); None when the mean difference is 0 or there is no spread to scale it by."""
    d = float(np.mean(diffs))
    s = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if d == 0.0 or s == 0.0:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return int(math.ceil((z * s / abs(d)) ** 2))


def choose_with_labels(
    scores_by_arm: Mapping[str, np.ndarray],
    metric: str = "MRR@20",
    alpha: float = 0.05,
    margin: float = 0.02,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 42,
    order: tuple[str, ...] = ("cosine", "adapter", "linear", "bm25", "hybrid_cosine", "hybrid"),
    prior: str | None = None,
) -> LabelledChoice:
    """The best arm by mean score on the same labelled questions (`scores_by_arm`: arm -> (n,) per-question
    scores, e.g. reciprocal ranks), tested against the runner-up. Ties go to the arm earlier in `order` (the
    simpler one). `margin`: how far behind the runner-up (in the metric's units) a choice may be and still be
    deployed; a difference whose interval lies within +-margin is practically none.

    `prior`: the arm chosen without labels (eval's no-label policy). When the labels' best is another arm, it
    replaces the prior only if it is ahead of it beyond chance (paired p < alpha); otherwise the prior stays,
    and the statement says so and how many labels would tell them apart. A few labelled questions rank five
    correlated arms noisily, and the prior rests on several corpora (`extra`: prior, overturned)."""
    arms = list(scores_by_arm)
    if not arms:
        raise ValueError("no arms to choose from")
    lengths = {len(np.asarray(v)) for v in scores_by_arm.values()}
    if len(lengths) != 1:
        raise ValueError(f"arms were scored on different numbers of questions: {sorted(lengths)}")
    n = lengths.pop()
    rank = {a: (order.index(a) if a in order else len(order)) for a in arms}
    means = {a: float(np.mean(scores_by_arm[a])) if n else 0.0 for a in arms}
    ranked = sorted(arms, key=lambda a: (-means[a], rank[a]))
    best = ranked[0]
    if n == 0:
        return LabelledChoice(
            prior if prior is not None and prior in scores_by_arm else best,
            None,
            0,
            means,
            None,
            None,
            None,
            False,
            None,
            "No labelled questions yet: label some to choose on real questions.",
        )
    if len(ranked) == 1:
        return LabelledChoice(
            best,
            None,
            n,
            means,
            None,
            None,
            None,
            True,
            None,
            f"{best} is the only arm evaluated ({metric} {means[best]:.3f} on {n} questions).",
        )
    contender = prior if prior is not None and prior in scores_by_arm and prior != best else None
    extra = {"prior": prior, "overturned": False} if prior is not None else {}
    common = (scores_by_arm, n, means, metric, alpha, margin, resamples, confidence, seed)
    if contender is None:
        return _compare(best, ranked[1], "the runner-up", *common, extra=extra)
    # The labels' best replaces the choice made without labels only when ahead of it beyond chance.
    ahead = _compare(best, contender, "the choice without labels", *common, extra={"prior": prior, "overturned": True})
    if ahead.p_value is not None and ahead.p_value < alpha and (ahead.diff or 0.0) > 0:
        return dataclasses.replace(
            ahead, statement=ahead.statement + " The labels overturn the choice made without them."
        )
    return _compare(contender, best, "the labels' best", *common, extra=extra, stays=True)


def questions_to_settle(diffs: np.ndarray, alpha: float, margin: float, power: float = POWER) -> int | None:
    """Paired questions after which a choice with these per-question differences (chosen minus other, (n,))
    would be settled at this mean and spread: enough to show the difference beyond chance
    (`questions_to_detect`), or to show the other arm is not ahead by more than `margin` (the interval's far end
    within margin), whichever is fewer. None when neither can happen (no spread, or no difference and none
    within the margin to show)."""
    d = float(np.mean(diffs))
    s = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if s == 0.0:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    options = [math.ceil((z * s / abs(d)) ** 2)] if d != 0.0 else []
    if d + margin > 0:
        options.append(math.ceil((z * s / (d + margin)) ** 2))
    return int(min(options)) if options else None


def _compare(
    chosen: str,
    other: str,
    role: str,
    scores_by_arm: Mapping[str, np.ndarray],
    n: int,
    means: dict[str, float],
    metric: str,
    alpha: float,
    margin: float,
    resamples: int,
    confidence: float,
    seed: int,
    extra: dict,
    stays: bool = False,
) -> LabelledChoice:
    """`chosen` against `other` (`role`: what the other arm is, for the statement) on the same questions:
    settled when `chosen` is ahead beyond chance, when the two are practically equal, or when `other` is not
    ahead by more than `margin` (the interval of chosen minus other starts above -margin: deploying `chosen`
    costs at most that); else how many more labels would settle it. `stays`: `chosen` is the choice without
    labels, kept because `other` is not ahead of it beyond chance."""
    a, b = np.asarray(scores_by_arm[chosen], float), np.asarray(scores_by_arm[other], float)
    test = paired_bootstrap(a, b, resamples, confidence, seed)
    head = (
        f"On {n} labelled questions {chosen} has {metric} {means[chosen]:.3f} and {role}, {other}, "
        f"{means[other]:.3f} (difference {test.diff:+.3f}, {confidence:.0%} interval {test.low:+.3f} to "
        f"{test.high:+.3f}, paired p={test.p_value:.2g})."
    )
    if stays:
        head += f" {other} is not ahead of {chosen} beyond chance, so {chosen}, the choice without labels, stays."
    settled: bool = True
    more: int | None = None
    if n < MIN_SETTLED:
        settled, more = False, MIN_SETTLED - n
        tail = f"Not settled: too few labels to judge; label at least {more} more questions."
    elif test.p_value < alpha and test.diff > 0:
        tail = f"Settled: {chosen} is ahead of {other} beyond chance."
    elif -margin <= test.low and test.high <= margin:
        tail = f"Settled: the two are practically equal (within {margin} either way); either can be deployed."
    elif -margin <= test.low:
        tail = (
            f"Settled: {other} is not ahead of {chosen} by more than {margin} ({confidence:.0%} interval), so "
            f"{chosen} can be deployed."
        )
    else:
        needed = questions_to_settle(a - b, alpha, margin)
        settled, more = False, None if needed is None else max(needed - n, 1)
        tail = (
            "Not settled: the two arms score the same on these questions; label more to tell them apart."
            if more is None
            else f"Not settled: label about {more} more questions (about {n + more} in all) to settle it."
        )
    return LabelledChoice(
        chosen, other, n, means, test.diff, (test.low, test.high), test.p_value, settled, more, f"{head} {tail}", extra
    )
