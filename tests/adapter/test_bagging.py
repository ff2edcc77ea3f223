"""Bagging: member adapters on seeded validation splits, their ensemble (one averaged map, or an MLP
ensemble), its persistence and export, and eval's report of the single-seed spread."""

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from test_evaluation import DIM, make_pipeline
from test_export import trained_like

from ragtune.adapter.bagging import train_bagged
from ragtune.adapter.config import AUTO_INTERPOLATION, TrainParams
from ragtune.adapter.data import build_training_data
from ragtune.adapter.export import export_sentence_transformer, load_exported, needs_remote_code
from ragtune.adapter.model import (
    AdapterConfig,
    QueryAdapter,
    ensemble_adapters,
    interpolate_toward_identity,
    load_query_adapter,
    save_query_adapter,
)
from ragtune.adapter.splits import split_by_chunk
from ragtune.adapter.training import train_adapter
from ragtune.embedding.embedder import resolve_model
from ragtune.errors import ParamsError
from ragtune.evaluation.arms import member_dirs
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.run import run_eval
from ragtune.params import parse_section
from ragtune.search.lexical import Bm25Params


def random_adapter(config: AdapterConfig, seed: int) -> QueryAdapter:
    return trained_like(config, seed)  # random non-zero weights everywhere, eval mode


def test_affine_members_average_into_one_map():
    for config in (AdapterConfig(dim=16, kind="linear"), AdapterConfig(dim=16, kind="mlp", n_hidden_layers=0)):
        members = [random_adapter(config, s) for s in range(3)]
        ens = ensemble_adapters(members)
        assert ens.config == config  # one adapter of the same kind, not an ensemble
        x = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
        mean_unnormalised = torch.stack([m.unnormalised(x) for m in members]).mean(dim=0)
        assert torch.allclose(ens(x), torch.nn.functional.normalize(mean_unnormalised, dim=-1), atol=1e-6)


def test_mlp_members_make_an_ensemble_of_their_mean_output(tmp_path):
    config = AdapterConfig(dim=16, kind="mlp", hidden_dim=8, n_hidden_layers=2)
    members = [random_adapter(config, s) for s in range(3)]
    ens = ensemble_adapters(members)
    assert ens.config.members == 3
    x = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    want = torch.nn.functional.normalize(torch.stack([m(x) for m in members]).mean(dim=0), dim=-1)
    assert torch.allclose(ens(x), want, atol=1e-6)
    save_query_adapter(ens, tmp_path / "ens")
    assert torch.allclose(load_query_adapter(tmp_path / "ens")(x), want, atol=1e-6)
    assert ensemble_adapters(members[:1]) is members[0]
    with pytest.raises(ValueError, match="different configurations"):
        ensemble_adapters([members[0], random_adapter(AdapterConfig(dim=16, kind="linear"), 0)])
    with pytest.raises(ValueError, match="members"):
        AdapterConfig(dim=16, kind="linear", members=2)


