"""QueryAdapter and its losses: identity start, normalised output, masking, persistence."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ragtune.adapter.losses import (
    FullCorpusSoftmaxLoss,
    InBatchRankingLoss,
    _weighted_cross_entropy,
    identity_distance,
    make_loss,
    text_groups,
)
from ragtune.adapter.model import (
    AdapterConfig,
    QueryAdapter,
    adapt_queries,
    build_adapter,
    load_query_adapter,
    save_query_adapter,
)
from ragtune.errors import RagtuneError
from ragtune.search.dense import exact_top_k

DIM = 24


def unit(n, dim=DIM, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=-1)


def perturb(adapter, seed=1, scale=0.1):
    """Give every parameter random non-zero values, so the adapter is far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return adapter


ALL_CONFIGS = [AdapterConfig(dim=DIM, kind="mlp", hidden_dim=16, n_hidden_layers=n, dropout=0.2) for n in range(4)] + [
    AdapterConfig(dim=DIM, kind="linear")
]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: f"{c.kind}-{c.n_hidden_layers}")
def test_untrained_adapter_is_the_identity_and_retrieves_like_raw_cosine(config):
    adapter = build_adapter(config, seed=3).eval()
    queries, corpus = unit(50, seed=1), unit(200, seed=2)
    adapted = adapter(queries)
    torch.testing.assert_close(adapted, queries, rtol=0, atol=1e-6)
    _, raw_idx = exact_top_k(queries, corpus, 10)
    _, adapted_idx = exact_top_k(adapted, corpus, 10)
    assert (raw_idx == adapted_idx).all()
    assert float(identity_distance(adapted, queries).detach()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: f"{c.kind}-{c.n_hidden_layers}")
def test_output_is_l2_normalised_with_the_input_shape(config):
    adapter = perturb(QueryAdapter(config)).eval()
    out = adapter(unit(7) * 3.0)  # unnormalised input
    assert out.shape == (7, DIM)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(7), rtol=0, atol=1e-6)
    assert not torch.allclose(out, F.normalize(unit(7), dim=-1), atol=1e-3)  # it does transform


def test_capacity_follows_the_config():
    n_params = [sum(p.numel() for p in QueryAdapter(c).parameters()) for c in ALL_CONFIGS]
    assert n_params[0] == DIM * DIM + DIM  # mlp, no hidden layer: one Linear
    assert n_params[1] == (DIM * 16 + 16) + 2 * 16 + (16 * DIM + DIM)
    assert n_params[1] < n_params[2] < n_params[3]
    assert n_params[4] == DIM * DIM + DIM  # linear: delta + bias


@pytest.mark.parametrize(
    "bad", [dict(n_hidden_layers=4), dict(kind="conv"), dict(activation="mish"), dict(hidden_dim=0)]
)
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        AdapterConfig(dim=DIM, **bad)


def reference_loss(scores: torch.Tensor, target: list[int], masked: list[set[int]]) -> float:
    """Cross-entropy computed row by row, leaving the masked columns out entirely."""
    total = 0.0
    for i, row in enumerate(scores.tolist()):
        keep = [j for j in range(len(row)) if j not in masked[i]]
        log_z = math.log(sum(math.exp(row[j]) for j in keep))
        total += log_z - row[target[i]]
    return total / len(target)


def test_in_batch_loss_masks_a_chunk_that_appears_twice():
    corpus = unit(10, seed=5)
    groups = torch.arange(10)
    gold = torch.tensor([3, 7, 3, 1])  # questions 0 and 2 ask about the same chunk
    adapted = unit(4, seed=6)
    tau = 0.1
    loss = InBatchRankingLoss(tau)(adapted, gold, corpus, groups)
    scores = adapted @ corpus[gold].T / tau
    expected = reference_loss(scores, [0, 1, 2, 3], [{2}, set(), {0}, set()])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    unmasked = reference_loss(scores, [0, 1, 2, 3], [set()] * 4)
    assert expected < unmasked  # the duplicate would otherwise count as a negative


def test_in_batch_loss_masks_identical_texts_too():
    corpus = unit(6, seed=8)
    groups = torch.as_tensor(text_groups(["a", "b", "a", "c", "d", "e"]))  # rows 0 and 2: same text
    gold = torch.tensor([0, 2, 4])
    adapted = unit(3, seed=9)
    loss = InBatchRankingLoss(0.05)(adapted, gold, corpus, groups)
    scores = adapted @ corpus[gold].T / 0.05
    assert float(loss) == pytest.approx(reference_loss(scores, [0, 1, 2], [{1}, {0}, set()]), rel=1e-5)


def test_full_corpus_loss_masks_chunks_with_the_gold_text():
    corpus = unit(8, seed=11)
    corpus[5] = corpus[2]  # a verbatim duplicate of chunk 2
    groups = torch.as_tensor(text_groups(["t0", "t1", "same", "t3", "t4", "same", "t6", "t7"]))
    gold = torch.tensor([2, 5, 6])
    adapted = unit(3, seed=12)
    tau = 0.2
    loss = FullCorpusSoftmaxLoss(tau)(adapted, gold, corpus, groups)
    scores = adapted @ corpus.T / tau
    expected = reference_loss(scores, [2, 5, 6], [{5}, {2}, set()])
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def dense_full_corpus_loss(adapted, gold, corpus, groups, relevant, weights, tau):
    # The masking as one (B, N) comparison: what FullCorpusSoftmaxLoss computes with indexed cells.
    logits = adapted @ corpus.T / tau
    twin = groups[None, :] == groups[gold][:, None]
    if relevant is not None:
        rel_groups = torch.where(relevant >= 0, groups[relevant.clamp(min=0)], -1)
        twin |= (groups[None, None, :] == rel_groups[:, :, None]).any(dim=1)
    twin[torch.arange(len(gold)), gold] = False
    return _weighted_cross_entropy(logits.masked_fill(twin, float("-inf")), gold, weights)


