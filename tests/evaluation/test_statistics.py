"""Bootstrap intervals, paired tests and multiple-test correction against hand-computed values."""

from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest

from ragtune.evaluation.statistics import (
    Interval,
    bootstrap_ci,
    bootstrap_counts,
    bootstrap_means,
    holm_adjust,
    mcnemar_exact,
    paired_bootstrap,
    sign_test,
)


def two_sided_by_hand(b: int, c: int) -> float:
    n = b + c
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


@pytest.mark.parametrize(
    "gained, lost, expected",
    [
        (1, 6, 0.125),  # 2 * (1 + 7) / 128
        (6, 1, 0.125),  # symmetric
        (0, 5, 0.0625),  # 2 / 32
        (2, 10, 0.0385742188),  # 2 * (1 + 12 + 66) / 4096
        (0, 10, 0.001953125),  # 2 / 1024
        (3, 3, 1.0),
        (0, 1, 1.0),
        (0, 0, 1.0),  # no discordant pair: no evidence either way
    ],
)
def test_sign_test_known_values(gained, lost, expected):
    assert sign_test(gained, lost) == pytest.approx(expected, rel=1e-8)


def test_sign_test_agrees_with_scipy_binomtest_and_closed_form():
    for b in range(0, 30, 3):
        for c in range(0, 40, 7):
            if b + c:
                assert sign_test(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-15)
                assert sign_test(b, c) == pytest.approx(two_sided_by_hand(b, c), rel=1e-9)


def test_mcnemar_counts_only_discordant_questions():
    cosine = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    adapter = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    m = mcnemar_exact(cosine, adapter)
    assert (m.gained, m.lost) == (5, 1)
    assert m.p_value == pytest.approx(two_sided_by_hand(5, 1))  # 2 * 7 / 64 = 0.21875
    assert m.p_value == pytest.approx(0.21875)
    # Swapping the systems swaps gained and lost, not the p-value.
    r = mcnemar_exact(adapter, cosine)
    assert (r.gained, r.lost, r.p_value) == (1, 5, m.p_value)
    with pytest.raises(ValueError):
        mcnemar_exact(cosine, adapter[:5])


def test_bootstrap_is_deterministic_per_seed():
    values = np.random.default_rng(1).random(57)
    a = bootstrap_ci(values, 2000, 0.95, seed=7)
    assert a == bootstrap_ci(values, 2000, 0.95, seed=7)
    assert a != bootstrap_ci(values, 2000, 0.95, seed=8)
    assert a.low < a.value < a.high and a.value == pytest.approx(values.mean())


def test_bootstrap_blocks_do_not_change_the_resamples():
    blocked = np.concatenate(list(bootstrap_counts(40, 1000, seed=3, block=128)))
    whole = np.concatenate(list(bootstrap_counts(40, 1000, seed=3, block=5000)))
    assert blocked.shape == (1000, 40)
    np.testing.assert_array_equal(blocked, whole)
    np.testing.assert_array_equal(blocked.sum(axis=1), 40)  # each resample draws n items


def test_columns_share_resamples_and_match_single_column_calls():
    rng = np.random.default_rng(0)
    matrix = np.stack([rng.random(30) > 0.5, rng.random(30)], axis=1).astype(float)
    both = bootstrap_ci(matrix, 3000, 0.9, seed=11)
    assert isinstance(both, list) and len(both) == 2
    for j in range(2):
        single = bootstrap_ci(matrix[:, j], 3000, 0.9, seed=11)
        assert (both[j].value, both[j].low, both[j].high) == pytest.approx((single.value, single.low, single.high))
    assert bootstrap_means(matrix, 3000, 11).shape == (3000, 2)


def test_interval_width_of_a_hundred_coin_flips_is_about_nine_points_each_side():
    hits = np.array([1.0] * 50 + [0.0] * 50)
    iv = bootstrap_ci(hits, 10_000, 0.95, seed=0)
    # Normal approximation: 1.96 * sqrt(0.25 / 100) = 0.098.
    assert iv.value == 0.5
    assert 0.08 < iv.value - iv.low < 0.11 and 0.08 < iv.high - iv.value < 0.11


def test_constant_values_give_a_degenerate_interval():
    assert bootstrap_ci(np.ones(12), 500, 0.95, seed=0) == Interval(1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]), 100)


def test_paired_bootstrap_identical_systems():
    rr = np.random.default_rng(2).random(40)
    pb = paired_bootstrap(rr, rr.copy(), 2000, 0.95, seed=0)
    assert (pb.diff, pb.low, pb.high, pb.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_detects_a_clear_gain_and_is_antisymmetric():
    rng = np.random.default_rng(3)
    base = rng.random(100) * 0.5
    better = base + 0.2 + rng.normal(0, 0.05, 100)
    pb = paired_bootstrap(better, base, 5000, 0.95, seed=1)
    assert pb.diff == pytest.approx(float((better - base).mean()))
    assert 0.0 < pb.low < pb.diff < pb.high
    assert pb.p_value == pytest.approx(1 / 5001)  # no centred resample reaches the observed gain
    rev = paired_bootstrap(base, better, 5000, 0.95, seed=1)
    assert rev.diff == pytest.approx(-pb.diff) and rev.p_value == pb.p_value
    assert (rev.low, rev.high) == pytest.approx((-pb.high, -pb.low), abs=1e-9)


def test_paired_bootstrap_noise_is_not_significant():
    rng = np.random.default_rng(4)
    a, b = rng.random(80), rng.random(80)
    pb = paired_bootstrap(a, b, 5000, 0.95, seed=0)
    assert pb.low < 0 < pb.high and pb.p_value > 0.05
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10])


def test_holm_adjustment_by_hand():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([0.2]) == [0.2] and holm_adjust([]) == []
