"""Hard-negative mining on a hand-built ranking, the loss that uses them, and their params."""

import numpy as np
import pytest
import torch

from ragtune.adapter.config import TrainParams
from ragtune.adapter.data import build_training_data
from ragtune.adapter.hard_negatives import Candidates, MiningRule, mine_hard_negatives, select_negatives
from ragtune.adapter.losses import InBatchRankingLoss
from ragtune.adapter.splits import split_by_chunk
from ragtune.adapter.training import train_adapter
from ragtune.errors import ParamsError
from ragtune.params import parse_section


def hand_built() -> tuple[Candidates, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One question whose gold chunk is row 0 (score 0.80). Raw cosine ranks rows 0..7, then 8, 9:

    rank: 1    2    3    4    5    6    7    8    9    10
    row:  0    1    2    3    4    5    6    7    8    9
    score .80  .79  .78  .70  .60  .55  .50  .45  .40  .35
    row 3 has row 0's exact text; rows 4 and 5 share row 0's parent document.
    """
    rows = np.arange(10)[None, :]
    scores = np.array([[0.80, 0.79, 0.78, 0.70, 0.60, 0.55, 0.50, 0.45, 0.40, 0.35]], dtype=np.float32)
    text_group = np.array([0, 1, 2, 0, 4, 5, 6, 7, 8, 9])
    parent_group = np.array([0, 1, 2, 3, 0, 0, 6, 7, 8, 9])
    return Candidates(rows, scores), np.array([0]), np.array([0.80]), text_group, parent_group


def test_window_margin_same_text_and_same_parent_are_excluded():
    cands, gold, gold_scores, text_group, parent_group = hand_built()
    # Window ranks 2..10; margin 0.05: scores above 0.76 (rows 1, 2) are too close to the gold's 0.80;
    # row 3 is the gold's text twin; rows 4, 5 its parent's other chunks.
    rule = MiningRule(count=3, min_rank=2, max_rank=10, relative_margin=0.05, skip_same_parent=True)
    assert select_negatives(cands, gold, gold_scores, text_group, parent_group, rule).tolist() == [[6, 7, 8]]
    # Same-parent chunks allowed again: they are the closest that pass.
    keep_parent = MiningRule(count=3, min_rank=2, max_rank=10, relative_margin=0.05, skip_same_parent=False)
    assert select_negatives(cands, gold, gold_scores, text_group, parent_group, keep_parent).tolist() == [[4, 5, 6]]
    # No margin: the near-ties at ranks 2 and 3 pass; the text twin never does.
    no_margin = MiningRule(count=3, min_rank=2, max_rank=10, relative_margin=0.0, skip_same_parent=False)
    assert select_negatives(cands, gold, gold_scores, text_group, parent_group, no_margin).tolist() == [[1, 2, 4]]


def test_window_bounds_are_inclusive_and_shortfalls_are_padded():
    cands, gold, gold_scores, text_group, parent_group = hand_built()
    rule = MiningRule(count=4, min_rank=8, max_rank=9, relative_margin=0.0)
    # Only ranks 8 and 9 (rows 7, 8) are in the window: two found, two slots padded with -1.
    assert select_negatives(cands, gold, gold_scores, text_group, parent_group, rule).tolist() == [[7, 8, -1, -1]]
    # No parents known: the rule's skip has nothing to act on.
    rule = MiningRule(count=2, min_rank=5, max_rank=6, relative_margin=0.0)
    assert select_negatives(cands, gold, gold_scores, text_group, None, rule).tolist() == [[4, 5]]


def test_mining_from_embeddings_matches_the_ranking():
    # Corpus on a circle: the question sits on row 0; rows further round score lower.
    angles = np.linspace(0, np.pi, 12, dtype=np.float32)
    corpus = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    question = corpus[:1] * 1.0
    rule = MiningRule(count=2, min_rank=3, max_rank=12, relative_margin=0.0)
    neg = mine_hard_negatives(question, np.array([0]), corpus, np.arange(12), None, rule)
    assert neg.tolist() == [[2, 3]]  # ranks 3 and 4 of the raw-cosine ranking


def test_mining_rule_rejects_a_bad_window():
    with pytest.raises(ValueError):
        MiningRule(count=1, min_rank=10, max_rank=5)
    with pytest.raises(ValueError):
        MiningRule(count=1, relative_margin=1.0)


def test_bad_hard_negative_params_name_the_key():
    with pytest.raises(ParamsError, match="train.hard_negatives:"):
        parse_section({"hard_negatives": -1}, "train", TrainParams)
    with pytest.raises(ParamsError, match="train.hard_negative_margin:"):
        parse_section({"hard_negative_margin": 1.5}, "train", TrainParams)
    with pytest.raises(ParamsError, match="hard_negative_max_rank .* is below hard_negative_min_rank"):
        parse_section({"hard_negative_min_rank": 40, "hard_negative_max_rank": 20}, "train", TrainParams)
    with pytest.raises(ParamsError, match="train.bagging:"):
        parse_section({"bagging": 0}, "train", TrainParams)
    with pytest.raises(ParamsError, match="train.round_trip_top_k:"):
        parse_section({"round_trip_top_k": 0}, "train", TrainParams)


def test_in_batch_loss_with_negatives_adds_their_columns():
    torch.manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    text_group = torch.tensor([0, 1, 2, 3, 0, 5])  # row 4 repeats row 0's text
    adapted = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    gold = torch.tensor([0, 1])
    loss = InBatchRankingLoss(0.1)
    plain = loss(adapted, gold, corpus, text_group)
    none_found = loss(adapted, gold, corpus, text_group, torch.full((2, 2), -1))
    assert torch.allclose(plain, none_found)  # -1 slots are masked: the same loss
    # Question 0's negative 4 is its gold's twin: masked. Question 1 gets negative 3: by hand.
    negatives = torch.tensor([[4, -1], [3, -1]])
    got = loss(adapted, gold, corpus, text_group, negatives)
    logits = adapted @ corpus[[0, 1]].T / 0.1
    row0 = torch.logsumexp(logits[0], 0) - logits[0, 0]
    row1 = torch.logsumexp(torch.cat([logits[1], (adapted[1] @ corpus[3] / 0.1)[None]]), 0) - logits[1, 1]
    assert torch.allclose(got, (row0 + row1) / 2, atol=1e-6)


def test_training_with_hard_negatives_runs_and_reuses_one_ranking():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((40, 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    gold = np.repeat(np.arange(40), 3)
    questions = corpus[gold] + 0.3 * rng.standard_normal((120, 16)).astype(np.float32)
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    data = build_training_data(
        [f"c{i}" for i in range(40)],
        corpus,
        [f"t{i}" for i in range(40)],
        [f"q{i}" for i in range(120)],
        questions,
        [f"c{g}" for g in gold],
        corpus_parents=[f"doc{i // 4}" for i in range(40)],
    )
    assert data.parent_group.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    params = TrainParams(
        kind="linear",
        hard_negatives=3,
        hard_negative_min_rank=2,
        hard_negative_max_rank=20,
        max_epochs=2,
        batch_size=16,
    )
    negatives = data.hard_negatives(params.mining_rule())
    assert negatives.shape == (120, 3)
    valid = negatives[negatives >= 0]
    assert (
        len(valid)
        and not (data.parent_group[negatives[:, 0].clamp(min=0)] == data.parent_group[data.gold_rows])[
            negatives[:, 0] >= 0
        ].any()
    )
    first = data._candidates
    data.hard_negatives(params.mining_rule())  # a second rule within the same depth: no new ranking
    assert data._candidates is first
    result = train_adapter(params, data, split_by_chunk(data, 0.2, 0))
    assert result.best["hit@5"] >= result.baseline["hit@5"]
