"""The label benchmark (`ragtune bench-labels`): draws of n labelled questions from a pool or from all, the
choice eval would make on them, its share of the best arm's test score, and the files and README block."""

import csv
import json

import numpy as np
import pytest

from ragtune.benchmark.labels import (
    RankTable,
    bench_corpus,
    parse_corpus,
    pool_mask,
    read_ranks,
    render_label_block,
    run_label_bench,
    simulate_size,
    write_label_results,
)
from ragtune.cli import main
from ragtune.errors import RagtuneError
from ragtune.io import write_json

ARMS = ["cosine", "adapter", "bm25", "hybrid_cosine", "hybrid"]


def _write_per_question(path, ids, ranks, arms=ARMS, extra_set_rows=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "id", "origin", "n_relevant", *[f"rank_{a}" for a in arms], "linear_ignored", "question"])
        for q, row in zip(ids, ranks):
            w.writerow(["test", q, "human", 1, *row, 0, "a question"])
        for i in range(extra_set_rows):  # validation rows are not test questions
            w.writerow(["val", f"v{i}", "synthetic", 1, *([1] * len(arms)), 0, "q"])


def _world(n=120, seed=0):
    """Ranks where hybrid is best on average, cosine worst, with per-question noise (0: not found)."""
    rng = np.random.default_rng(seed)
    quality = {"cosine": 0.45, "adapter": 0.5, "bm25": 0.5, "hybrid_cosine": 0.55, "hybrid": 0.6}
    ranks = np.stack(
        [np.where(rng.random(n) < quality[a], rng.integers(1, 4, n), rng.integers(5, 40, n)) for a in ARMS], axis=1
    )
    ranks[ranks > 30] = 0
    return [f"{'train' if i < n // 2 else 'test'}-{i:03d}" for i in range(n)], ranks


