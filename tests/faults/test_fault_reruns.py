"""Fault cases 1 (issue 30): paid and computed work survives every way a user reruns. Real DVC on tiny corpora:
the synthesize stage against the fake Messages API (calls counted by the server) and the embed stage with the
packaged embedder (texts encoded counted by the stage), each failed part-way or interrupted (SIGINT as Ctrl-C
sends it, SIGKILL), then rerun with `dvc repro`, `dvc exp run`, `dvc exp run --temp`, `dvc exp run --queue` +
`dvc queue start`, and after a teammate's `dvc pull`."""

from __future__ import annotations

import subprocess

import pytest
from fake_anthropic import FakeAnthropic
from fault_support import SIGINT, SIGKILL, Project, corpus_rows, count, interrupt, wait_until

pytestmark = pytest.mark.slow

TEST = [{"id": "q1", "question": "What must entities report to the authority?", "relevant_ids": ["c1"]}]
N = 10  # chunks sent to the fake API; every third (4 of 10) fails while the outage lasts
FAILING = 4
EMBED_CHUNKS = 120  # with their ICT pseudo-queries, several commits of 256 vectors
ICT = {"backend": "ict"}
EMBED = {"max_seq_length": 64}  # fast: the texts are short anyway


@pytest.fixture
def fake():
    server = FakeAnthropic().start()
    yield server
    server.stop()


def anthropic(fake: FakeAnthropic) -> dict:
    return {
        "backend": "anthropic",
        "anthropic": {"base_url": fake.url, "concurrency": 1, "max_retries": 0, "retry_base_seconds": 0.01},
    }


def synthesize_fails_part_way(project: Project, fake: FakeAnthropic, *run: str) -> None:
    """`run` (e.g. repro synthesize) while the API fails every third chunk: the stage fails after paying for
    the other six, which are kept."""
    project.write_corpus(corpus_rows(N, marker="OUTAGE", every=3), TEST)
    project.set_params(llm=anthropic(fake), embedding=EMBED)
    project.commit("a corpus, the Anthropic backend")
    fake.failing = "OUTAGE"
    out = project.dvc(*run, ok=False)
    assert "40% of calls failed" in out and len(fake.message_calls()) == N
    fake.failing = None


def embed_interrupted(project: Project, sig: int) -> int:
    """`dvc repro embed` on a corpus with several hundred texts, interrupted by `sig` once some vectors are
    committed; returns how many are."""
    project.write_corpus(corpus_rows(EMBED_CHUNKS), TEST)
    project.set_params(llm=ICT, embedding=EMBED)
    project.commit("a larger corpus, ict")
    project.dvc("repro", "synthesize")
    proc = project.start("repro", "embed")
    wait_until(
        lambda: project.journal_rows("embeddings.sqlite") >= 256 or proc.poll() is not None, what="vectors committed"
    )
    assert proc.poll() is None, "embed finished before it could be interrupted"
    interrupt(proc, sig)
    committed = project.journal_rows("embeddings.sqlite")
    assert committed >= 256
    return committed


def test_synthesize_failed_part_way_then_dvc_repro(tmp_path, fake):
    project = Project(tmp_path / "p")
    synthesize_fails_part_way(project, fake, "repro", "synthesize")
    project.dvc("repro", "synthesize")
    facts = project.run_facts("synthesize")
    assert len(fake.message_calls()) == N + FAILING
    assert (facts["calls"], facts["cache_hits"]) == (FAILING, N - FAILING)
    assert facts["journal_hits"] == 0  # dvc repro keeps the persistent cache: the rows were merged there


def test_synthesize_failed_part_way_then_dvc_exp_run_and_embed_interrupted_then_dvc_exp_run(tmp_path, fake):
    project = Project(tmp_path / "p")
    synthesize_fails_part_way(project, fake, "exp", "run", "synthesize")
    # dvc exp run checks data/cache/llm.sqlite out as dvc.lock has it (here: nothing) before it runs.
    project.dvc("exp", "run", "synthesize")
    facts = project.run_facts("synthesize")
    assert len(fake.message_calls()) == N + FAILING
    assert (facts["calls"], facts["cache_hits"]) == (FAILING, N - FAILING)
    assert facts["journal_hits"] == N  # every row, the six answers and the four failures, came from the journal

    committed = embed_interrupted(project, SIGINT)  # Ctrl-C
    project.dvc("exp", "run", "embed")
    facts = project.run_facts("embed")
    assert facts["journal_hits"] == committed  # the reset cache had none of them; nothing committed is redone
    assert facts["encoded"] == project.journal_rows("embeddings.sqlite") - committed


