"""Judge through the real LLM layer: the `anthropic` backend against the local Messages-API server
(127.0.0.1, tests/fake_anthropic.py) on a tiny fixture pipeline with a real adapter and the packaged
MiniLM embedder. A full run, swapped-order averaging, a malformed reply retried then counted, a rerun
with zero calls, the stage with its outputs and MLflow, and the `ict` refusal."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fake_anthropic import FakeAnthropic, message

from ragtune.adapter.model import AdapterConfig, build_adapter, save_query_adapter
from ragtune.embedding.embedder import load_model
from ragtune.embeddings_npz import save_embeddings
from ragtune.errors import RagtuneError
from ragtune.io import write_json
from ragtune.judge.config import JudgeParams
from ragtune.judge.outputs import write_judge_outputs
from ragtune.judge.prompts import ANSWER_TOOL, JUDGE_METRICS, JUDGE_TOOL
from ragtune.judge.run import run_judge
from ragtune.llm import LlmParams
from ragtune.params import EmbeddingParams
from ragtune.paths import PipelinePaths
from ragtune.records import Chunk, TestQuestion, write_jsonl

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-ant-judge-test-0123456789-DO-NOT-LEAK"
DIM = 16
N_CHUNKS, N_TEST = 24, 6
TOPICS = [
    "breach notification",
    "data erasure",
    "risk management",
    "human oversight",
    "incident reporting",
    "resilience testing",
    "cybersecurity strategy",
    "vulnerability handling",
    "market surveillance",
    "sustainability reporting",
    "auditor opinions",
    "record keeping",
]


class JudgeServer(FakeAnthropic):
    """Answers the two tools of the judge. An answer quotes the first passage of its context. A
    judgement scores each answer by word overlap with the reference (1-5)
    and adds `position_bonus` (0 unless a test sets it)
    to Answer 1 (capped at 5): a position-biased judge whose bias the swapped orders must cancel.
    A question containing MALFORMED gets a score of 9 (out of range) on every judge attempt; one
    containing FLAKY gets it on the first attempt only."""

    position_bonus = 0

    def answer(self, body):
        tool = body["tools"][0]["name"]
        user = body["messages"][0]["content"]
        with self.lock:
            self.attempts[user] = self.attempts.get(user, 0) + 1
        if tool == ANSWER_TOOL:
            first = re.search(r"\[1\][^\n]*\n([^\n]+)", user).group(1)
            return 200, tool_use(tool, {"answer": f"Per the context: {first}", "context_sufficient": True}), {}
        assert tool == JUDGE_TOOL and body["tool_choice"] == {"type": "tool", "name": JUDGE_TOOL}
        reference = user.split("):\n", 1)[1].split("\n\nAnswer 1:\n")[0]
        a1, a2 = user.split("\n\nAnswer 1:\n")[1].split("\n\nAnswer 2:\n")
        s1 = min(5, overlap_score(a1, reference) + self.position_bonus)
        s2 = overlap_score(a2, reference)
        reply = {"answer_1": dict.fromkeys(JUDGE_METRICS, s1), "answer_2": dict.fromkeys(JUDGE_METRICS, s2)}
        question = user.split("\n", 1)[0]
        if "MALFORMED" in question or ("FLAKY" in question and "previous reply was rejected" not in user):
            reply["answer_2"]["overall"] = 9
        return 200, tool_use(tool, reply), {}


def tool_use(name, tool_input):
    return message([{"type": "tool_use", "id": "toolu_judge", "name": name, "input": tool_input}])


def words(text):
    return set(re.findall(r"[a-z]{3,}", text.lower()))


def overlap_score(answer, reference):
    """1-5 from the share of the reference's words found in the answer."""
    share = len(words(answer) & words(reference)) / max(1, len(words(reference)))
    return 1 + int(round(4 * share))


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_pipeline(root: Path, questions: list[str] | None = None, expert: bool = False) -> PipelinePaths:
    """corpus, test set, embeddings and a real (linear, rotating) adapter laid out like a pipeline run:
    test question q sits near chunk q, so cosine finds it and the rotated adapter mostly does not."""
    rng = np.random.default_rng(0)
    corpus_emb = _unit(rng.normal(size=(N_CHUNKS, DIM)))
    chunks = [
        Chunk(
            id=f"c{i:02d}",
            title=f"Art. {i}",
            source="fixture",
            text=f"Rules on {TOPICS[i % len(TOPICS)]}: operators shall document {TOPICS[i % len(TOPICS)]} "
            f"within {i + 2} days and report it to the authority of article {i}.",
        )
        for i in range(N_CHUNKS)
    ]
    texts = questions or [f"What are the rules on {TOPICS[q]}?" for q in range(N_TEST)]
    test = [
        TestQuestion(
            id=f"t{q}",
            question=texts[q],
            relevant_ids=[f"c{q:02d}"],
            answer=(f"Operators document {TOPICS[q]} within {q + 2} days." if expert else None),
        )
        for q in range(len(texts))
    ]
    test_emb = _unit(corpus_emb[: len(texts)] + 0.2 * rng.normal(size=(len(texts), DIM)))
    d = root / "data"
    write_jsonl(d / "fetch/corpus.jsonl", chunks)
    write_jsonl(d / "synthesize/test.jsonl", test)
    save_embeddings(d / "embed/corpus.npz", [c.id for c in chunks], corpus_emb)
    save_embeddings(d / "embed/test.npz", [q.id for q in test], test_emb)
    adapter = build_adapter(AdapterConfig(dim=DIM, kind="linear"), seed=0)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(DIM, DIM)))
    with torch.no_grad():
        adapter.delta.copy_(torch.as_tensor(0.8 * (rotation.T - np.eye(DIM)), dtype=torch.float32))
    save_query_adapter(adapter, root / "models/adapter")
    return PipelinePaths(
        corpus=d / "fetch/corpus.jsonl",
        test=d / "synthesize/test.jsonl",
        embed_dir=d / "embed",
        adapter=root / "models/adapter",
    )