@pytest.mark.parametrize("with_relevant", [False, True])
@pytest.mark.parametrize("with_twins", [False, True])
def test_full_corpus_loss_and_its_gradient_equal_the_dense_mask_bit_for_bit(with_relevant, with_twins):
    gen = torch.Generator().manual_seed(21)
    n, batch = 300, 24
    corpus = unit(n, seed=22)
    groups = torch.randint(0, 200, (n,), generator=gen) if with_twins else torch.arange(n)
    groups = torch.as_tensor(text_groups([str(int(g)) for g in groups]))  # first-occurrence ids, as built
    gold = torch.randint(0, n, (batch,), generator=gen)
    relevant = weights = None
    if with_relevant:  # gold first, then up to 5 more (repeats allowed), -1 padded
        relevant = torch.randint(0, n, (batch, 6), generator=gen)
        relevant[:, 0] = gold
        relevant[torch.rand((batch, 6), generator=gen) < 0.4] = -1
        relevant[:, 0] = gold
        weights = torch.where(torch.rand(batch, generator=gen) < 0.5, 7.0, 1.0)
    assert (groups.bincount() > 1).any() == with_twins
    fast_in = unit(batch, seed=23).requires_grad_()
    dense_in = fast_in.detach().clone().requires_grad_()
    fast = FullCorpusSoftmaxLoss(0.05)(fast_in, gold, corpus, groups, None, relevant, weights)
    dense = dense_full_corpus_loss(dense_in, gold, corpus, groups, relevant, weights, 0.05)
    fast.backward()
    dense.backward()
    assert torch.equal(fast, dense)
    assert torch.equal(fast_in.grad, dense_in.grad)
    if with_relevant or with_twins:  # something was masked: the unmasked loss differs
        plain = _weighted_cross_entropy(dense_in.detach() @ corpus.T / 0.05, gold, weights)
        assert not torch.equal(fast.detach(), plain)


def test_temperature_sharpens_the_softmax():
    corpus = unit(30, seed=13)
    gold = torch.arange(5)
    adapted = F.normalize(corpus[:5] + 0.05 * unit(5, seed=14), dim=-1)  # each close to its gold chunk
    groups = torch.arange(30)
    for loss_cls in (InBatchRankingLoss, FullCorpusSoftmaxLoss):
        warm = float(loss_cls(1.0)(adapted, gold, corpus, groups))
        cold = float(loss_cls(0.02)(adapted, gold, corpus, groups))
        assert cold < warm


@pytest.mark.parametrize("loss_name", ["in_batch", "full_corpus"])
@pytest.mark.parametrize("config", [ALL_CONFIGS[2], ALL_CONFIGS[4]], ids=["mlp", "linear"])
def test_one_step_moves_the_adapter_away_from_the_identity(loss_name, config):
    adapter = build_adapter(config, seed=0)
    corpus = unit(40, seed=15)
    gold = torch.arange(16)
    queries = F.normalize(corpus[:16] + 0.5 * unit(16, seed=16), dim=-1)
    opt = torch.optim.AdamW(adapter.parameters(), lr=1e-2)
    for _ in range(2):  # the zero last layer gets gradient first; the hidden layers from step 2
        loss = make_loss(loss_name, 0.05)(adapter(queries), gold, corpus, torch.arange(40))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in adapter.parameters())
    assert float(identity_distance(adapter.eval()(queries), queries).detach()) > 1e-6


def test_text_groups_share_ids_for_identical_texts():
    assert text_groups(["x", "y", "x", "z", "y"]).tolist() == [0, 1, 0, 2, 1]


def test_save_and_load_round_trip(tmp_path):
    adapter = perturb(QueryAdapter(ALL_CONFIGS[2]))
    save_query_adapter(adapter, tmp_path / "adapter", extra={"note": "kept"})
    loaded = load_query_adapter(tmp_path / "adapter")
    assert loaded.config == adapter.config and not loaded.training
    x = unit(9, seed=20)
    torch.testing.assert_close(loaded(x), adapter.eval()(x), rtol=0, atol=0)
    assert (tmp_path / "adapter" / "config.json").read_text().count('"note": "kept"') == 1
    # The same weights saved again, elsewhere, are the same bytes: a rerun leaves dvc.lock's hash unchanged.
    save_query_adapter(adapter, tmp_path / "again")
    assert (tmp_path / "again" / "adapter.pt").read_bytes() == (tmp_path / "adapter" / "adapter.pt").read_bytes()


def test_load_query_adapter_without_files_says_what_to_run(tmp_path):
    with pytest.raises(RagtuneError, match="run the train stage"):
        load_query_adapter(tmp_path)


def test_adapt_queries_is_batched_float32_without_dropout_and_keeps_the_mode():
    adapter = perturb(QueryAdapter(AdapterConfig(dim=DIM, hidden_dim=16, n_hidden_layers=2, dropout=0.5)))
    adapter.train()
    x = unit(23, seed=21).double().numpy()
    a = adapt_queries(adapter, x, batch_size=5)
    b = adapt_queries(adapter, x, batch_size=100)
    assert a.dtype == np.float32 and a.shape == (23, DIM)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # dropout off: same result however batched
    assert adapter.training  # the caller's mode is restored
    np.testing.assert_allclose(
        a, adapter.eval()(torch.as_tensor(x, dtype=torch.float32)).detach().numpy(), rtol=0, atol=1e-6
    )
