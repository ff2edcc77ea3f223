"""choose_with_labels: the best arm on labelled questions, the paired test against the runner-up, and the
settled / "label about N more" statement."""

import numpy as np
import pytest

from ragtune.evaluation.selection import choose_with_labels, questions_to_detect, questions_to_settle


def test_clear_winner_is_settled():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.5, 60)
    choice = choose_with_labels({"bm25": base, "adapter": base + 0.3, "cosine": base + 0.05})
    assert choice.arm == "adapter" and choice.runner_up == "cosine"
    assert choice.settled and choice.p_value < 0.05 and choice.more_questions is None
    assert "Settled" in choice.statement and "adapter is ahead" in choice.statement


def test_close_call_asks_for_more_labels():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 20)
    noise = rng.normal(0, 0.3, 20)
    hybrid = a + 0.05 + noise - noise.mean()
    choice = choose_with_labels({"hybrid": hybrid, "adapter": a})
    assert choice.arm == "hybrid" and not choice.settled
    needed = questions_to_settle(hybrid - a, 0.05, 0.02)
    # enough to show the lead beyond chance, or to show adapter cannot lead by more than the margin: the fewer
    assert needed < questions_to_detect(hybrid - a, 0.05) and choice.more_questions == needed - 20 > 0
    assert f"label about {choice.more_questions} more questions" in choice.statement


def test_practically_equal_arms_are_settled_either_way():
    a = np.tile([0.0, 1.0, 0.5, 0.25], 50)
    choice = choose_with_labels({"cosine": a, "adapter": a.copy()})
    assert choice.arm == "cosine", "a tie goes to the simpler arm"
    assert choice.settled and "practically equal" in choice.statement


def test_no_labels_and_mismatched_lengths():
    assert not choose_with_labels({"cosine": np.array([]), "bm25": np.array([])}).settled
    with pytest.raises(ValueError, match="different numbers of questions"):
        choose_with_labels({"cosine": np.zeros(3), "bm25": np.zeros(4)})


def test_a_prior_stays_until_the_labels_show_another_arm_ahead_beyond_chance():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 25)
    noise = rng.normal(0, 0.3, 25)
    # the labels' best (adapter, +0.04) is not ahead of the prior (hybrid) beyond chance: the prior stays
    close = {"hybrid": base, "adapter": base + 0.04 + noise - noise.mean(), "cosine": base - 0.2}
    kept = choose_with_labels(close, prior="hybrid")
    assert kept.arm == "hybrid" and kept.runner_up == "adapter" and not kept.settled
    assert kept.extra == {"prior": "hybrid", "overturned": False} and kept.diff == pytest.approx(-0.04, abs=1e-9)
    assert kept.more_questions == questions_to_settle(base - close["adapter"], 0.05, 0.02) - 25
    assert "adapter is not ahead of hybrid beyond chance, so hybrid, the choice without labels, stays" in kept.statement
    assert choose_with_labels(close).arm == "adapter"  # without a prior, the labels' best
    # far ahead: the labels overturn the prior
    far = {"hybrid": base, "adapter": base + 0.3}
    over = choose_with_labels(far, prior="hybrid")
    assert over.arm == "adapter" and over.settled and over.as_dict()["overturned"] is True
    assert "The labels overturn the choice made without them." in over.statement
    # the prior is the labels' best too: the usual test against the runner-up
    agree = choose_with_labels({"hybrid": base + 0.3, "adapter": base}, prior="hybrid")
    assert agree.arm == "hybrid" and agree.settled and agree.extra == {"prior": "hybrid", "overturned": False}
    # no labels yet: the prior
    assert choose_with_labels({"cosine": np.array([]), "hybrid": np.array([])}, prior="hybrid").arm == "hybrid"


def test_a_runner_up_that_cannot_lead_by_more_than_the_margin_settles_it():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 400)
    noise = rng.normal(0, 0.1, 400)
    ahead = base + 0.008 + noise - noise.mean()  # ahead, not beyond chance; the interval's low end above -0.01
    choice = choose_with_labels({"hybrid": ahead, "hybrid_cosine": base}, margin=0.01)
    assert choice.arm == "hybrid" and choice.settled and choice.p_value >= 0.05
    assert -0.01 <= choice.interval[0] < 0 and choice.interval[1] > 0.01
    assert "Settled: hybrid_cosine is not ahead of hybrid by more than 0.01 (95% interval)" in choice.statement
    # a wider margin of doubt than that: not settled, and the labels it takes are fewer than to detect the lead
    loose = choose_with_labels({"hybrid": ahead[:60], "hybrid_cosine": base[:60]}, margin=0.01)
    assert not loose.settled and loose.more_questions == questions_to_settle(ahead[:60] - base[:60], 0.05, 0.01) - 60


def test_a_handful_of_questions_is_never_settled():
    one = choose_with_labels({"cosine": np.array([1.0]), "adapter": np.array([1.0])})
    assert not one.settled and one.more_questions == 9 and "too few labels" in one.statement
    few = choose_with_labels({"cosine": np.zeros(5), "adapter": np.ones(5)})
    assert few.arm == "adapter" and not few.settled and few.more_questions == 5
