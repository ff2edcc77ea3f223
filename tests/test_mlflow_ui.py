"""What MLflow's own web UI shows after a pipeline run, read in a real headless browser (Debian's Chromium
through Playwright; `make browser` installs it), served by `ragtune ui` as `make ui` serves it: the URL it
prints opens the experiment's runs table (not the GenAI overview), a train run shows its params, its own
metrics and the duration the stage logged, the tune run lists its trials as child runs, and the logged model
lists metrics and the datasets they were computed on. Every stage run starts with the stage's process (seen
from outside) and lasts as long as the stage logs, within 10%."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from browser_support import launched_chromium
from pipeline_support import REPO, run_stages, tiny_corpus, write_jsonl
from server_support import free_port

pytestmark = pytest.mark.slow
STAGES = ("fetch", "synthesize", "embed", "tune", "train", "eval")
TRACKED = STAGES[1:]  # fetch logs no MLflow run
N_TRIALS = 2


def tiny_pipeline(root: Path) -> dict:
    """fetch to eval on a small own corpus, each stage its own process as under `dvc repro`, logging to a
    local SQLite store as by default; {stage: StageProcess}."""
    rows = tiny_corpus(n_copies=2)
    write_jsonl(root / "corpus/corpus.jsonl", rows)
    tests = [
        {"id": "q1", "question": "Who must notify a personal data breach?", "relevant_ids": [rows[1]["id"]]},
        {"id": "q2", "question": "Who handles vulnerabilities of digital products?", "relevant_ids": [rows[8]["id"]]},
    ]
    write_jsonl(root / "corpus/test.jsonl", tests)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fetch"].update(source="jsonl")
    params["fetch"]["jsonl"].update(corpus="corpus/corpus.jsonl", test="corpus/test.jsonl")
    params["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    params["tune"].update(n_trials=N_TRIALS, timeout_s=None)
    params["train"].update(max_epochs=3, bagging=1)
    params["eval"].update(bootstrap_resamples=200)
    return run_stages(root, params, *STAGES, timeout=600, log_level="INFO")


class RagtuneUI:
    """`ragtune ui` in `cwd` on a free port, as `make ui` runs it: the URL it prints, once the UI answers."""

    def __init__(self, cwd: Path, timeout_s: float = 180.0):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ragtune.cli", "ui", "--port", str(self.port)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # mlflow ui runs the web server in child processes: stop them all
        )
        self.printed: list[str] = []
        while not any("#/experiments/" in line for line in self.printed):
            line = self.proc.stdout.readline()
            assert line, f"ragtune ui exited without a URL: {''.join(self.printed)}"
            self.printed.append(line)
        self.url = next(line.strip() for line in self.printed if "#/experiments/" in line)
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    break
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, "the MLflow UI did not start"
                time.sleep(0.5)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def browser():
    with launched_chromium() as chromium:
        yield chromium


def shown_seconds(text: str) -> float:
    """A duration as the UI writes it (`850ms`, `12.3s`, `1.2min`, `1.1h`) in seconds."""
    value, unit = re.fullmatch(r"([\d.]+)(ms|s|min|h|d)", text.strip()).groups()
    return float(value) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}[unit]


def after(body: str, label: str, n: int = 1) -> str | list[str]:
    """The line after `label` in a page's text (the value beside a label in the run and model pages), or the
    `n` lines after it."""
    lines = [line.strip() for line in body.splitlines()]
    i = lines.index(label)
    return lines[i + 1] if n == 1 else lines[i + 1 : i + 1 + n]


def within_10_percent(measured: float, reference: float) -> bool:
    return abs(measured - reference) <= 0.1 * reference


def test_the_mlflow_pages_tell_the_truth(tmp_path, browser):
    import mlflow

    root = tmp_path / "project"
    processes = tiny_pipeline(root)
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ragtune")
    runs = {r.data.tags["ragtune.stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(TRACKED)
    logged = check_durations(runs, processes)

    # Metrics live where they were computed: eval's on the eval run, linked to the train run both ways.
    train, ev = runs["train"], runs["eval"]
    assert not any(k.startswith("test.") for k in train.data.metrics)
    assert ev.data.tags["ragtune.train_run_id"] == train.info.run_id
    assert train.data.tags["ragtune.eval_run_id"] == ev.info.run_id

    ui = RagtuneUI(root)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        check_pages(page, ui, client, logged["train"])
    finally:
        page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
        ui.stop()


def check_durations(runs: dict, processes: dict) -> dict[str, float]:
    """Each stage run spans its process: it starts when the process did (not when the stage opened it, after
    imports and work), ends before the process does, and lasts as long as the stage logs ("<stage>: finished
    in N s", its clock from the process start to the end of its work), within 10%. (The process's own wall
    time also has the interpreter's exit, seconds on a busy machine.) The seconds each stage logged."""
    logged = {}
    for stage in TRACKED:
        info, process = runs[stage].info, processes[stage]
        logged[stage] = float(re.search(rf"{stage}: finished in ([\d.]+) s", process.stderr).group(1))
        # (the start time is known to a clock tick, 10 ms; MLflow keeps milliseconds)
        assert process.started - 0.02 <= info.start_time / 1000 <= process.started + 1.0, stage
        assert info.end_time / 1000 <= process.ended, stage
        duration = (info.end_time - info.start_time) / 1000
        assert within_10_percent(duration, logged[stage]), (stage, duration, logged[stage])
    return logged


def check_pages(page, ui: RagtuneUI, client, train_seconds: float) -> None:
    """What the UI shows, from the URL `ragtune ui` printed on: the runs table, a train run, the tune run and
    the logged model."""
    exp = client.get_experiment_by_name("ragtune")
    all_runs = client.search_runs([exp.experiment_id])
    runs = {r.data.tags["ragtune.stage"]: r for r in all_runs if not r.info.run_name.startswith("trial-")}
    train, tune = runs["train"], runs["tune"]
    trials = sorted(r.info.run_name for r in all_runs if r.data.tags.get("mlflow.parentRunId") == tune.info.run_id)
    assert len(trials) == N_TRIALS

    # The experiment's runs table: the stage runs, eval nested under the train run it evaluated and the trials
    # under tune (shown when their parent is expanded); not the GenAI overview.
    assert ui.url.startswith(f"http://127.0.0.1:{ui.port}/#/experiments/{exp.experiment_id}/")
    page.goto(ui.url)
    page.get_by_role("link", name="train", exact=True).wait_for(timeout=60_000)
    body = page.inner_text("body")
    assert "/runs" in page.url and "Run Name" in body and "Token Usage" not in body, body
    assert f"{len(all_runs)} matching runs" in body
    assert run_links(page) == {"synthesize", "embed", "tune", "train"}
    for parent in ("train", "tune"):
        row = page.locator("[role=row]", has=page.get_by_role("link", name=parent, exact=True))
        row.get_by_role("button").click()
    page.get_by_role("link", name=trials[-1], exact=True).wait_for(timeout=30_000)
    assert run_links(page) == {*TRACKED, *trials}

    base = f"http://127.0.0.1:{ui.port}/#/experiments/{exp.experiment_id}"
    # A train run: its params, its own metrics (no eval numbers copied onto it), the duration it logged, and
    # the eval run as its child.
    page.goto(f"{base}/runs/{train.info.run_id}")
    page.get_by_role("link", name="eval", exact=True).wait_for(timeout=60_000)
    body = page.inner_text("body")
    assert f"Metrics ({len(train.data.metrics)})" in body and "test.adapter" not in body, body
    assert "val_hit_5" in body and "train.max_epochs" in body, body
    assert within_10_percent(shown_seconds(after(body, "Duration")), train_seconds), body

    # The tune run lists its trials as child runs.
    page.goto(f"{base}/runs/{tune.info.run_id}")
    for name in trials:
        page.get_by_role("link", name=name, exact=True).wait_for(timeout=60_000)
    assert "Child runs" in page.inner_text("body")

    # The logged model: its metrics (train's on validation, eval's of the arms that run it on the test set),
    # each with its dataset and source run, and the datasets it was evaluated on.
    (model,) = client.search_logged_models([exp.experiment_id])
    metrics = client.get_logged_model(model.model_id).metrics
    page.goto(f"{base}/models/{model.model_id}")
    page.wait_for_selector("text=Datasets used", timeout=60_000)
    page.wait_for_selector("text=val_hit_5", timeout=60_000)
    body = page.inner_text("body")
    assert f"Metrics ({len(metrics)})" in body and len(metrics) > 20, body
    used, more = after(body, "Datasets used", 2)
    assert used.startswith("synthesize/questions (#") and more == "+1", body  # and synthesize/test
    search = page.get_by_placeholder("Search metrics")
    for name, dataset, source in (
        ("test.adapter.hit_at_5", "synthesize/test", "eval"),
        ("val_hit_5", "synthesize/questions", "train"),
    ):
        search.fill(name)
        row = page.get_by_role("row", name=re.compile(rf"^{re.escape(name)}\b")).first
        assert dataset in row.inner_text() and source in row.inner_text(), row.inner_text()
    search.fill("test.cosine")  # raw cosine's numbers are the eval run's, not the adapter's
    page.wait_for_selector("text=No metrics match the search filter", timeout=30_000)


def run_links(page) -> set[str]:
    """The run names the runs table links to."""
    links = page.locator("[role=row] a").all_inner_texts()
    return {name.strip() for name in links} - {"", "query_encoder"}
