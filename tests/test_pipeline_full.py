"""All seven stages under real DVC on a tiny corpus: outputs exist and agree with each other, a rerun
does nothing, the same pipeline run again from a fresh clone leaves git clean, and a downstream param change
reruns only what depends on it (no LLM call repeated)."""

import json
import subprocess

import pytest
import yaml
from pipeline_support import copy_repo, dvc, tiny_corpus, write_jsonl

pytestmark = pytest.mark.slow


def test_whole_pipeline_on_a_tiny_corpus(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    rows = tiny_corpus(n_copies=3)
    write_jsonl(repo / "corpus" / "corpus.jsonl", rows)
    write_jsonl(
        repo / "corpus" / "test.jsonl",
        [
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
        ],
    )
    settings = [
        "fetch.source=jsonl",
        "fetch.jsonl.corpus=corpus/corpus.jsonl",
        "fetch.jsonl.test=corpus/test.jsonl",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "synthesize.max_chunks=4",
        "tune.n_trials=3",
        "judge.max_questions=1",
    ]
    dvc(repo, "exp", "run", *[a for s in settings for a in ("-S", s)], timeout=1500)

    # What a second `make run` on a fresh clone does: every stage again, no cache, no run records. The committed
    # outputs (metrics, reports, plot CSVs) come out byte for byte the same, and dvc.lock too but for the hashes
    # of the outputs that record wall times (the caches, the Optuna journal).
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "first run"], cwd=repo, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "data/cache/llm.sqlite").exists() and not (clone / "data/train/run.json").exists()
    out = dvc(clone, "repro", timeout=1500, journal=tmp_path / "clone-journal")  # no cache of any kind
    for stage in ("fetch", "synthesize", "embed", "tune", "train", "eval", "judge"):
        assert f"Running stage '{stage}'" in out
    assert_same_committed_outputs(clone)
    assert json.loads((clone / "data/train/run.json").read_text())["mlflow_run_id"]  # the run's own facts: here

    # Paid work shared through a DVC remote (a local directory here): push, fresh clone, pull, and the stages
    # that pay (LLM calls, embeddings) forced again: the pulled caches answer every embedding and every LLM call
    # (the judge's local model is deterministic, so even its failures are kept), and the committed outputs come
    # out the same. The stages between them pay nothing; the fresh clone above already reran them.
    dvc(repo, "remote", "add", "-d", "team", str(tmp_path / "remote"))
    subprocess.run([*git, "commit", "-qam", "team remote"], cwd=repo, check=True)
    dvc(repo, "push")
    pulled = tmp_path / "pulled"
    subprocess.run(["git", "clone", "-q", str(repo), str(pulled)], check=True)
    dvc(pulled, "pull")
    for cache in ("llm", "embeddings", "judge_llm", "judge_embeddings"):
        assert (pulled / f"data/cache/{cache}.sqlite").is_file()
    # A teammate's machine: no cache journal, only what `dvc pull` brought.
    out = dvc(pulled, "repro", "-f", "-s", "synthesize", "embed", "judge", timeout=1500, journal=tmp_path / "mate")
    assert all(f"Running stage '{stage}'" in out for stage in ("synthesize", "embed", "judge"))
    embed_run = json.loads((pulled / "data/embed/run.json").read_text())
    assert embed_run["encoded"] == 0 and embed_run["cache_hits"] > 0
    judge_run = json.loads((pulled / "data/judge/run.json").read_text())
    assert judge_run["cache_hits"] > 0 and judge_run["calls"] == 0, judge_run
    assert json.loads((pulled / "data/synthesize/run.json").read_text())["calls"] == 0
    assert_same_committed_outputs(pulled)

    synth = json.loads((repo / "data/synthesize/report.json").read_text())
    assert synth["backend"] == "ict" and synth["chunks_requested"] == 4 and synth["questions_kept"] > 0
    best = json.loads((repo / "data/tune/best.json").read_text())
    assert sum(best["trials"].values()) == 3 and 0.0 <= best["value"] <= 1.0
    train = json.loads((repo / "data/train/metrics.json").read_text())  # the headline numbers
    # Model selection includes the untrained identity: never worse than raw cosine on validation.
    assert train["val_hit@5"] >= train["baseline_val_hit@5"]
    assert (repo / "models/adapter/config.json").is_file()
    metrics = json.loads((repo / "data/eval/report.json").read_text())
    assert metrics["test"]["questions"] == 2 and metrics["test"]["origin"] == "human"
    assert {"cosine", "adapter", "bm25"} <= set(metrics["test"]["arms"])
    assert (repo / "data/eval/hit_rate_at_k.png").stat().st_size > 0
    judge = json.loads((repo / "data/judge/report.json").read_text())
    # llm.backend ict cannot answer: the judge ran on its fallback, the packaged local model.
    assert judge["setup"]["backend"] == "llamacpp" and judge["setup"]["questions"] == 1
    assert judge["setup"]["answer_repeat_penalty"] == 1.1  # the local model's answers are penalised
    assert judge["setup"]["reference"] in {"expert answer", "relevant passages"}
    assert (repo / "data/judge/answers.jsonl").read_text().strip()

    # DVC metrics are the headline numbers only: a few per stage, not every key of every report.
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    columns = sum(1 for _ in _leaves(shown))
    assert 0 < columns < 120, columns

    out = dvc(repo, "repro")
    assert "Running stage" not in out and "Data and pipelines are up to date" in out

    # A param only eval reads: eval reruns, nothing upstream does.
    out = dvc(repo, "exp", "run", "-S", "eval.bootstrap_resamples=500")
    assert "Running stage 'eval'" in out
    for stage in ("fetch", "synthesize", "embed", "tune", "train", "judge"):
        assert f"Running stage '{stage}'" not in out


def assert_same_committed_outputs(repo):
    """No JSON or CSV file differs from the commit, and dvc.lock differs at most in the hashes of the outputs
    that record wall times by nature: the per-item caches (each entry keeps its seconds) and the Optuna journal."""
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "*.json", "*.csv"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert changed == "", subprocess.run(
        ["git", "diff", "--", "*.json", "*.csv"], cwd=repo, capture_output=True, text=True
    ).stdout[-4000:]
    committed = subprocess.run(
        ["git", "show", "HEAD:dvc.lock"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert _lock_without_timed_outputs(yaml.safe_load(committed)) == _lock_without_timed_outputs(
        yaml.safe_load((repo / "dvc.lock").read_text())
    )


def _lock_without_timed_outputs(lock):
    timed = ("data/cache/", "data/tune/storage")
    for stage in lock["stages"].values():
        for key in ("deps", "outs"):
            stage[key] = [e for e in stage.get(key, []) if not e["path"].startswith(timed)]
    return lock


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree
