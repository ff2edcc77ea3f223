"""Hybrid retrieval: the fusions against hand-computed rankings, the weight chosen on validation, the hybrid
arms and the recommendation in a whole evaluation, bad params, and the Deploy guide's runnable example."""

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ragtune.errors import ParamsError
from ragtune.evaluation.arms import EmbeddingArm, HybridArm, LexicalArm, identity
from ragtune.evaluation.inputs import QuerySet
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.report import write_eval_outputs
from ragtune.evaluation.run import run_eval
from ragtune.params import load_section
from ragtune.readme import render_results
from ragtune.records import TestQuestion, read_jsonl, write_jsonl
from ragtune.search.fusion import (
    HybridParams,
    choose_weight,
    fuse_hybrid,
    min_max_normalise,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from ragtune.search.lexical import Bm25Index, Bm25Params

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_evaluation import DIM, FAST, make_pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# --- reciprocal-rank fusion by hand -------------------------------------------------------------


def test_rrf_by_hand_a_chunk_only_one_arm_returns_and_ties_to_the_lower_row():
    dense = np.array([[0, 1, 2]])  # rows 0, 1, 2 at ranks 1, 2, 3
    lexical = np.array([[2, 3, -1]])  # rows 2, 3 at ranks 1, 2; one empty slot (no term in common)
    scores, rows = reciprocal_rank_fusion([dense, lexical], k=60)
    # row 2: 1/63 + 1/61; row 0: 1/61; rows 1 and 3: 1/62 each (a tie: the lower row first); one arm only
    # still counts. The same numbers as ranx's fuse(method="rrf").
    assert rows.tolist() == [[2, 0, 1, 3]]
    np.testing.assert_allclose(scores[0], [1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    assert scores[0, 2] == scores[0, 3]
    # Deeper than the candidates: empty slots (-1, score 0) at the end.
    scores, rows = reciprocal_rank_fusion([dense, lexical], k=60, depth=6)
    assert rows[0, 4:].tolist() == [-1, -1] and scores[0, 4:].tolist() == [0.0, 0.0]


def test_rrf_ties_do_not_depend_on_the_order_of_arms_or_slots():
    a, b = np.array([[7, 5, 3]]), np.array([[3, 5, 7]])
    # 7: 1/61 + 1/63, 3: 1/63 + 1/61 (the same sum: a tie, the lower row first), 5: 2/62 (a little less).
    for rankings in ([a, b], [b, a]):
        scores, rows = reciprocal_rank_fusion(rankings, k=60)
        assert rows[0, :3].tolist() == [3, 7, 5] and scores[0, 0] == scores[0, 1] > scores[0, 2]


def test_rrf_bm25_empty_slots_are_not_candidates():
    dense = np.array([[4, 1, 0], [2, 0, 1]])
    lexical = np.array([[-1, -1, -1], [1, -1, -1]])  # query 0 shares no term with any chunk
    scores, rows = reciprocal_rank_fusion([dense, lexical], k=60, depth=3)
    assert rows[0].tolist() == [4, 1, 0]  # the dense ranking alone, with its RRF scores
    np.testing.assert_allclose(scores[0], [1 / 61, 1 / 62, 1 / 63])
    assert rows[1].tolist() == [1, 2, 0]  # 1: 1/63 + 1/61 beats 2: 1/61
    nothing, none = reciprocal_rank_fusion([np.full((1, 3), -1), np.full((1, 2), -1)], depth=2)
    assert none.tolist() == [[-1, -1]] and nothing.tolist() == [[0.0, 0.0]]
    assert reciprocal_rank_fusion([np.full((1, 3), -1), np.full((1, 2), -1)])[1].shape == (1, 0)


def test_rrf_k_sensitivity():
    # Row 0 is first in one ranking only; row 2 is third and second in the two.
    dense, lexical = np.array([[0, 1, 2]]), np.array([[3, 2, 4]])
    _, sharp = reciprocal_rank_fusion([dense, lexical], k=0)  # 0: 1/1 beats 2: 1/3 + 1/2
    _, flat = reciprocal_rank_fusion([dense, lexical], k=60)  # 2: 1/63 + 1/62 beats 0: 1/61
    assert sharp[0, 0] == 0 and flat[0, 0] == 2
    # Per-arm weights scale an arm's share; one query as 1-D arrays gives 1-D results.
    scores, rows = reciprocal_rank_fusion([np.array([0, 1]), np.array([1, 0])], k=1, weights=[3.0, 1.0])
    assert rows.tolist() == [0, 1] and scores.tolist() == pytest.approx([3 / 2 + 1 / 3, 3 / 3 + 1 / 2])


def test_rrf_input_errors():
    with pytest.raises(ValueError, match="no rankings"):
        reciprocal_rank_fusion([])
    with pytest.raises(ValueError, match="number of queries"):
        reciprocal_rank_fusion([np.zeros((2, 3), int), np.zeros((1, 3), int)])
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        reciprocal_rank_fusion([np.zeros((1, 3), int)], weights=[1, 2])


# --- weighted fusion by hand --------------------------------------------------------------------


def test_min_max_normalise_over_retrieved_rows_only():
    scores = np.array([[3.0, 2.0, 1.0], [5.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    rows = np.array([[0, 1, 2], [4, 2, -1], [-1, -1, -1]])
    np.testing.assert_allclose(min_max_normalise(scores, rows), [[1, 0.5, 0], [1, 1, 0], [0, 0, 0]])


def test_weighted_fusion_by_hand():
    dense = (np.array([[3.0, 2.0, 1.0]]), np.array([[0, 1, 2]]))  # normalised 1, 0.5, 0
    lexical = (np.array([[5.0, 4.0, 0.0]]), np.array([[2, 3, -1]]))  # normalised 1, 0 (row 3 is its worst)
    scores, rows = weighted_score_fusion([dense, lexical], [0.3, 0.7])
    # row 2: 0.3*0 + 0.7*1; row 0: 0.3*1; row 1: 0.3*0.5; row 3: 0.7*0 (retrieved, scores 0); as ranx's wsum.
    assert rows.tolist() == [[2, 0, 1, 3]]
    np.testing.assert_allclose(scores[0], [0.7, 0.3, 0.15, 0.0])
    s_w, r_w = fuse_hybrid(dense, lexical, depth=2, method="weighted", weight=0.3)
    assert r_w.tolist() == [[2, 0]] and s_w[0].tolist() == pytest.approx([0.7, 0.3])
    with pytest.raises(ValueError, match="dense share"):
        fuse_hybrid(dense, lexical, depth=2, method="weighted", weight=None)


def _validation_fixture():
    """Two questions: the first needs w < 0.714 (BM25 knows), the second w > 0.667 (the dense arm knows), so
    w = 0.7 alone ranks both relevant chunks first."""
    dense = (np.array([[1.0, 0.6, 0.0], [1.0, 0.5, 0.0]]), np.array([[0, 1, 2], [3, 4, 5]]))
    lexical = (np.array([[10.0, 5.0, 1.0], [10.0, 8.0, 2.0]]), np.array([[1, 2, 0], [4, 5, 3]]))
    return dense, lexical, [np.array([1]), np.array([3])]


def test_the_weight_is_chosen_by_mrr_on_the_given_questions():
    dense, lexical, relevant = _validation_fixture()
    weight, by_weight = choose_weight(dense, lexical, relevant, [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9], mrr_k=3)
    assert weight == 0.7 and by_weight[0.7] == 1.0
    assert by_weight[0.6] == by_weight[0.8] == 0.75 and by_weight[0.1] == 0.5 + 0.5 / 3
    # Ties go to the first weight of the grid.
    assert choose_weight(dense, lexical, relevant, [0.9, 0.8], mrr_k=3)[0] == 0.9


# --- bad params name the key --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ("rrf_k: -1", r"eval\.hybrid\.rrf_k: Input should be greater than or equal to 0 \(got -1\)"),
        ("rrf_k: many", r"eval\.hybrid\.rrf_k: Input should be a valid number"),
        ("weights: [0.5, 1.5]", r"eval\.hybrid\.weights\.1: Input should be less than or equal to 1"),
        ("weights: [-0.1]", r"eval\.hybrid\.weights\.0: Input should be greater than or equal to 0"),
        ("weights: []", r"eval\.hybrid: Value error, weights must be a non-empty list"),
        ("weights: [0.5, 0.5]", r"eval\.hybrid: Value error, weights must be a non-empty list of distinct"),
        ("method: max", r"eval\.hybrid\.method: Input should be 'rrf' or 'weighted'"),
        ("candidates: 0", r"eval\.hybrid\.candidates: Input should be greater than or equal to 1"),
        ("k: 60", r"eval\.hybrid\.k: unknown key .*rrf_k"),
    ],
)
def test_bad_hybrid_params_name_the_key(tmp_path, body, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"eval:\n  hybrid:\n    {body}\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=message):
        load_section("eval", EvalParams, path)


def test_the_project_params_hold_the_hybrid_defaults():
    params = load_section("eval", EvalParams, REPO / "params.yaml")
    assert params.hybrid == HybridParams() and params.hybrid.method == "weighted" and params.hybrid.weights == [0.6]


# --- hybrid arms in a whole evaluation ----------------------------------------------------------


def _lexically_blind(paths, blind: range) -> None:
    """Rewrite the fixture's test questions `blind` so that they share no term with any chunk."""
    questions = list(read_jsonl(paths.test, TestQuestion))
    write_jsonl(
        paths.test,
        [q.model_copy(update={"question": "zebra quantum?"}) if i in blind else q for i, q in enumerate(questions)],
    )


@pytest.fixture
def pipeline(tmp_path):
    paths = make_pipeline(tmp_path)
    paths.adapter.mkdir(parents=True)
    _lexically_blind(paths, range(15, 30))
    return paths


def test_eval_reports_both_hybrid_arms_the_comparisons_and_a_recommendation(pipeline, tmp_path):
    result = run_eval(pipeline, FAST, lambda _: identity, tmp_path / "data/fetch/report.json")
    m = result.metrics
    order = ["cosine", "adapter", "bm25", "hybrid_cosine", "hybrid"]
    for name in ("test", "test_human", "val"):
        assert list(m[name]["arms"]) == order
        hyb = m[name]["arms"]["hybrid"]
        assert set(hyb["ci"]) == {k for k in hyb if k != "ci"} and 0 <= hyb["mrr@20"] <= 1
    test = m["test"]
    best_single = m["fusion"]["best_single_on_val"]
    assert best_single == max(["cosine", "adapter", "bm25"], key=lambda a: m["val"]["arms"][a]["mrr@20"])
    for key in (
        "adapter_vs_cosine",
        "bm25_vs_cosine",
        "hybrid_vs_cosine",
        "hybrid_cosine_vs_cosine",
        "hybrid_vs_hybrid_cosine",
        f"hybrid_vs_{best_single}",
    ):
        new, base = key.split("_vs_")
        assert "mrr@20" in test[key] and test[key]["verdict"].startswith(f"{new} vs {base} on 30 mixed")
    assert "hybrid vs hybrid_cosine on 30 mixed" in test["hybrid_vs_hybrid_cosine"]["verdict"]
    # The identity adapter makes hybrid and hybrid_cosine the same ranking.
    assert test["arms"]["hybrid"] == test["arms"]["hybrid_cosine"]
    assert test["hybrid_vs_hybrid_cosine"]["mrr@20"]["diff"] == 0.0
    # the default: min-max normalised scores with a fixed dense share, nothing chosen on validation
    assert m["fusion"]["method"] == "weighted" and m["fusion"]["candidates"] == 100
    assert m["fusion"]["hybrid"] == {
        "dense": "adapter",
        "lexical": "bm25",
        "weight": 0.6,
        "chosen_on": None,
        "method": "weighted",
    }
    assert m["fusion"]["hybrid_cosine"]["dense"] == "cosine"

    # Questions with no term in common: BM25 retrieves nothing, the hybrid is the dense ranking.
    rows = [r for r in result.per_question if r["set"] == "test"]
    for r in rows[15:]:
        assert r["rank_bm25"] == 0 and r["rank_hybrid_cosine"] == r["rank_cosine"]
    assert any(r["rank_hybrid"] != r["rank_cosine"] for r in rows[:15])  # BM25 moved some

    rec = m["recommendation"]
    val_mrr = {a: v["mrr@20"] for a, v in m["val"]["arms"].items()}
    assert rec["val"] == val_mrr and rec["basis"] == "prior" and not rec["settled"]
    assert val_mrr[rec["validation_best"]] == max(val_mrr.values())
    # no labels: the fusion of BM25 with the dense arm validation prefers (identity adapter: a tie, cosine)
    assert rec["dense_choice"] == "cosine" and rec["arm"] == "hybrid_cosine"
    assert rec["test"]["hit@5"] == test["arms"][rec["arm"]]["hit@5"] and rec["test"]["questions"] == 30
    assert rec["test"]["mrr@20"] == test["arms"][rec["arm"]]["mrr@20"]
    assert rec["test"]["ci"]["mrr@20"] == test["arms"][rec["arm"]]["ci"]["mrr@20"]
    test_mrr = {a: v["mrr@20"] for a, v in test["arms"].items()}
    assert test_mrr[rec["test_best_arm"]] == max(test_mrr.values())
    assert rec["note"].startswith(f"{rec['arm']} (BM25 fused with cosine), a prior: no labelled questions")

    out = tmp_path / "data/eval"
    write_eval_outputs(result, FAST, out)
    assert (out / "hit_rate_at_k.csv").read_text().splitlines()[0] == "k,cosine,adapter,bm25,hybrid_cosine,hybrid"
    assert json.loads((out / "report.json").read_text())["recommendation"] == rec
    block = render_results(m)
    line = next(x for x in block.splitlines() if x.startswith("**Recommendation"))
    assert f"**Recommendation: `{rec['arm']}`** (no labelled questions: a prior" in line and rec["note"] in line
    assert "by min-max normalised scores with a fixed dense share of 0.6" in line
    assert "- hybrid vs hybrid_cosine on 30 mixed" in block and "- hybrid_cosine vs cosine on 30 mixed" in block


def test_weighted_fusion_chooses_its_weight_on_validation_only(pipeline, tmp_path):
    params = FAST.model_copy(update={"hybrid": HybridParams(method="weighted", weights=[0.2, 0.5, 0.8])})
    m = run_eval(pipeline, params, lambda _: identity, tmp_path / "data/fetch/report.json").metrics
    entry = m["fusion"]["hybrid"]
    assert entry["method"] == "weighted" and entry["chosen_on"] == "val"
    grid = entry["val_mrr@20_by_weight"]
    assert list(grid) == ["0.2", "0.5", "0.8"] and grid[f"{entry['weight']:g}"] == max(grid.values())
    # The validation number of the hybrid arm is the chosen weight's.
    assert m["val"]["arms"]["hybrid"]["mrr@20"] == pytest.approx(grid[f"{entry['weight']:g}"], abs=1e-6)
    assert "dense share chosen on validation" in render_results(m)

    # The test questions play no part: making every test question lexically blind leaves the weight as is.
    _lexically_blind(pipeline, range(0, 30))
    again = run_eval(pipeline, params, lambda _: identity, tmp_path / "data/fetch/report.json").metrics
    assert again["fusion"]["hybrid"] == entry


def test_hybrid_arms_are_skipped_without_bm25_or_question_texts(pipeline, tmp_path, caplog):
    report = tmp_path / "data/fetch/report.json"
    with caplog.at_level(logging.WARNING, logger="ragtune.evaluation"):
        m = run_eval(
            pipeline, FAST.model_copy(update={"bm25": Bm25Params(enabled=False)}), lambda _: identity, report
        ).metrics
    assert list(m["test"]["arms"]) == ["cosine", "adapter"] and "fusion" not in m
    assert "hybrid and hybrid_cosine skipped" in caplog.text
    assert m["recommendation"]["arm"] in ("cosine", "adapter")
    off = run_eval(
        pipeline, FAST.model_copy(update={"hybrid": HybridParams(enabled=False)}), lambda _: identity, report
    ).metrics
    assert list(off["test"]["arms"]) == ["cosine", "adapter", "bm25"] and "hybrid_vs_bm25" not in off["test"]

    # Validation questions without texts: no BM25 there, so no hybrid either, and a weight cannot be chosen.
    pipeline.questions.unlink()
    fixed = run_eval(pipeline, FAST, lambda _: identity, report).metrics
    assert fixed["fusion"]["hybrid"]["method"] == "weighted"  # a fixed share needs no validation
    caplog.clear()
    weighted = FAST.model_copy(update={"hybrid": HybridParams(method="weighted", weights=[0.2, 0.5, 0.8])})
    with caplog.at_level(logging.WARNING, logger="ragtune.evaluation"):
        m = run_eval(pipeline, weighted, lambda _: identity, report).metrics
    assert "hybrid" in m["test"]["arms"] and "hybrid" not in m["val"]["arms"]
    assert m["fusion"]["hybrid"]["method"] == "rrf" and "fusing by RRF" in caplog.text
    assert set(m["recommendation"]["val"]) == {"cosine", "adapter"}


def test_hybrid_arm_fuses_deeper_than_it_reports():
    corpus = np.eye(6, DIM, dtype=np.float32)
    texts = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    query = np.zeros((1, DIM), np.float32)
    query[0, :6] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.0]
    query /= np.linalg.norm(query)
    qs = QuerySet("t", ["q"], query, [np.array([5])], ["human"], ["zeta"])
    arm = HybridArm(
        "hybrid", EmbeddingArm("cosine", corpus), LexicalArm("bm25", Bm25Index(texts)), HybridParams(candidates=6)
    )
    # Cut first, row 5 (dense rank 6, BM25's only hit) would be dense-only at depth 2; fused from 6 deep
    # it is 1/66 + 1/61, above every dense-only row.
    assert arm.retrieve(qs, 2).tolist() == [[5, 0]]
    shallow = HybridArm("hybrid", arm.dense, arm.lexical, HybridParams(candidates=1))
    assert shallow.retrieve(qs, 2).tolist() == [[0, 5]]  # candidates below depth: depth is used


# --- the Deploy guide's example ----------------------------------------------------------------------


def _guide_example():
    """docs/how-to/deploy.md, "The hybrid over your own index"."""
    from doc_blocks import blocks_tagged

    (block,) = blocks_tagged("hybrid over your index")
    return block


@pytest.mark.slow
def test_the_deploy_guides_hybrid_example_runs_on_a_real_export(tmp_path, monkeypatch, capsys):
    from sentence_transformers import SentenceTransformer

    from ragtune.adapter.export import export_sentence_transformer
    from ragtune.adapter.model import AdapterConfig, build_adapter
    from ragtune.embedding.embedder import resolve_model

    block = _guide_example()
    code = block.code
    assert "weighted_score_fusion(" in code
    base = SentenceTransformer(resolve_model("packaged:all-MiniLM-L6-v2"), device="cpu")
    adapter = build_adapter(AdapterConfig(dim=base.get_embedding_dimension(), hidden_dim=32), seed=0)
    export_sentence_transformer(adapter, tmp_path / "models/adapter/sentence_transformer", base)
    # the loader module as the eval stage ships it in models/hybrid/
    (tmp_path / "models/hybrid").mkdir(parents=True)
    shutil.copyfile(REPO / "src/ragtune/deploy/hybrid.py", tmp_path / "models/hybrid/ragtune_hybrid.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "ragtune_hybrid", raising=False)
    namespace: dict = {}
    exec(compile(code, block.where, "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.startswith("[['The controller shall notify a personal data breach")
    result = namespace["hybrid_search"](["subliminal techniques", "zzzz"], k=3)
    assert result[0][0].startswith("AI systems that deploy subliminal") and len(result[1]) == 3
    # the example fuses as eval does: the project's dense share
    assert [namespace["DENSE_SHARE"]] == load_section("eval", EvalParams, REPO / "params.yaml").hybrid.weights
