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


def test_a_handful_of_questions_is_never_settled():
    one = choose_with_labels({"cosine": np.array([1.0]), "adapter": np.array([1.0])})
    assert not one.settled and one.more_questions == 9 and "too few labels" in one.statement
    few = choose_with_labels({"cosine": np.zeros(5), "adapter": np.ones(5)})
    assert few.arm == "adapter" and not few.settled and few.more_questions == 5