def test_reads_the_test_rows_and_turns_ranks_into_reciprocal_ranks(tmp_path):
    path = tmp_path / "per_question.csv"
    _write_per_question(path, ["a", "b"], [[1, 2, 0, 25, 3], [4, 1, 1, 1, 1]], extra_set_rows=3)
    table = read_ranks(path)
    assert table.ids == ["a", "b"] and table.arms == ARMS
    np.testing.assert_allclose(table.reciprocal(20)[0], [1, 0.5, 0, 0, 1 / 3])  # 0 and past k score 0
    with pytest.raises(RagtuneError, match=r"missing\.csv: not found; run `ragtune bench`"):
        read_ranks(tmp_path / "missing.csv")
    path.write_text("set,id,rank_cosine\ntest,a,x\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"per_question\.csv:2: a rank is not an integer"):
        read_ranks(path)


def test_a_clear_winner_is_chosen_every_time_and_reaches_the_whole_best_score():
    rr = np.tile([[0.2, 0.3, 0.1, 0.4, 1.0]], (50, 1))  # hybrid right at rank 1 on every question
    result = simulate_size(rr, ARMS, 10, draws=20, seed=1, pool=None)
    assert result.shares.tolist() == [1.0] * 20 and result.chosen == {"hybrid": 20}
    assert result.summary()["mean_share"] == result.summary()["worst5_share"] == 1.0


def test_pool_and_remainder_designs_never_score_a_labelled_question():
    ids, ranks = _world()
    table = RankTable(ids, ARMS, ranks)
    rr = table.reciprocal(20)
    pool = pool_mask(ids, ["train-"])
    assert pool.sum() == 60 and pool[:60].all()
    # the pool design: the share is against the fixed test set (the other 60)
    out = bench_corpus("c", table, ["train-"], [10, 30, 100], draws=40, seed=3, k=20, no_label_arm="hybrid")
    assert [s["n"] for s in out["sizes"]] == [10, 30]  # 100 > the pool of 60: left out
    test_mrr = rr[~pool].mean(axis=0)
    assert out["test_mrr@20"] == {a: round(float(v), 4) for a, v in zip(ARMS, test_mrr)}
    assert out["no_label_share"] == round(test_mrr[4] / test_mrr.max(), 4)
    for s in out["sizes"]:
        assert 0 < s["worst5_share"] <= s["mean_share"] <= 1 and s["draws"] == 40
        assert sum(s["chosen"].values()) == 40
    # more labels, a better choice on average (plain argmax, no prior to lean on)
    ten, thirty = out["sizes"]
    assert thirty["argmax_mean_share"] >= ten["argmax_mean_share"]
    # the remainder design: the same seed gives the same draws; the shares are against each draw's rest
    again = bench_corpus("c", table, None, [10], draws=40, seed=3, k=20)
    assert again == bench_corpus("c", table, None, [10], draws=40, seed=3, k=20)
    assert again["design"] == "remainder" and again["test_questions"] == 120
    with pytest.raises(RagtuneError, match=r"prefixes \['nope-'\] select 0 of 120 questions"):
        bench_corpus("c", table, ["nope-"], [10], draws=5, seed=3, k=20)


def test_the_prior_stays_unless_the_labels_show_another_arm_ahead():
    ids, ranks = _world(seed=4)
    rr = RankTable(ids, ARMS, ranks).reciprocal(20)
    with_prior = simulate_size(rr, ARMS, 10, draws=60, seed=5, pool=None, prior="policy")
    wrong = simulate_size(rr, ARMS, 10, draws=60, seed=5, pool=None, prior="cosine")
    # the policy's prior (the fusion with the better dense arm) is kept in most draws of 10 labels
    assert with_prior.chosen.most_common(1)[0][0] in ("hybrid", "hybrid_cosine")
    # a wrong prior (the worst arm) is overturned in some draws and costs share where it is not
    assert 0 < wrong.overturned.mean() < 1 and wrong.shares.mean() < with_prior.shares.mean()
    none = simulate_size(rr, ARMS, 10, draws=60, seed=5, pool=None, prior="none")
    np.testing.assert_array_equal(none.shares, none.argmax_shares)  # without a prior: the labels' best arm


def test_the_command_writes_the_table_the_plot_and_the_readme_block(tmp_path, monkeypatch, capsys):
    ids, ranks = _world()
    for name in ("acord", "default"):
        _write_per_question(tmp_path / "work" / name / "data/eval/per_question.csv", ids, ranks)
    write_json(tmp_path / "work/acord/data/eval/report.json", {"recommendation": {"arm": "hybrid"}})
    args = ["bench-labels", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--draws", "20"]
    assert main([*args, "--corpus", "acord=train-", "--corpus", "default", "--sizes", "10", "30"]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in written] == ["labels.json", "labels.md", "labels.png"]
    md = (tmp_path / "out/labels.md").read_text(encoding="utf-8")
    acord = json.loads((tmp_path / "out/labels.json").read_text(encoding="utf-8"))["corpora"][0]
    assert (
        "| acord | 60 (train-) → 60 |" in md
        and f"| hybrid {acord['no_label_share']:.3f} | eval's |" in md
        and "| default | n of 120 → the rest |" in md
    )
    assert "labels' best alone" in md and (tmp_path / "out/labels.png").stat().st_size > 1000
    results = run_label_bench(tmp_path / "work", ["acord=train-"], [10], draws=5)
    block = render_label_block(results)
    assert block.startswith("<!-- generated by `python -m ragtune.readme` from data/transfer/labels/labels.json")
    assert "![Label benchmark](data/transfer/labels/labels.png)" in block
    write_label_results(tmp_path / "again", results)
    # a corpus without a workspace stops before any draw, naming the file
    assert main([*args, "--corpus", "acord", "--corpus", "missing"]) == 2
    assert "missing/data/eval/per_question.csv: not found" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["=train-", "acord="])
def test_bad_corpus_specs_say_what_is_expected(spec):
    with pytest.raises(RagtuneError, match=r"expected NAME or NAME=PREFIX"):
        parse_corpus(spec)
    assert parse_corpus("acord=train-,valid-") == ("acord", ["train-", "valid-"])


def test_readme_label_block_matches_the_committed_results():
    """The label block (docs/findings/selection.md) is the rendering of data/transfer/labels/labels.json (`make
    labels`, then python -m ragtune.readme); without that file it is empty."""
    from pathlib import Path

    from ragtune.readme import (
        LABELS,
        LABELS_END,
        LABELS_START,
        current_block,
        expected_transfer,
        page_holding,
        render_labels,
    )

    repo = Path(__file__).resolve().parents[2]
    readme, results = page_holding("labels", repo), repo / LABELS
    block = current_block(readme.read_text(encoding="utf-8"), LABELS_START, LABELS_END)
    assert block is not None
    if not results.is_file():
        assert block == ""
        return
    assert block == expected_transfer(readme, results, render_labels), (
        "the label block is stale: run python -m ragtune.readme"
    )
