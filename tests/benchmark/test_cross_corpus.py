"""`ragtune bench`, the cross-corpus benchmark: the table from a hand-made metrics.json (seed ranges, arm
order, p-values), -S overrides, bad input stopped before any work, the transfer block, and the
command end to end under real DVC on two tiny corpora (a rerun reruns nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from pipeline_support import REPO, tiny_corpus, write_jsonl

from ragtune.benchmark.tables import build_results, corpus_row, metric_keys, render_markdown, write_results
from ragtune.benchmark.workspaces import RunRecord, apply_overrides, plan_bench, stages_run, validate_params
from ragtune.cli import main
from ragtune.errors import ParamsError, RagtuneError
from ragtune.labels import arm_order
from ragtune.params import SECTIONS
from ragtune.readme import (
    KFOLD,
    KFOLD_END,
    KFOLD_START,
    LOGS,
    LOGS_END,
    LOGS_START,
    TRANSFER,
    TRANSFER_END,
    TRANSFER_START,
    current_block,
    expected_transfer,
    page_holding,
    render_query_logs,
    render_query_logs_kfold,
    render_transfer,
    update_transfer,
)

TINY = ["tune.n_trials=2", "train.max_epochs=2", "eval.bootstrap_resamples=200"]


def _arm(hit: float, mrr: float, ndcg: float, hit_k: int = 5) -> dict:
    values = {"hit@1": hit / 2, f"hit@{hit_k}": hit, "mrr@20": mrr, "ndcg@10": ndcg, "recall@5": hit / 3}
    return {**values, "ci": {k: [round(v - 0.1, 6), round(v + 0.1, 6)] for k, v in values.items()}}


def _metrics(seeds: bool = False, main_k: int = 5, protocol: str | None = None) -> dict:
    hit = f"hit@{main_k}"
    test = {
        "questions": 40,
        "origin": "human",
        "human": 40,
        "synthetic": 0,
        "multi_relevant": 3,
        # eval's order is not guaranteed here: the table must put the arms in evaluation._arm_order.
        "arms": {
            "bm25": _arm(0.7, 0.55, 0.5, main_k),
            "hybrid": _arm(0.72, 0.56, 0.51, main_k),
            "cosine": _arm(0.6, 0.5, 0.45, main_k),
            "adapter": _arm(0.65, 0.52, 0.47, main_k),
        },
        "adapter_vs_cosine": {
            hit: {"diff": 0.05, "gained": 4, "lost": 2, "p": 0.6875, "p_holm": 1.0},
            "hit@20": {"diff": 0.0, "gained": 0, "lost": 0, "p": 1.0, "p_holm": 1.0},
            "mrr@20": {
                "diff": 0.02,
                "ci": [-0.01, 0.05],
                "p": 0.21,
                "improved": 9,
                "worsened": 5,
                "sign_test_p": 0.42,
                "p_holm": 0.63,
            },
            "significant": False,
            "verdict": "adapter vs cosine: ...",
        },
        "bm25_vs_cosine": {
            hit: {"diff": 0.1, "gained": 6, "lost": 2, "p": 0.2891, "p_holm": 0.58},
            "mrr@20": {
                "diff": 0.05,
                "ci": [0.01, 0.09],
                "p": 0.0004,
                "improved": 12,
                "worsened": 3,
                "sign_test_p": 0.035,
                "p_holm": 0.0012,
            },
            "significant": True,
            "verdict": "bm25 vs cosine: ...",
        },
    }
    if seeds:
        test["adapter_seeds"] = {"seeds": [1, 2, 3], hit: [0.6, 0.675, 0.625], "mrr@20": [0.49, 0.53, 0.51]}
    setup = {
        "source": "jsonl",
        "embedding_model": "packaged:all-MiniLM-L6-v2",
        "corpus_chunks": 99,
        "main_k": main_k,
        "confidence": 0.95,
    }
    if protocol:
        setup["protocol"] = protocol
    return {"setup": setup, "test": test, "val": {"questions": 10, "arms": {"cosine": _arm(0.9, 0.8, 0.8)}}}


def _results(**kwargs) -> dict:
    rows = [
        corpus_row(
            "acord",
            _metrics(seeds=True, protocol="include"),
            {"source": "jsonl", "chunks": 3931},
            RunRecord(12.5, ["fetch", "eval"]),
        ),
        corpus_row(
            "or_sharc",
            _metrics(),
            {"source": "jsonl", "chunks": 651},
            RunRecord(2.0, [], {"wall_s": 130.0, "stages_run": ["eval"]}),
        ),
    ]
    return build_results(
        rows,
        command="ragtune bench a b",
        overrides=TINY,
        params_hash="abc123def456",
        main_k=5,
        confidence=0.95,
        **kwargs,
    )


# --- the table from metrics.json -----------------------------------------------------------------


def test_row_from_a_hand_made_metrics_json():
    row = corpus_row(
        "acord",
        _metrics(seeds=True, protocol="include"),
        {"source": "jsonl", "chunks": 3931},
        RunRecord(12.5, ["fetch", "eval"]),
        "/data/acord",
    )
    assert row["metrics"] == ["hit@5", "mrr@20", "ndcg@10"]
    assert list(row["arms"]) == ["cosine", "adapter", "bm25", "hybrid"]  # evaluation._arm_order, unknown last
    assert row["arms"]["adapter"]["hit@5"] == {"value": 0.65, "ci": [0.55, 0.75]}
    assert row["chunks"] == 3931 and row["test_questions"] == 40 and row["human"] == 40 and row["synthetic"] == 0
    assert row["protocol"] == "include" and row["wall_s"] == 12.5 and row["stages_run"] == ["fetch", "eval"]
    assert row["vs_cosine"]["adapter"]["hit@5"] == {"diff": 0.05, "gained": 4, "lost": 2, "p": 0.6875, "p_holm": 1.0}
    assert row["vs_cosine"]["bm25"]["mrr@20"]["p"] == 0.0004 and row["vs_cosine"]["bm25"]["significant"]
    assert "hybrid" not in row["vs_cosine"]  # eval made no comparison for it: nothing invented
    assert row["adapter_seeds"] == {"seeds": [1, 2, 3], "hit@5": [0.6, 0.675], "mrr@20": [0.49, 0.53]}

    plain = corpus_row("x", _metrics())
    assert "adapter_seeds" not in plain and "protocol" not in plain and "wall_s" not in plain
    assert plain["chunks"] == 99  # without report.json: the eval setup's count


def test_the_adapters_share_of_the_hybrid_is_reported_beside_the_hybrid_arm():
    metrics = _metrics()
    metrics["test"]["hybrid_vs_hybrid_cosine"] = {
        "hit@5": {"diff": 0.12, "gained": 9, "lost": 2, "p": 0.0654, "p_holm": 0.13},
        "mrr@20": {"diff": 0.07, "ci": [0.02, 0.12], "p": 0.0031, "improved": 14, "worsened": 4, "p_holm": 0.0062},
        "significant": True,
        "verdict": "...",
    }
    row = corpus_row("acord", metrics)
    assert row["hybrid_vs_hybrid_cosine"]["mrr@20"]["p"] == 0.0031 and row["hybrid_vs_hybrid_cosine"]["significant"]
    assert "hybrid_vs_hybrid_cosine" not in corpus_row("x", _metrics())  # eval made none: nothing invented
    md = render_markdown(
        build_results([row, corpus_row("or_sharc", _metrics())], command="c", overrides=[], params_hash="h")
    )
    lines = md.splitlines()
    hit = next(line for line in lines if line.startswith("| acord | 60.0"))
    assert hit.endswith("72.0 (62.0–82.0); vs hybrid_cosine p=0.065 (+9/−2) |")
    mrr = next(line for line in lines if line.startswith("| acord | 0.500"))
    assert mrr.endswith("0.560 (0.460–0.660); vs hybrid_cosine p=0.0031 |")
    assert "vs hybrid_cosine" not in next(line for line in lines if line.startswith("| or_sharc | 60.0"))
    assert "what the adapter adds to BM25 fusion" in md
    assert "what the adapter adds" not in render_markdown(_results())


def test_the_recommended_arm_is_tabulated_against_the_best_raw_cosine_and_the_old_rule():
    def with_recommendation(arm: str, old: str) -> dict:
        metrics = _metrics()
        metrics["recommendation"] = {
            "arm": arm,
            "basis": "prior",
            "settled": False,
            "validation_best": old,
            "test": {"mrr@20": metrics["test"]["arms"][arm]["mrr@20"], "hit@5": 0.0},
        }
        return metrics

    row = corpus_row("acord", with_recommendation("hybrid", "bm25"))
    assert row["recommendation"] == {
        "metric": "mrr@20",
        "arm": "hybrid",
        "basis": "prior",
        "settled": False,
        "mrr": 0.56,
        "best_arm": "hybrid",
        "best_mrr": 0.56,
        "cosine_mrr": 0.5,
        "old_arm": "bm25",
        "old_mrr": 0.55,
    }
    trap = corpus_row("policy", {**with_recommendation("bm25", "bm25")})
    trap["recommendation"]["mrr"] = 0.4  # below raw cosine's 0.5
    md = render_markdown(build_results([row, trap], command="c", overrides=[], params_hash="h"))
    assert "**Which arm eval recommends** (test MRR@20; share: of the best arm's)" in md
    assert "| acord | hybrid | prior | 0.560 | 1.000 | at or above | hybrid 0.560 | bm25 | 0.982 |" in md
    assert "| policy | bm25 | prior | 0.400 | 0.714 | **below** (0.500) |" in md
    assert "recommends" not in render_markdown(_results())  # no recommendation in the reports: no table


def test_cut_offs_come_from_the_metrics_not_constants():
    assert metric_keys(_metrics(main_k=1)) == ["hit@1", "mrr@20", "ndcg@10"]
    row = corpus_row("x", _metrics(main_k=1, seeds=True))
    assert row["vs_cosine"]["adapter"]["hit@1"]["gained"] == 4 and "hit@1" in row["adapter_seeds"]
    with pytest.raises(RagtuneError, match="corpus 'x'.*no test results"):
        corpus_row("x", {"setup": {}, "val": {}})


def test_markdown_shows_intervals_p_values_and_the_seed_range_only_when_present():
    md = render_markdown(_results())
    assert "| corpus | cosine | adapter | bm25 | hybrid |" in md
    acord_hit = next(line for line in md.splitlines() if line.startswith("| acord | 60.0"))
    assert "65.0 (55.0–75.0), p=0.69 (+4/−2); seeds 60.0–67.5" in acord_hit
    assert "70.0 (60.0–80.0), p=0.29 (+6/−2)" in acord_hit
    sharc_hit = next(line for line in md.splitlines() if line.startswith("| or_sharc | 60.0"))
    assert "seeds" not in sharc_hit and "65.0 (55.0–75.0), p=0.69 (+4/−2) |" in sharc_hit
    assert "0.550 (0.450–0.650), p=0.0004" in md  # bm25 MRR@20, paired bootstrap
    assert "| acord | jsonl | 3,931 | 40 human | include | 12 s |" in md
    assert "| or_sharc | jsonl | 651 | 40 human | – | 2 s (up to date; last run 2 min 10 s) |" in md
    assert "abc123def456" in md and "`tune.n_trials=2`" in md and "`ragtune bench a b`" in md
    assert "seeds: the range of single-seed adapters' values" in md
    assert "seeds" not in render_markdown(
        build_results([corpus_row("x", _metrics())], command="c", overrides=[], params_hash="h")
    )


def test_results_files_are_written(tmp_path):
    written = write_results(tmp_path / "out", _results())
    names = sorted(p.name for p in written)
    assert names == ["results.json", "results.md", "results.png", "results_mrr.png"]
    assert json.loads((tmp_path / "out/results.json").read_text())["corpora"][0]["name"] == "acord"
    assert all(p.stat().st_size > 0 for p in written)


def test_dvc_output_parsing():
    out = (
        "Stage 'fetch' didn't change, skipping\nRunning stage 'tune':\n> sh .ragtune/stage tune --tune-dir data/tune\n"
        "Running stage 'eval':\n"
    )
    assert stages_run(out) == ["tune", "eval"] and stages_run("Data and pipelines are up to date.") == []


# --- -S overrides and planning ---------------------------------------------------------------------


def test_overrides_parse_yaml_and_name_the_key_at_fault():
    base = {"train": {"lr": 0.1, "kind": "mlp"}, "eval": {"bm25": {"k1": 1.5}}}
    out = apply_overrides(
        base,
        ["train.lr=3e-4", "eval.bm25.k1=2", "train.kind=linear", "eval.hit_ks=[1, 5]", "tune.storage=null"],
        SECTIONS,
    )
    assert out["train"] == {"lr": 3e-4, "kind": "linear"} and out["eval"]["bm25"]["k1"] == 2
    assert out["eval"]["hit_ks"] == [1, 5] and out["tune"] == {"storage": None}
    assert base["train"]["lr"] == 0.1  # the input is not modified
    with pytest.raises(ParamsError, match="unknown section 'trian' in key 'trian.lr'"):
        apply_overrides(base, ["trian.lr=1"], SECTIONS)
    with pytest.raises(ParamsError, match="'train.lr' is a value"):
        apply_overrides(base, ["train.lr.x=1"], SECTIONS)
    with pytest.raises(ParamsError, match="expected section.key=value"):
        apply_overrides(base, ["train.lr"], SECTIONS)
    with pytest.raises(ParamsError, match=r"train\.no_such_knob: unknown key"):
        validate_params(apply_overrides(base, ["train.no_such_knob=1"], SECTIONS), "params.yaml with -S")


@pytest.fixture
def project(tmp_path):
    """A stand-in project root: the real dvc.yaml and params.yaml, an empty src/ and .ragtune/."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    for name in ("src", ".ragtune", "corpus"):
        (root / name).mkdir()
    return root


