"""Uncertainty for retrieval metrics: seeded bootstrap intervals, paired tests, multiple-test correction.

Everything works on per-question values (one row per question), so any metric that is a mean over
questions (hit rate, reciprocal rank, recall, nDCG) gets an interval the same way. Resampling is done
as a matrix product: a (resamples, n) matrix of counts times the (n, metrics) values gives every
resampled mean at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

# Resamples drawn per block: at most this many, and at most _BLOCK_CELLS draws a block, so memory stays bounded
# (~40 bytes a cell in flight: ~160 MB) whatever the number of resamples and of items (1M questions at 2,000 a
# block held 16 GB a copy). Below 2,000 items blocks are as before.
_RESAMPLE_BLOCK = 2000
_BLOCK_CELLS = 4_000_000


def bootstrap_counts(n: int, n_resamples: int, seed: int, block: int | None = None) -> Iterator[np.ndarray]:
    """Yield float32 count matrices (b, n): how often each of n items is drawn in each resample.

    The stream depends only on (n, n_resamples, seed), not on the block size: the same seed gives the same
    resamples for every metric and every arm, so intervals of different arms are computed on the same resampled
    question sets.
    """
    if block is None:
        block = max(1, min(_RESAMPLE_BLOCK, _BLOCK_CELLS // max(n, 1)))
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        draws = rng.integers(0, n, size=(b, n))
        # Offsetting each resample's draws by its row makes one bincount count all rows at once.
        flat = (draws + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float32)
        done += b


def bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Resampled means of each column of `values` (n, m) or (n,): returns (n_resamples, m) or (n_resamples,)."""
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v2 = v[:, None] if squeeze else v
    n = v2.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    means = np.concatenate([counts.astype(np.float64) @ v2 for counts in bootstrap_counts(n, n_resamples, seed)]) / n
    return means[:, 0] if squeeze else means


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail], axis=0)
    return lo, hi


@dataclass(frozen=True)
class Interval:
    """A point estimate (the sample mean) with a percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> Interval | list[Interval]:
    """Percentile bootstrap interval of the mean. `values` (n,) gives one Interval; (n, m) gives m of them."""
    v = np.asarray(values, dtype=np.float64)
    means = bootstrap_means(v, n_resamples, seed)
    lo, hi = _percentiles(means, confidence)
    point = v.mean(axis=0)
    if v.ndim == 1:
        return Interval(float(point), float(lo), float(hi))
    return [Interval(float(p), float(a), float(b)) for p, a, b in zip(point, lo, hi)]


def bootstrap_interval(
    values: np.ndarray, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """`bootstrap_ci` of a 1-D sample: its one Interval."""
    iv = bootstrap_ci(values, n_resamples, confidence, seed)
    if not isinstance(iv, Interval):
        raise ValueError(f"bootstrap_interval: expected a 1-D sample, got shape {np.shape(values)}")
    return iv


def bootstrap_intervals(
    matrix: np.ndarray, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> list[Interval]:
    """`bootstrap_ci` of each column of an (n, m) matrix, all on the same resamples."""
    ivs = bootstrap_ci(matrix, n_resamples, confidence, seed)
    if not isinstance(ivs, list):
        raise ValueError(f"bootstrap_intervals: expected an (n, m) matrix, got shape {np.shape(matrix)}")
    return ivs


@dataclass(frozen=True)
class PairedBootstrap:
    """Mean of `a - b` over questions, its bootstrap interval and a two-sided p-value for 'no difference'."""

    diff: float
    low: float
    high: float
    p_value: float


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> PairedBootstrap:
    """Paired bootstrap on per-question values of two systems (same questions, same order).

    Questions are resampled together, so the interval reflects the per-question pairing. The p-value
    tests mean difference 0 with the resampled differences centred on zero (the null): the share of
    resamples whose |centred difference| reaches the observed |difference|, with the +1 correction so
    it is never 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same 1-d shape, got {a.shape} and {b.shape}")
    d = a - b
    observed = float(d.mean())
    boot = bootstrap_means(d, n_resamples, seed)
    lo, hi = _percentiles(boot, confidence)
    if np.all(d == d[0]):  # no variation: every resample equals the observed difference
        p = 1.0 if observed == 0.0 else 1.0 / (n_resamples + 1)
    else:
        extreme = np.abs(boot - observed) >= abs(observed) - 1e-12
        p = (1.0 + float(extreme.sum())) / (n_resamples + 1.0)
    return PairedBootstrap(observed, float(lo), float(hi), min(1.0, p))


def sign_test(n_positive: int, n_negative: int) -> float:
    """Exact two-sided sign test: P-value of a split at least this uneven under a fair coin (ties dropped).

    Closed form: min(1, 2 * P[X <= min(n+, n-)]) with X ~ Binomial(n+ + n-, 1/2); 1.0 when there are no
    untied pairs.
    """
    if n_positive < 0 or n_negative < 0:
        raise ValueError("counts must be non-negative")
    n = n_positive + n_negative
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(n_positive, n_negative), n, 0.5)))


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of two binary outcomes. `gained`: b right where a was wrong; `lost`: the reverse."""

    gained: int
    lost: int
    p_value: float


def mcnemar_exact(hit_a: np.ndarray, hit_b: np.ndarray) -> McNemar:
    """Exact McNemar test of system b against system a on per-question hits (boolean arrays).

    Only the discordant questions count: the test is a sign test on (gained, lost).
    """
    a = np.asarray(hit_a, dtype=bool)
    b = np.asarray(hit_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired hits need the same shape, got {a.shape} and {b.shape}")
    gained = int((b & ~a).sum())
    lost = int((a & ~b).sum())
    return McNemar(gained, lost, sign_test(gained, lost))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): controls the family-wise error rate."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(m)
    out[order] = adjusted_sorted
    return [float(x) for x in out]
