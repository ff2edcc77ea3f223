"""The recommendation: the no-label policy on hand-built validation and test tables, the choice on labelled
questions with its settled / "label N more" statement, and bad params naming the key."""

from pathlib import Path

import numpy as np
import pytest

from ragtune.errors import ParamsError
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.recommend import RecommendParams, recommend, without_labels
from ragtune.params import load_section

PARAMS = EvalParams(bootstrap_resamples=2000)


def _block(mrr: dict[str, float], n: int, origin: str) -> dict:
    return {
        "questions": n,
        "origin": origin,
        "arms": {
            a: {"hit@5": min(1.0, v + 0.1), "mrr@20": v, "ci": {"hit@5": [0, 1], "mrr@20": [0, 1]}}
            for a, v in mrr.items()
        },
    }


def _flat(mrr: dict[str, float], n: int) -> dict[str, np.ndarray]:
    """Per-question scores with these means (every question the same: enough for the no-label policy)."""
    return {a: np.full(n, v) for a, v in mrr.items()}


# Synthetic validation as measured on every corpus: bm25 > hybrid > adapter > cosine (pseudo-queries copy words).
VAL = {"cosine": 0.44, "adapter": 0.54, "bm25": 0.75, "hybrid_cosine": 0.59, "hybrid": 0.67}
# Two corpora with the same synthetic validation: users who share the documents' words (BM25 wins), and users
# who do not (the policy-QA set: BM25 at half of raw cosine).
BM25_WINS = {"cosine": 0.505, "adapter": 0.566, "bm25": 0.570, "hybrid_cosine": 0.586, "hybrid": 0.610}
BM25_COLLAPSES = {"cosine": 0.220, "adapter": 0.291, "bm25": 0.111, "hybrid_cosine": 0.215, "hybrid": 0.280}


def _recommend(val: dict, test: dict, params: EvalParams = PARAMS, origin: str = "synthetic", scores=None):
    metrics = {"val": _block(val, 979, origin), "test": _block(test, 78, "human")}
    return recommend(metrics, scores or _flat(val, 979), test, params)


@pytest.mark.parametrize("test", [BM25_WINS, BM25_COLLAPSES], ids=["bm25-wins", "bm25-collapses"])
def test_without_labels_the_old_rule_is_a_trap_and_the_policy_is_not(test):
    old = _recommend(VAL, test, PARAMS.model_copy(update={"recommend": RecommendParams(without_labels="validation")}))
    new = _recommend(VAL, test)
    assert old["arm"] == "bm25" and new["arm"] == "hybrid"  # validation alone cannot tell the corpora apart
    assert new["validation_best"] == "bm25" and new["dense_choice"] == "adapter"
    assert new["basis"] == "prior" and not new["settled"]
    if test is BM25_COLLAPSES:
        assert test[old["arm"]] < test["cosine"]  # the old rule deploys BM25 at half of raw cosine
    assert test[new["arm"]] >= test["cosine"] and new["test_share_of_best"] >= 0.95
    assert new["test_best_arm"] == max(test, key=test.get)
    assert "label about 30 real questions (`ragtune label`)" in new["statement"]
    assert new["note"].startswith(new["statement"]) and "Check on the 78 human test questions" in new["note"]


def test_within_the_dense_arms_validation_decides():
    val = {**VAL, "adapter": 0.40}  # the adapter did not beat raw cosine on validation
    rec = _recommend(val, BM25_WINS)
    assert rec["dense_choice"] == "cosine" and rec["arm"] == "hybrid_cosine"
    assert "prefers cosine to adapter (MRR@20 0.440 against 0.400" in rec["statement"]
    dense = PARAMS.model_copy(update={"recommend": RecommendParams(without_labels="dense")})
    assert _recommend(VAL, BM25_WINS, dense)["arm"] == "adapter"
    # without BM25 (eval.bm25.enabled: false) the prior has no fusion to deploy: the dense arm
    arm, statement, _ = without_labels({"cosine": 0.44, "adapter": 0.54}, "hybrid", "mrr@20", 979)
    assert arm == "adapter" and "cannot judge BM25" not in statement