@pytest.fixture(scope="module")
def minilm():
    return load_model(EmbeddingParams())


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake = JudgeServer().start()
    yield fake
    fake.stop()


def llm_for(server, **anthropic) -> LlmParams:
    return LlmParams.model_validate(
        {
            "backend": "anthropic",
            "temperature": 0.7,
            "anthropic": {"base_url": server.url, "retry_base_seconds": 0.01, "max_retries": 1, **anthropic},
        }
    )


FAST = JudgeParams(bootstrap_resamples=500, top_k=2, max_questions=None)


def judge(tmp_path, server, minilm, params=FAST, **anthropic):
    paths = (
        make_pipeline(tmp_path)
        if not (tmp_path / "data").exists()
        else PipelinePaths(
            corpus=tmp_path / "data/fetch/corpus.jsonl",
            test=tmp_path / "data/synthesize/test.jsonl",
            embed_dir=tmp_path / "data/embed",
            adapter=tmp_path / "models/adapter",
        )
    )
    return run_judge(
        paths,
        params,
        llm_for(server, **anthropic),
        EmbeddingParams(),
        tmp_path / "judge_llm.sqlite",
        tmp_path / "judge_emb.sqlite",
        embedding_model=minilm,
    )


def test_full_run_then_a_rerun_with_zero_calls(tmp_path, server, minilm):
    result = judge(tmp_path, server, minilm)
    m = result.metrics
    calls = server.message_calls()
    answer_calls = [c for c in calls if c["body"]["tools"][0]["name"] == ANSWER_TOOL]
    judge_calls = [c for c in calls if c["body"]["tools"][0]["name"] == JUDGE_TOOL]
    distinct_contexts = N_TEST * 2 - m["setup"]["same_context"]
    assert len(answer_calls) == distinct_contexts  # identical contexts are one cached request
    # every pair in both orders; a pair of identical answers is one request
    assert len(judge_calls) == 2 * N_TEST - m["setup"]["identical_answers"]
    for c in judge_calls:  # the judge runs at temperature 0 whatever llm.temperature says
        assert c["body"]["temperature"] == 0.0 and c["body"]["max_tokens"] == FAST.judge_max_tokens
        assert set(c["body"]["tools"][0]["input_schema"]["properties"]) == {"answer_1", "answer_2"}
    assert m["setup"]["judged"] == N_TEST and m["failures"]["total"] == 0
    assert m["setup"]["reference"] == "relevant passages" and m["setup"]["backend"] == "anthropic"
    assert m["setup"]["answer_repeat_penalty"] is None  # the API has no such setting: none was sent
    assert not any("repeat_penalty" in c["body"] for c in answer_calls)
    # cosine retrieves the relevant chunk first, the rotated adapter mostly does not: cosine wins
    assert m["setup"]["context_hit_rate"]["cosine"] == 1.0
    assert m["arms"]["cosine"]["overall"] > m["arms"]["adapter"]["overall"]
    assert m["arms"]["cosine"]["token_f1"] > m["arms"]["adapter"]["token_f1"]
    assert m["arms"]["cosine"]["embedding_similarity"] > m["arms"]["adapter"]["embedding_similarity"]
    overall = m["adapter_vs_cosine"]["overall"]
    assert overall["losses"] > overall["wins"] and overall["wins"] + overall["ties"] + overall["losses"] == N_TEST
    low, high = m["arms"]["cosine"]["ci"]["overall"]
    assert low <= m["arms"]["cosine"]["overall"] <= high
    usage = m["usage"]
    assert usage["calls"] == len(calls) and usage["cache_hits"] == 0
    assert usage["tokens_in"] == 120 * len(calls) and usage["cost_usd"] == pytest.approx(
        (120 + 30 * 5) * len(calls) / 1e6
    )
    assert m["warning"] is None  # an unbiased judge: both orders agree

    written = write_judge_outputs(result, tmp_path / "out")
    for path in written:
        assert path.is_file() and path.stat().st_size > 0
        assert KEY not in path.read_bytes().decode("utf-8", "replace")
    answers = [json.loads(line) for line in (tmp_path / "out/answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 * N_TEST and all(a["answer"].startswith("Per the context: ") for a in answers)
    rows = list(csv.DictReader((tmp_path / "out/scores.csv").open()))
    assert len(rows) == 2 * N_TEST and {"overall_shown_first", "overall_shown_second", "token_f1"} <= set(rows[0])

    before = len(server.message_calls())
    again = judge(tmp_path, server, minilm)
    assert len(server.message_calls()) == before  # everything came from the cache
    assert again.metrics["usage"]["calls"] == 0 and again.metrics["usage"]["cost_usd"] == 0.0
    assert again.metrics["usage"]["results_cost_usd"] == pytest.approx(m["usage"]["cost_usd"])
    drop = ("usage",)
    assert {k: v for k, v in again.metrics.items() if k not in drop} == {k: v for k, v in m.items() if k not in drop}


def test_swapped_orders_average_out_a_position_bias(tmp_path, server):
    server.position_bonus = 2  # Answer 1 always gets +2 (capped at 5)
    result = run_judge(make_pipeline(tmp_path), FAST, llm_for(server), EmbeddingParams(), tmp_path / "llm.sqlite", None)
    judged = [r for r in result.scores if r["judged"]]
    assert len(judged) == 2 * N_TEST
    for r in judged:
        for metric in JUDGE_METRICS:
            first, second = r[f"{metric}_shown_first"], r[f"{metric}_shown_second"]
            assert first == min(5, second + 2)  # the server's bias, seen per arm in the raw orders
            assert r[metric] == pytest.approx((first + second) / 2)  # and averaged over both
    m = result.metrics
    # the arm mean is the mean of the per-question averages
    cosine = [r["overall"] for r in judged if r["arm"] == "cosine"]
    assert m["arms"]["cosine"]["overall"] == pytest.approx(np.mean(cosine), abs=1e-6)
    pref = m["position_preference"]
    assert pref["judgements"] == 2 * N_TEST and pref["first_preferred"] > pref["second_preferred"] == 0.0
    assert m["order_agreement"]["mean_abs_score_shift"]["overall"] > 0
    assert m["order_agreement"]["overall_winner_rate"] < 1.0  # close pairs flip with the order
    assert m["arms"]["cosine"]["embedding_similarity"] is None  # no embedder given


def test_a_malformed_reply_is_retried_then_counted_as_a_failure(tmp_path, server, minilm):
    questions = [f"What are the rules on {t}?" for t in TOPICS[:N_TEST]]
    questions[1] = "MALFORMED: " + questions[1]
    questions[2] = "FLAKY: " + questions[2]
    make_pipeline(tmp_path, questions)
    params = FAST.model_copy(update={"schema_retries": 1})
    m = judge(tmp_path, server, minilm, params).metrics
    judge_calls = [
        c["body"]["messages"][0]["content"]
        for c in server.message_calls()
        if c["body"]["tools"][0]["name"] == JUDGE_TOOL
    ]
    malformed = [u for u in judge_calls if u.startswith("Question: MALFORMED")]
    flaky = [u for u in judge_calls if u.startswith("Question: FLAKY")]
    assert len(malformed) == 4 and sum("previous reply was rejected" in u for u in malformed) == 2
    assert any("answer_2.overall" in u for u in malformed)  # the retry says what was wrong
    assert len(flaky) == 4  # both orders failed once and were fixed by their retry
    f = m["failures"]
    assert f["by_reason"] == {"judge:invalid_output": 2} and f["total"] == 2
    assert {x["item"] for x in f["items"]} == {"t1/cosine_first", "t1/adapter_first"}
    assert all(x["attempts"] == 2 and "answer_2.overall" in x["detail"] for x in f["items"])
    assert m["setup"]["judged"] == N_TEST - 1 and f["questions_not_judged"] == 1
    assert m["adapter_vs_cosine"]["overall"]["questions"] == N_TEST - 1
    assert m["adapter_vs_cosine"]["token_f1"]["questions"] == N_TEST  # the answers still count here

    before = len(server.message_calls())
    m2 = judge(tmp_path, server, minilm, params).metrics
    assert len(server.message_calls()) == before  # the malformed replies are cached too: same failure, no call
    assert m2["failures"]["by_reason"] == f["by_reason"]


def test_expert_answers_are_the_reference_and_ict_falls_back_to_a_language_model(tmp_path, server, minilm):
    paths = make_pipeline(tmp_path, expert=True)
    m = run_judge(
        paths,
        FAST.model_copy(update={"max_questions": 2}),
        llm_for(server),
        EmbeddingParams(),
        tmp_path / "llm.sqlite",
        None,
    ).metrics
    assert m["setup"]["reference"] == "expert answer" and m["setup"]["questions"] == 2
    judge_user = next(
        c["body"]["messages"][0]["content"]
        for c in server.message_calls()
        if c["body"]["tools"][0]["name"] == JUDGE_TOOL
    )
    assert "Reference (expert answer):\nOperators document" in judge_user
    # llm.backend ict (pseudo-queries, no language model): the judge runs on judge.fallback_backend.
    n = len(server.requests)
    via_fallback = run_judge(
        paths,
        FAST.model_copy(update={"max_questions": 2, "fallback_backend": "anthropic"}),
        llm_for(server).model_copy(update={"backend": "ict"}),
        EmbeddingParams(),
        tmp_path / "llm.sqlite",
        None,
    ).metrics
    assert via_fallback["setup"]["backend"] == "anthropic"
    assert via_fallback["setup"]["judged"] == m["setup"]["judged"]
    assert len(server.requests) == n  # same requests as before: all from the cache
    os.environ.pop("ANTHROPIC_API_KEY")
    with pytest.raises(RagtuneError, match="ANTHROPIC_API_KEY"):
        run_judge(paths, FAST, llm_for(server), EmbeddingParams(), tmp_path / "llm.sqlite", None)
    assert len(server.requests) == n


def test_stage_writes_outputs_and_logs_next_to_the_train_run(tmp_path, server):
    import mlflow

    make_pipeline(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {
        "judge": {"bootstrap_resamples": 300, "top_k": 2, "max_questions": 4},
        "llm": {"backend": "anthropic", "anthropic": {"base_url": server.url, "max_retries": 0}},
        "mlflow": {"tracking_uri": uri, "experiment": "t"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("t")
    with mlflow.start_run(run_name="train") as run:
        train_id = run.info.run_id
    write_json(tmp_path / "data/train/run.json", {"mlflow_run_id": train_id})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ragtune.stages.judge"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "judge (anthropic claude-haiku-4-5): 4/4 questions judged" in proc.stdout
    assert KEY not in proc.stdout + proc.stderr
    out = tmp_path / "data/judge"
    assert {p.name for p in out.iterdir()} >= {
        "report.json",
        "metrics.json",
        "run.json",
        "answers.jsonl",
        "scores.csv",
        "judge_scores.png",
        "text_scores.png",
    }
    assert (tmp_path / "data/cache/judge_llm.sqlite").is_file()
    metrics = json.loads((out / "report.json").read_text())
    # This run's calls and cost go to run.json (not committed); the report keeps what the replies cost.
    run_facts = json.loads((out / "run.json").read_text())
    assert run_facts["calls"] > 0 and run_facts["cache_hits"] == 0 and run_facts["cost_usd"] > 0
    assert "calls" not in metrics["usage"] and metrics["usage"]["results_cost_usd"] == pytest.approx(
        run_facts["cost_usd"]
    )
    headline = json.loads((out / "metrics.json").read_text())
    assert headline["adapter"]["overall"] == metrics["arms"]["adapter"]["overall"]
    assert headline["cost_usd"] == metrics["usage"]["results_cost_usd"] and headline["questions_judged"] == 4
    client = mlflow.MlflowClient(uri)
    runs = [
        r
        for r in client.search_runs([client.get_experiment_by_name("t").experiment_id])
        if r.data.tags.get("ragtune.stage") == "judge"
    ]
    assert len(runs) == 1 and runs[0].data.tags["mlflow.parentRunId"] == train_id
    overall = metrics["arms"]["adapter"]["overall"]
    assert runs[0].data.metrics["judge.adapter.overall"] == pytest.approx(overall)
    train_run = client.get_run(train_id)  # not copied onto the train run: linked from it
    assert "judge.adapter.overall" not in train_run.data.metrics
    assert train_run.data.tags["ragtune.judge_run_id"] == runs[0].info.run_id
    assert runs[0].data.params["judge.max_questions"] == "4"
    assert all(KEY not in str(v) for v in runs[0].data.params.values())
    assert {"report.json", "metrics.json", "judge_scores.png"} <= {
        f.path for f in client.list_artifacts(runs[0].info.run_id)
    }


def test_batch_mode_gives_the_same_judgement_at_half_the_cost(tmp_path, server):
    paths = make_pipeline(tmp_path)
    params = FAST.model_copy(update={"max_questions": 3})
    direct = run_judge(paths, params, llm_for(server), EmbeddingParams(), tmp_path / "direct.sqlite", None).metrics
    n_direct = len(server.message_calls())
    batch = run_judge(
        paths,
        params,
        llm_for(server, batch=True, batch_poll_seconds=0.01),
        EmbeddingParams(),
        tmp_path / "batch.sqlite",
        None,
    ).metrics
    assert len(server.message_calls()) == n_direct  # nothing went through /v1/messages
    posts = [r for r in server.requests if r["path"] == "/v1/messages/batches"]
    assert len(posts) == 2  # one batch of answers, then one of judgements
    assert batch["arms"] == direct["arms"] and batch["adapter_vs_cosine"] == direct["adapter_vs_cosine"]
    assert batch["usage"]["cost_usd"] == pytest.approx(direct["usage"]["cost_usd"] / 2)