def _corpus_dir(path: Path, rows: list[dict], questions: list[dict]) -> Path:
    write_jsonl(path / "corpus.jsonl", rows)
    write_jsonl(path / "test.jsonl", questions)
    return path


def _questions(rows: list[dict]) -> list[dict]:
    return [
        {
            "id": "q1",
            "question": "How quickly must a personal data breach be notified?",
            "relevant_ids": [rows[1]["id"]],
            "answer": "Within 72 hours.",
        },
        {
            "id": "q2",
            "question": "Who must handle vulnerabilities of digital products?",
            "relevant_ids": [rows[8]["id"]],
            "answer": None,
        },
        {
            "id": "q3",
            "question": "When must significant incidents be reported to the CSIRT?",
            "relevant_ids": [rows[6]["id"]],
            "answer": None,
        },
    ]


def test_plan_sets_the_jsonl_source_the_overrides_and_the_default_workspace(project, tmp_path):
    rows = tiny_corpus()
    acord = _corpus_dir(tmp_path / "acord", rows, _questions(rows))
    plan = plan_bench(project, [acord], True, Path("data/transfer"), TINY)
    assert [w.name for w in plan.workspaces] == ["acord", "default"]
    assert plan.out == project.resolve() / "data/transfer"
    assert plan.workspaces[0].path == plan.out / "work/acord"
    base = yaml.safe_load((project / "params.yaml").read_text())
    own, default = (yaml.safe_load(w.params_text) for w in plan.workspaces)
    assert own["fetch"]["source"] == "jsonl" and own["fetch"]["jsonl"]["corpus"] == "corpus/corpus.jsonl"
    assert own["fetch"]["jsonl"]["test"] == "corpus/test.jsonl" and own["mlflow"]["enabled"] is False
    assert own["tune"]["n_trials"] == 2 and own["train"]["max_epochs"] == 2
    assert default["fetch"] == base["fetch"]  # the project's own source, unchanged
    assert default["tune"]["n_trials"] == 2 and default["mlflow"]["enabled"] is False
    assert plan.params_hash == plan.workspaces[0].params_hash == plan.workspaces[1].params_hash
    with_mlflow = plan_bench(project, [acord], False, tmp_path / "o", [], mlflow=True)
    params = yaml.safe_load(with_mlflow.workspaces[0].params_text)
    assert params["mlflow"]["enabled"] is True
    assert params["mlflow"]["tracking_uri"] == f"sqlite:///{project.resolve()}/mlflow.db"
    assert not (project / "data").exists()  # planning writes nothing