def test_labelled_questions_decide_and_say_whether_that_is_settled():
    rng = np.random.default_rng(0)
    n = 60
    base = rng.uniform(0, 0.5, n)
    clear = {"cosine": base, "adapter": base + 0.3, "bm25": base - 0.1, "hybrid": base + 0.05, "linear": base + 0.6}
    rec = _recommend({a: float(v.mean()) for a, v in clear.items()}, BM25_COLLAPSES, origin="human", scores=clear)
    assert rec["basis"] == "labels" and rec["arm"] == "adapter" and rec["settled"]
    assert rec["labelled"]["runner_up"] == "hybrid" and "linear" not in rec["labelled"]["scores"]  # it trained on them
    # the labels overturn the no-label choice (the fusion with the dense arm the labels prefer) beyond chance
    assert rec["labelled"]["prior"] == "hybrid" and rec["labelled"]["overturned"]
    assert "Settled: adapter is ahead of hybrid beyond chance" in rec["statement"]
    noise = rng.normal(0, 0.3, n)
    close = {"cosine": base - 0.1, "adapter": base + 0.03 + noise - noise.mean(), "hybrid": base}
    rec = _recommend({a: float(v.mean()) for a, v in close.items()}, BM25_WINS, origin="human", scores=close)
    # the labels' best (adapter) is not ahead of the no-label choice beyond chance: that choice stays, unsettled
    assert rec["arm"] == "hybrid" and not rec["settled"] and rec["labelled"]["more_questions"] > 0
    assert (
        "adapter is not ahead of hybrid beyond chance, so hybrid, the choice without labels, stays" in rec["statement"]
    )
    assert f"label about {rec['labelled']['more_questions']} more questions" in rec["statement"]
    assert rec["statement"].endswith("Label them with `ragtune label`, then `dvc repro`.")


@pytest.mark.parametrize(
    "body, message",
    [
        ("without_labels: bm25", r"eval\.recommend\.without_labels: Input should be 'hybrid', 'dense' or 'validation'"),
        ("margin: -0.1", r"eval\.recommend\.margin: Input should be greater than or equal to 0"),
        ("margins: 0.1", r"eval\.recommend\.margins: unknown key"),
    ],
)
def test_bad_recommend_params_name_the_key(tmp_path, body, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"eval:\n  recommend:\n    {body}\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=message):
        load_section("eval", EvalParams, path)


# --- the policy with real arms: a corpus whose users share the documents' words, and one whose do not ---------


def _world(decoy_share: float, seed: int = 0, n_chunks: int = 60, dim: int = 16):
    """Chunks with their own words; test questions near their chunk in embedding space (raw cosine gets some
    right). A question's words are its chunk's, or with probability `decoy_share` another chunk's (users who
    name things in other words: BM25 then finds the wrong chunk). Synthetic validation copies its chunk's words
    either way, as pseudo-queries do. Returns (arms, val, test)."""
    from ragtune.evaluation.arms import EmbeddingArm, HybridArm, LexicalArm
    from ragtune.evaluation.inputs import QuerySet
    from ragtune.search.lexical import Bm25Index

    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(n_chunks, dim))
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    texts = [f"clause {i} on zq{i}a zq{i}b" for i in range(n_chunks)]

    def questions(name, n, decoys):
        gold = rng.integers(0, n_chunks, n)
        worded = np.where(rng.random(n) < decoys, (gold + rng.integers(1, n_chunks, n)) % n_chunks, gold)
        emb = corpus[gold] + 0.35 * rng.normal(size=(n, dim))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return QuerySet(
            name,
            [f"{name}{i}" for i in range(n)],
            emb.astype(np.float32),
            [np.array([g]) for g in gold],
            ["human" if name == "test" else "synthetic"] * n,
            [f"which rules on zq{w}a zq{w}b" for w in worded],
        )

    cosine = EmbeddingArm("cosine", corpus.astype(np.float32))
    adapter = EmbeddingArm("adapter", corpus.astype(np.float32))  # an adapter that changed nothing
    bm25 = LexicalArm("bm25", Bm25Index(texts))
    hybrid = load_section("eval", EvalParams, Path(__file__).resolve().parents[2] / "params.yaml").hybrid
    arms = [
        cosine,
        adapter,
        bm25,
        HybridArm("hybrid_cosine", cosine, bm25, hybrid),
        HybridArm("hybrid", adapter, bm25, hybrid),
    ]
    return arms, questions("val", 200, 0.0), questions("test", 300, decoy_share)


@pytest.mark.parametrize("decoys", [0.0, 0.5], ids=["bm25-wins", "bm25-below-cosine"])
def test_the_project_policy_on_real_arms_is_never_below_raw_cosine(decoys):
    from ragtune.evaluation.arms import fit_hybrid_weights
    from ragtune.evaluation.report import evaluate

    params = load_section("eval", EvalParams, Path(__file__).resolve().parents[2] / "params.yaml")
    params = params.model_copy(update={"bootstrap_resamples": 200})
    arms, val, test = _world(decoys)
    arms, fusion = fit_hybrid_weights(arms, val, params)
    m = evaluate([test, val], arms, params, fusion=fusion).metrics
    mrr = {a: v["mrr@20"] for a, v in m["test"]["arms"].items()}
    rec = m["recommendation"]
    assert rec["validation_best"] == "bm25"  # the same synthetic validation whatever the users ask
    assert mrr[rec["arm"]] >= mrr["cosine"]
    if decoys:
        assert mrr["bm25"] < 0.8 * mrr["cosine"]  # the old rule's pick, a trap here
    else:
        assert mrr[rec["arm"]] >= 0.95 * max(mrr.values())