def test_an_mlp_ensemble_exports_to_one_module_with_the_same_vectors(tmp_path):
    base = SentenceTransformer(resolve_model("packaged:all-MiniLM-L6-v2"), device="cpu")
    config = AdapterConfig(dim=384, kind="mlp", hidden_dim=16, n_hidden_layers=1)
    ens = ensemble_adapters([random_adapter(config, s) for s in range(2)])
    assert needs_remote_code(ens)
    out = export_sentence_transformer(ens, tmp_path / "export", base)
    queries = ["incident reporting deadline", "Who supervises crypto-asset service providers?"]
    raw = torch.as_tensor(base.encode(queries, normalize_embeddings=True))
    with torch.no_grad():
        want = ens(raw).numpy()
    got = load_exported(out).encode_query(queries, convert_to_numpy=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def learnable(seed: int = 0):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((30, 12)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    gold = np.repeat(np.arange(30), 3)
    q = corpus[gold] + 0.4 * rng.standard_normal((90, 12)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return build_training_data(
        [f"c{i}" for i in range(30)],
        corpus,
        [f"t{i}" for i in range(30)],
        [f"q{i}" for i in range(90)],
        q,
        [f"c{g}" for g in gold],
    )


def test_bagging_one_is_exactly_a_single_run_and_more_uses_consecutive_seeds():
    data = learnable()
    params = TrainParams(kind="linear", max_epochs=3, batch_size=16, seed=7, interpolation=1.0)
    single = train_adapter(params, data, split_by_chunk(data, params.val_fraction, 7))
    bagged1 = train_bagged(params, data)
    assert torch.equal(bagged1.adapter.delta, single.adapter.delta) and bagged1.seeds == [7]
    bagged3 = train_bagged(params.model_copy(update={"bagging": 3}), data)
    assert bagged3.seeds == [7, 8, 9] and len({tuple(s.val) for s in bagged3.splits}) == 3
    assert torch.equal(bagged3.members[0].adapter.delta, single.adapter.delta)  # member 0 is the single run
    mean_delta = torch.stack([m.adapter.delta for m in bagged3.members]).mean(dim=0)
    assert torch.allclose(bagged3.adapter.delta, mean_delta)
    summary = bagged3.summary()
    assert [m["seed"] for m in summary["members"]] == [7, 8, 9] and "members_mean_val_hit@5" in summary


@pytest.mark.parametrize(
    "config",
    [
        AdapterConfig(dim=16, kind="linear"),
        AdapterConfig(dim=16, kind="mlp", n_hidden_layers=0),
        AdapterConfig(dim=16, kind="mlp", hidden_dim=8, n_hidden_layers=2),
    ],
)
def test_interpolation_moves_each_query_alpha_of_the_way_the_adapter_does(config):
    trained = random_adapter(config, 5)
    x = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    before = trained(x).clone()
    half = interpolate_toward_identity(trained, 0.5)
    assert half.config == trained.config  # same kind and export format
    assert torch.allclose(half.unnormalised(x), x + 0.5 * (trained.unnormalised(x) - x), atol=1e-6)
    assert torch.equal(trained(x), before)  # the trained adapter itself is untouched
    assert torch.equal(interpolate_toward_identity(trained, 1.0)(x), before)
    # An ensemble interpolated is the ensemble of its members interpolated (the averaged map, or each MLP).
    members = [trained, random_adapter(config, 6)]
    ens_half = interpolate_toward_identity(ensemble_adapters(members), 0.5)
    want = ensemble_adapters([interpolate_toward_identity(m, 0.5) for m in members])
    assert torch.allclose(ens_half(x), want(x), atol=1e-6)
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="alpha must be in"):
            interpolate_toward_identity(trained, bad)


def test_train_bagged_ships_members_interpolated_by_what_selection_saw():
    data = learnable()
    params = TrainParams(kind="linear", max_epochs=3, batch_size=16, seed=7, bagging=2)
    full = train_bagged(params.model_copy(update={"interpolation": 1.0}), data)
    auto = train_bagged(params, data)  # synthetic validation: auto is AUTO_INTERPOLATION
    assert auto.interpolation == AUTO_INTERPOLATION < 1.0 and auto.summary()["interpolation"] == AUTO_INTERPOLATION
    for a, f in zip(auto.members, full.members):
        assert torch.allclose(a.adapter.delta, AUTO_INTERPOLATION * f.adapter.delta)
        assert a.best == f.best and a.best_epoch == f.best_epoch  # selection scored the trained adapter
    assert torch.allclose(auto.adapter.delta, AUTO_INTERPOLATION * full.adapter.delta, atol=1e-7)
    assert TrainParams().interpolation_for("real") == 1.0
    assert TrainParams(interpolation=0.4).interpolation_for("real") == 0.4
    for bad in (0, 1.5, "half"):
        with pytest.raises(ParamsError, match=r"train\.interpolation\b"):
            parse_section({"interpolation": bad}, "train", TrainParams)


def test_eval_reports_each_members_test_metrics_beside_the_ensemble(tmp_path):
    paths = make_pipeline(tmp_path)
    config = AdapterConfig(dim=DIM, kind="linear")
    members = [random_adapter(config, s) for s in (3, 4)]
    save_query_adapter(ensemble_adapters(members), paths.adapter)
    for seed, member in zip((42, 43), members):
        save_query_adapter(member, paths.adapter / "members" / f"seed-{seed}")
    assert [p.name for p in member_dirs(paths.adapter)] == ["seed-42", "seed-43"]
    params = EvalParams(bootstrap_resamples=200, bm25=Bm25Params(enabled=False))
    m = run_eval(paths, params, fetch_report=tmp_path / "data/fetch/report.json").metrics
    spread = m["test"]["adapter_seeds"]
    assert spread["seeds"] == [42, 43] and len(spread["hit@5"]) == 2 and m["setup"]["bagging"] == 2
    assert spread["range"]["mrr@20"] == [min(spread["mrr@20"]), max(spread["mrr@20"])]
    # A member alone evaluated as the adapter gives the number recorded for it.
    save_query_adapter(members[0], paths.adapter)
    alone = run_eval(paths, params, fetch_report=tmp_path / "data/fetch/report.json").metrics
    assert alone["test"]["arms"]["adapter"]["hit@5"] == spread["hit@5"][0]