@pytest.mark.parametrize(
    "case", ["no_test", "bad_json", "unknown_relevant", "unknown_key", "unknown_section", "nothing", "same_name"]
)
def test_bad_input_stops_before_any_work(case, project, tmp_path, monkeypatch, capsys):
    rows = tiny_corpus()
    good = _corpus_dir(tmp_path / "good", rows, _questions(rows))
    args: list[str] = [str(good)]
    expected = ""
    if case == "no_test":
        bad = _corpus_dir(tmp_path / "bad", rows, [])
        (bad / "test.jsonl").unlink()
        args.append(str(bad))
        expected = f"{bad}: test.jsonl not found"
    elif case == "bad_json":
        bad = _corpus_dir(tmp_path / "bad", rows, [])
        (bad / "corpus.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n", encoding="utf-8")
        args.append(str(bad))
        expected = f"{bad / 'corpus.jsonl'}:2: not valid JSON"
    elif case == "unknown_relevant":
        qs = _questions(rows)
        qs[1]["relevant_ids"] = ["no-such-chunk"]
        bad = _corpus_dir(tmp_path / "bad", rows, qs)
        args.append(str(bad))
        expected = f"{bad / 'test.jsonl'}:2: relevant id(s) ['no-such-chunk'] not in the corpus"
    elif case == "unknown_key":
        args += ["-S", "train.no_such_knob=3"]
        expected = "train.no_such_knob: unknown key"
    elif case == "unknown_section":
        args += ["-S", "trian.lr=0.1"]
        expected = "unknown section 'trian' in key 'trian.lr'"
    elif case == "nothing":
        args = []
        expected = "nothing to run"
    elif case == "same_name":
        other = _corpus_dir(tmp_path / "elsewhere" / "good", rows, _questions(rows))
        args.append(str(other))
        expected = "share the workspace name 'good'"
    monkeypatch.chdir(project)
    assert main(["bench", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "out").exists()


# --- the transfer block (docs/findings/) ---------------------------------------------------------------------


def test_transfer_block_regenerates_identically_from_results_json(tmp_path):
    results = tmp_path / "data/transfer/results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(_results()), encoding="utf-8")
    readme = tmp_path / "README.md"
    original = (
        f"# t\n\n## Results on other legal corpora\n\n{TRANSFER_START}\nrun make transfer\n{TRANSFER_END}\n\nend\n"
    )
    readme.write_text(original, encoding="utf-8")

    assert update_transfer(readme, tmp_path / "missing.json") is None  # no results: section left as it is
    assert readme.read_text(encoding="utf-8") == original
    assert update_transfer(readme, results) is True
    text = readme.read_text(encoding="utf-8")
    block = current_block(text, TRANSFER_START, TRANSFER_END)
    assert block == render_transfer(json.loads(results.read_text()), "data/transfer")
    assert "![Hit rate by corpus](data/transfer/results.png)" in block and "results_mrr.png" in block
    assert "The Atticus Project; CC BY 4.0" in block and "https://github.com/TheAtticusProject/acord" in block
    assert "Gao et al. 2021" in block and "Saeidi et al. 2018" in block and "CC BY-SA 3.0" in block
    assert "make transfer" in block and text.endswith("\n\nend\n")
    assert update_transfer(readme, results) is False  # idempotent


def test_readme_transfer_block_matches_the_committed_results(tmp_path):
    """The transfer block (docs/findings/transfer.md) is the rendering of data/transfer/results.json (python -m
    ragtune.readme); without that file (no `make transfer` yet) the block is the placeholder."""
    readme, results = page_holding("transfer", REPO), REPO / TRANSFER
    text = readme.read_text(encoding="utf-8")
    assert TRANSFER_START in text and TRANSFER_END in text
    if not results.is_file():
        assert "make transfer" in current_block(text, TRANSFER_START, TRANSFER_END)
        return
    assert current_block(text, TRANSFER_START, TRANSFER_END) == expected_transfer(readme, results), (
        "the transfer block is stale: run python -m ragtune.readme"
    )


def test_readme_query_logs_block_matches_the_committed_results(tmp_path):
    """The query-logs block (docs/findings/query-logs.md) is the rendering of data/transfer/real/results.json (`make
    querylogs`); without that file it is the placeholder. The renderer names each corpus's split and its learning
    curve."""
    readme, results = page_holding("querylogs", REPO), REPO / LOGS
    text = readme.read_text(encoding="utf-8")
    assert LOGS_START in text and LOGS_END in text
    if results.is_file():
        assert current_block(text, LOGS_START, LOGS_END) == expected_transfer(readme, results, render_query_logs), (
            "the query-logs block is stale: run python -m ragtune.readme"
        )
    else:
        assert "make querylogs" in current_block(text, LOGS_START, LOGS_END)
    row = {
        **_results()["corpora"][0],
        "name": "acord",
        "train_questions": 57,
        "test_questions": 57,
        "curve": [
            {
                "n_real": n,
                "adapter_hit@5": 0.4,
                "adapter_hit@5_low": 0.3,
                "adapter_hit@5_high": 0.5,
                "adapter_mrr@20": 0.25,
                "adapter_mrr@20_low": 0.2,
                "adapter_mrr@20_high": 0.3,
                "p_mrr@20_vs_cosine": 0.04,
                "cosine_hit@5": 0.33,
                "cosine_mrr@20": 0.21,
                "bm25_hit@5": 0.33,
                "bm25_mrr@20": 0.2,
            }
            for n in (0, 25, 57)
        ],
    }
    block = render_query_logs({**_results(), "corpora": [row]}, "data/transfer/real")
    assert "`acord`: 57 training, 57 test" in block and "**Learning curve, acord**" in block
    assert "| 25 | 40.0 (30.0–50.0) | 0.250 (0.200–0.300) | 0.04 | 33.0 | 0.210 | 33.0 | 0.200 |" in block
    assert "![Learning curves](data/transfer/real/results_curve.png)" in block and "make querylogs" in block


def test_readme_kfold_block_matches_the_committed_results():
    """The k-fold block (docs/findings/query-logs.md) is the rendering of data/transfer/kfold_real/results.json
    (`make querylogs-kfold`); without that file it is the placeholder. The renderer reads the fold count from the
    overrides."""
    readme, results = page_holding("querylogs-kfold", REPO), REPO / KFOLD
    text = readme.read_text(encoding="utf-8")
    assert KFOLD_START in text and KFOLD_END in text
    if results.is_file():
        assert current_block(text, KFOLD_START, KFOLD_END) == expected_transfer(
            readme, results, render_query_logs_kfold
        ), "the k-fold block is stale: run python -m ragtune.readme"
    else:
        assert "make querylogs-kfold" in current_block(text, KFOLD_START, KFOLD_END)
    block = render_query_logs_kfold({**_results(), "overrides": ["train.folds=4", "tune.timeout_s=null"]})
    assert "`train.folds=4`: each query is scored by the adapter trained on the 3 other folds' queries" in block
    assert "`acord`: 40 queries, `or_sharc`: 40 queries" in block and "make querylogs-kfold" in block
    assert "![MRR by corpus](data/transfer/kfold_real/results_mrr.png)" in block


# --- end to end under real DVC ----------------------------------------------------------------------


@pytest.mark.slow
def test_bench_end_to_end_on_two_tiny_corpora(tmp_path, monkeypatch, capsys):
    alpha_rows = tiny_corpus(n_copies=2)
    beta_rows = [{**r, "title": None, "source": "beta"} for r in tiny_corpus(n_copies=1)]
    alpha = _corpus_dir(tmp_path / "alpha", alpha_rows, _questions(alpha_rows))
    beta = _corpus_dir(tmp_path / "beta", beta_rows, _questions(beta_rows)[:2])
    # alpha has a few labelled real questions: they train, validate, and make a learning curve
    write_jsonl(
        alpha / "train_questions.jsonl",
        [
            {"id": f"r{i}", "question": f"Which rule covers topic {i}?", "relevant_ids": [alpha_rows[i]["id"]]}
            for i in (2, 3, 4, 5, 9, 10)
        ],
    )
    out = tmp_path / "transfer"
    monkeypatch.chdir(REPO)
    argv = ["bench", str(alpha), str(beta), "--out", str(out), *[a for s in TINY for a in ("-S", s)]]

    assert main(argv) == 0, capsys.readouterr().err
    first = capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["corpora"]] == ["alpha", "beta"]
    for row, n_chunks, n_questions in zip(results["corpora"], (24, 12), (3, 2)):
        metrics = json.loads((out / "work" / row["name"] / "data/eval/report.json").read_text())
        assert list(row["arms"]) == sorted(metrics["test"]["arms"], key=arm_order)
        assert {"cosine", "adapter", "bm25", "hybrid", "hybrid_cosine"} <= set(row["arms"])
        assert row["chunks"] == n_chunks and row["test_questions"] == row["human"] == n_questions
        for arm, values in row["arms"].items():
            assert set(values) == {"hit@5", "mrr@20", "ndcg@10"} and all(len(v["ci"]) == 2 for v in values.values())
            if arm != "cosine":
                cmp = row["vs_cosine"][arm]
                assert 0 <= cmp["hit@5"]["p"] <= 1 and 0 <= cmp["mrr@20"]["p"] <= 1 and "gained" in cmp["hit@5"]
        assert row["stages_run"] == ["check", "fetch", "synthesize", "embed", "tune", "train", "eval", "curve"]
        assert row["wall_s"] > 0
        assert "Running stage 'judge'" not in first
        params = yaml.safe_load((out / "work" / row["name"] / "params.yaml").read_text())
        assert params["fetch"]["source"] == "jsonl" and params["tune"]["n_trials"] == 2
    alpha_row, beta_row = results["corpora"]
    assert alpha_row["train_questions"] == 6 and alpha_row["validation"] == "real"
    assert [p["n_real"] for p in alpha_row["curve"]] == [0, 6] and "curve" not in beta_row
    assert beta_row["validation"] == "synthetic"
    md = (out / "results.md").read_text()
    assert "| alpha |" in md and "| beta |" in md and "p=" in md
    assert "**Learning curve, alpha**" in md and "Learning curve, beta" not in md
    assert (out / "results_curve.png").stat().st_size > 0
    assert (out / "results.png").stat().st_size > 0 and (out / "results_mrr.png").stat().st_size > 0
    assert (out / "work/alpha/.ragtune").is_symlink() and (out / "work/alpha/.dvc/config").read_text() == (
        "[core]\n    no_scm = True\n    analytics = false\n"
    )
    copied = out / "work/alpha/corpus/corpus.jsonl"
    mtime = copied.stat().st_mtime_ns

    # A rerun reruns nothing: unchanged files are not rewritten, DVC skips every stage.
    assert main(argv) == 0
    second = capsys.readouterr().err
    assert "Running stage" not in second and "Data and pipelines are up to date" in second
    assert copied.stat().st_mtime_ns == mtime
    rerun = json.loads((out / "results.json").read_text())
    assert all(r["stages_run"] == [] and r["last_run"]["stages_run"] for r in rerun["corpora"])
    assert rerun["corpora"][0]["arms"] == results["corpora"][0]["arms"]