def test_embed_killed_then_dvc_exp_run_temp(tmp_path):
    project = Project(tmp_path / "p")
    committed = embed_interrupted(project, SIGKILL)
    out = project.dvc("exp", "run", "--temp", "embed")  # a fresh copy of the repository under .dvc/tmp/exps
    assert count(r"embed: (\d+) texts encoded", out) == project.journal_rows("embeddings.sqlite") - committed
    assert count(r"\((\d+) from the journal\)", out) == committed


def test_synthesize_interrupted_then_dvc_exp_run_temp(tmp_path, fake):
    project = Project(tmp_path / "p")
    project.write_corpus(corpus_rows(N), TEST)
    project.set_params(llm=anthropic(fake))
    project.commit("a corpus, the Anthropic backend")
    fake.delay = 0.3
    proc = project.start("exp", "run", "--temp", "synthesize")
    wait_until(lambda: len(fake.message_calls()) >= 3, what="three calls")
    out = interrupt(proc, SIGINT)
    assert "finishing the calls in flight" in out
    before = len(fake.message_calls())
    fake.delay = 0.0
    out = project.dvc("exp", "run", "--temp", "synthesize")
    assert len(fake.message_calls()) == N  # each chunk paid for once over both runs
    assert count(r"(\d+) calls, \d+ cache hits", out) == N - before
    assert count(r"\((\d+) from the journal\)", out) == before


def test_synthesize_killed_then_dvc_exp_run_queue_and_dvc_queue_start(tmp_path, fake):
    project = Project(tmp_path / "p")
    project.write_corpus(corpus_rows(N), TEST)
    project.set_params(llm=anthropic(fake))
    project.commit("a corpus, the Anthropic backend")
    fake.delay = 0.3
    proc = project.start("repro", "synthesize")
    wait_until(lambda: len(fake.message_calls()) >= 3, what="three calls")
    interrupt(proc, SIGKILL)
    before = len(fake.message_calls())
    fake.delay = 0.0
    log = project.queue_and_wait("synthesize")
    # A kill loses at most the one call in flight (concurrency 1): its answer was never committed.
    assert N <= len(fake.message_calls()) <= N + 1
    assert count(r"\((\d+) from the journal\)", log) >= before - 1


def test_teammate_dvc_pull_gets_every_paid_answer_and_vector(tmp_path, fake):
    """The rows a failed run paid for and its rerun took from the journal are merged into the tracked caches,
    so `dvc push` shares them: a teammate with no journal makes no call and encodes nothing."""
    project = Project(tmp_path / "p")
    synthesize_fails_part_way(project, fake, "exp", "run", "embed")
    project.dvc("exp", "run", "embed")
    project.commit("first run")
    project.dvc("remote", "add", "-d", "team", str(tmp_path / "remote"))
    project.commit("team remote")
    project.dvc("push")
    paid = len(fake.message_calls())

    clone = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(project.path), str(clone)], check=True)
    teammate = Project(clone, tmp_path / "teammate-journal", copy=False)  # another machine: no journal
    teammate.dvc("pull", "--with-deps", "embed")  # what the first run made: fetch to embed
    teammate.dvc("repro", "-f", "-s", "synthesize")
    teammate.dvc("repro", "-f", "-s", "embed")
    assert len(fake.message_calls()) == paid
    synth, embed = teammate.run_facts("synthesize"), teammate.run_facts("embed")
    assert (synth["calls"], synth["cache_hits"], synth["journal_hits"]) == (0, N, 0)
    assert embed["encoded"] == 0 and embed["cache_hits"] > 0 and embed["journal_hits"] == 0
