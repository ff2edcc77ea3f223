"""choose_with_labels: the best arm on labelled questions, the paired test against the runner-up, and the
settled / "label about N more" statement."""

import numpy as np
import pytest

from ragtune.evaluation.selection import choose_with_labels, questions_to_detect


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
    needed = questions_to_detect(hybrid - a, 0.05)
    assert choice.more_questions == needed - 20 > 0
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
    assert kept.more_questions == questions_to_detect(close["adapter"] - base, 0.05) - 25
    assert "adapter is not ahead of hybrid beyond chance, so hybrid stays" in kept.statement
    assert choose_with_labels(close).arm == "adapter"  # without a prior, the labels' best
    # far ahead: the labels overturn the prior
    far = {"hybrid": base, "adapter": base + 0.3}
    over = choose_with_labels(far, prior="hybrid")
    assert over.arm == "adapter" and over.settled and over.as_dict()["overturned"] is True
    assert "the labels overturn the choice made without them" in over.statement
    # the prior is the labels' best too: the usual test against the runner-up
    agree = choose_with_labels({"hybrid": base + 0.3, "adapter": base}, prior="hybrid")
    assert agree.arm == "hybrid" and agree.settled and agree.extra == {"prior": "hybrid", "overturned": False}
    # no labels yet: the prior
    assert choose_with_labels({"cosine": np.array([]), "hybrid": np.array([])}, prior="hybrid").arm == "hybrid"
