"""Judge, the parts that need no LLM: reply validation, schema retries, the swapped-order protocol and
its aggregation by hand, token F1, references, question selection, params, and a whole judgement on a
tiny fixture driven by a scripted judge (the real backends are tested in test_judge_llm.py)."""

import json

import numpy as np
import pytest

from ragtune.errors import ParamsError, RagtuneError
from ragtune.judge.aggregate import (
    identical_pair_consistency,
    mean_over_orders,
    order_agreement,
    position_preference,
    to_arm_scores,
)
from ragtune.judge.calls import LlmReply, complete_with_retries
from ragtune.judge.config import JudgeParams
from ragtune.judge.items import JudgeItem, select_questions
from ragtune.judge.prompts import (
    ARMS,
    JUDGE_METRICS,
    ORDERS,
    Reference,
    answer_chars,
    answer_schema,
    build_reference,
    judge_schema,
    parse_answer,
    parse_judgement,
    render_context,
)
from ragtune.judge.run import judge_items
from ragtune.judge.text_metrics import normalise_tokens, rowwise_cosine, token_f1
from ragtune.llm.prompts import load_prompt
from ragtune.params import parse_section

M = len(JUDGE_METRICS)


def scores(*values: int) -> dict:
    """A judge reply section: one value for all six metrics, or six values."""
    vals = values * M if len(values) == 1 else values
    return dict(zip(JUDGE_METRICS, vals))


# --- reply validation -----------------------------------------------------------------------------


def test_parse_judgement_accepts_the_schema_and_names_what_is_wrong():
    got = parse_judgement({"answer_1": scores(1, 2, 3, 4, 5, 3), "answer_2": scores(4)})
    assert got.shape == (2, M) and got[0].tolist() == [1, 2, 3, 4, 5, 3] and got[1].tolist() == [4] * M
    bad = [
        ({"answer_1": scores(3)}, "answer_2"),
        ({"answer_1": {**scores(3), "overall": 6}, "answer_2": scores(3)}, "answer_1.overall"),
        ({"answer_1": {**scores(3), "overall": 0}, "answer_2": scores(3)}, "answer_1.overall"),
        ({"answer_1": scores(3), "answer_2": {**scores(3), "completeness": "4"}}, "answer_2.completeness"),
        ({"answer_1": scores(3), "answer_2": {**scores(3), "completeness": 3.5}}, "answer_2.completeness"),
        ({"answer_1": scores(3), "answer_2": {**scores(3), "completeness": True}}, "answer_2.completeness"),
        (
            {"answer_1": {k: v for k, v in scores(3).items() if k != "faithfulness"}, "answer_2": scores(3)},
            "answer_1.faithfulness",
        ),
        ({"answer_1": scores(3), "answer_2": scores(3), "note": "x"}, "note"),
        ("not an object", "reply"),
    ]
    for obj, where in bad:
        with pytest.raises(ValueError, match=where.replace(".", r"\.")):
            parse_judgement(obj)


def test_parse_answer_rejects_blank_overlong_and_wrong_types():
    assert parse_answer({"answer": " Yes. ", "context_sufficient": True}).answer == "Yes."
    for obj in (
        {"answer": "   ", "context_sufficient": True},
        {"answer": "x", "context_sufficient": "yes"},
        {"answer": "x"},
        {"answer": 3, "context_sufficient": False},
    ):
        with pytest.raises(ValueError):
            parse_answer(obj)
    with pytest.raises(ValueError, match="more than the 10 allowed"):
        parse_answer({"answer": "x" * 11, "context_sufficient": True}, max_chars=10)


def test_schemas_match_their_validators():
    js = judge_schema()
    assert js["required"] == ["answer_1", "answer_2"]
    assert js["properties"]["answer_1"]["required"] == list(JUDGE_METRICS)
    assert all(
        p == {"type": "integer", "minimum": 1, "maximum": 5}
        for p in js["properties"]["answer_2"]["properties"].values()
    )
    a = answer_schema(answer_chars(100))
    assert a["properties"]["answer"]["maxLength"] == 270 and a["additionalProperties"] is False


def test_prompts_are_versioned_files_with_system_and_user_parts(tmp_path):
    answer = load_prompt("answer_v1")
    user = answer.render(context="[1] A\ntext {with braces}", question="Q?")
    assert "Question: Q?" in user and "{with braces}" in user and "context_sufficient" in answer.system
    judge = load_prompt("judge_v1")
    assert all(m in judge.system for m in JUDGE_METRICS) and "{answer_1}" in judge.user
    (tmp_path / "mine.txt").write_text("=== system ===\nS\n=== user ===\nU {question}\n", encoding="utf-8")
    mine = load_prompt("mine", tmp_path)
    assert (mine.system, mine.render(question="q")) == ("S", "U q") and len(mine.sha256) == 64
    (tmp_path / "bad.txt").write_text("no sections\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match="=== system ==="):
        load_prompt("bad", tmp_path)
    with pytest.raises(RagtuneError, match="prompt file not found"):
        load_prompt("missing", tmp_path)


# --- schema retries with a scripted backend ----------------------------------------------------------


class Scripted:
    """A stand-in for the cached LLM runner: replies from a script keyed by the call's item, one per
    attempt; records every call it was sent."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.sent = []

    def __call__(self, calls):
        self.sent.extend(calls)
        return [self.script[c.item].pop(0) for c in calls]


def _call(item="q1/cosine_first"):
    from ragtune.judge.calls import LlmCall

    return LlmCall("judge", item, "sys", "user text", "submit_scores", judge_schema(), 100, 0.0, "h")


def test_a_malformed_reply_is_retried_with_the_error_then_counted_as_a_failure():
    good = LlmReply(True, {"answer_1": scores(4), "answer_2": scores(2)})
    broken = LlmReply(True, {"answer_1": scores(4), "answer_2": {**scores(2), "overall": 9}})
    runner = Scripted(
        {
            "ok": [good],
            "fixed": [broken, good],
            "hopeless": [broken, broken, broken],
            "refused": [LlmReply(False, reason="refusal", detail="declined")],
        }
    )
    out = complete_with_retries(
        [_call("ok"), _call("fixed"), _call("hopeless"), _call("refused")], parse_judgement, runner, retries=2
    )
    assert [o.ok for o in out] == [True, True, False, False]
    assert [o.attempts for o in out] == [1, 2, 3, 1]  # a refusal is not asked again
    assert out[1].value[1].tolist() == [2] * M
    assert out[2].reason == "invalid_output" and "answer_2.overall" in out[2].detail
    assert out[3].reason == "refusal"
    retries = [c for c in runner.sent if c.item == "hopeless"]
    assert retries[0].user == "user text" and "answer_2.overall" in retries[1].user
    assert retries[1].user.startswith("user text\n\nYour previous reply was rejected")


class _RecordingBackend:
    """Answers every structured request with one valid answer and records what it was sent."""

    name, model, cacheable, uses_prompt, deterministic = "rec", "rec-1", True, True, True

    def __init__(self, takes_repeat_penalty: bool):
        self.takes_repeat_penalty = takes_repeat_penalty
        self.sent = []

    def identity(self):
        return {"backend": self.name, "model": self.model}

    def generate(self, requests, on_result, stop, state=None):
        from ragtune.llm.base import GenResult

        for req in requests:
            self.sent.append(req)
            on_result(GenResult(key=req.key, ok=True, output={"answer": "a", "context_sufficient": True}))

    def close(self):
        pass


def test_the_answer_repeat_penalty_reaches_a_local_model_and_its_key_and_no_api_backend(tmp_path):
    from ragtune.cache import ContentCache
    from ragtune.judge.calls import LlmCall, llm_cache_key, make_complete
    from ragtune.judge.run import answer_calls
    from ragtune.llm.runner import RunStats

    prompt = load_prompt("answer_v1")
    penalised = answer_calls(_items(2), prompt, JudgeParams())
    plain = answer_calls(_items(2), prompt, JudgeParams(answer_repeat_penalty=1.0))
    assert {c.repeat_penalty for c in penalised} == {1.1} and {c.repeat_penalty for c in plain} == {1.0}
    local, api = _RecordingBackend(True), _RecordingBackend(False)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        make_complete(local, cache, RunStats())(penalised)
        make_complete(api, cache, RunStats())(penalised)
        make_complete(api, cache, RunStats())(plain)
    assert [r.repeat_penalty for r in local.sent] == [1.1] * 3  # q0's arms share a context: one request
    # Same identity: the penalty alone sets the local model's keys apart. The API is sent none, and its keys
    # are those of unpenalised calls, so the second batch is served from the cache.
    assert [r.repeat_penalty for r in api.sent] == [None] * 3
    assert {r.key for r in local.sent}.isdisjoint(r.key for r in api.sent)
    # A penalty of 1 leaves the key as it was before the setting existed (the digest is what commit cefa017
    # computed for this call): answers already paid for stay cached.
    call = LlmCall("answer", "q1/cosine", "sys", "user", "submit_answer", answer_schema(420), 150, 0.0, "h")
    identity = {"backend": "anthropic", "model": "claude-haiku-4-5", "seed": 42, "max_tokens": 256, "temperature": 0.7}
    assert llm_cache_key(identity, call) == "ecf505ca0095f327838a1cdeeccb0559da33c83eb5b2ec81b2f33fac3e28be11"
    # A retried answer keeps its penalty.
    cut = LlmReply(False, reason="max_tokens", detail="hit max_tokens")
    runner = Scripted({penalised[0].item: [cut, LlmReply(True, {"answer": "a", "context_sufficient": True})]})
    out = complete_with_retries(penalised[:1], parse_answer, runner, retries=1)
    assert out[0].ok and [c.repeat_penalty for c in runner.sent] == [1.1, 1.1]


def test_a_max_tokens_stop_is_retried_and_zero_retries_means_one_attempt():
    cut = LlmReply(False, reason="max_tokens", detail="hit max_tokens")
    out = complete_with_retries([_call("a")], parse_judgement, Scripted({"a": [cut, cut]}), retries=1)
    assert out[0].reason == "max_tokens" and out[0].attempts == 2
    out = complete_with_retries([_call("a")], parse_judgement, Scripted({"a": [cut]}), retries=0)
    assert out[0].attempts == 1 and not out[0].ok


# --- swapped-order aggregation by hand --------------------------------------------------------------


def _position_scores(per_question):
    """[(order cosine_first: (pos1, pos2), order adapter_first: (pos1, pos2)), ...] of overall-style
    scalars -> (n, 2, 2, M) with the same value on every metric."""
    arr = np.array(per_question, dtype=np.float64)  # (n, orders, positions)
    return np.repeat(arr[..., None], M, axis=-1)


def test_swapped_orders_average_per_arm_and_agreement_by_hand():
    pos = _position_scores(
        [
            [(2, 4), (4, 2)],  # adapter better in both orders: 4 vs 2, agree
            [(5, 3), (5, 3)],  # first position always wins: cosine 5/3 -> 4, adapter 3/5 -> 4; orders disagree
            [(3, 3), (3, 3)],  # tie both orders: agree
            [(1, 2), (np.nan, np.nan)],  # second order failed: not judged
        ]
    )
    arm = to_arm_scores(pos)
    # order 1 shows adapter first: its position-1 score belongs to the adapter
    assert arm[1, 1, ARMS.index("adapter"), 0] == 5 and arm[1, 1, ARMS.index("cosine"), 0] == 3
    mean = mean_over_orders(arm)
    assert mean[0, :, 0].tolist() == [2.0, 4.0]
    assert mean[1, :, 0].tolist() == [4.0, 4.0]
    assert np.isnan(mean[3]).all()
    agree = order_agreement(arm)
    assert agree["questions"] == 3
    assert agree["overall_winner_rate"] == pytest.approx(2 / 3) and agree["rate"]["faithfulness"] == pytest.approx(
        2 / 3
    )
    # |cosine 5 - 3| and |adapter 3 - 5| on question 2, zero elsewhere: mean over 3 questions x 2 arms
    assert agree["mean_abs_score_shift"]["overall"] == pytest.approx(4 / 6)
    pref = position_preference(pos)
    # 7 valid judgements: first wins (5,3)x2, (4,2)x1 -> 3; second wins (2,4), (1,2) -> 2; ties 2
    assert pref["judgements"] == 7
    assert (pref["first_preferred"], pref["second_preferred"], pref["tie"]) == pytest.approx((3 / 7, 2 / 7, 2 / 7))


def test_identical_answers_expose_pure_position_bias_and_stay_out_of_agreement():
    pos = _position_scores([[(4, 4), (4, 4)], [(5, 3), (5, 3)], [(2, 3), (3, 2)]])
    identical = np.array([True, True, False])
    out = identical_pair_consistency(pos, identical)
    assert out["pairs"] == 2 and out["judged"] == 2 and out["overall_equal"] == 0.5
    # the same request in both orders agrees with itself: such pairs must not count as agreement
    assert order_agreement(to_arm_scores(pos))["overall_winner_rate"] == pytest.approx(2 / 3)
    assert order_agreement(to_arm_scores(pos), include=~identical) == {
        "questions": 1,
        "rate": {m: 1.0 for m in JUDGE_METRICS},
        "overall_winner_rate": 1.0,
        "mean_abs_score_shift": {m: 0.0 for m in JUDGE_METRICS},
    }
    assert position_preference(pos, include=~identical)["judgements"] == 2


def test_without_swap_agreement_is_not_claimed():
    pos = _position_scores([[(2, 4)]])
    assert order_agreement(to_arm_scores(pos, ORDERS[:1]))["questions"] == 0


# --- LLM-free scores, references, selection ---------------------------------------------------------


def test_token_f1_by_hand():
    assert normalise_tokens("The Controller's duty, (a) an item!") == ["controller", "s", "duty", "item"]
    assert token_f1("the data controller shall notify", "controller shall notify within 72 hours") == pytest.approx(
        2 * (3 / 4) * (3 / 6) / (3 / 4 + 3 / 6)
    )
    assert token_f1("x b b", "b b c") == pytest.approx(2 / 3)  # multiset overlap: b twice
    assert token_f1("a b b", "b b c") == pytest.approx(0.8)  # "a" is an article, dropped
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("apple", "pear") == 0.0


def test_rowwise_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[1.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    assert rowwise_cosine(a, b) == pytest.approx([np.sqrt(0.5), -1.0, 0.0])


def test_reference_is_the_expert_answer_else_the_relevant_chunks_cut_to_length():
    ref = build_reference("The answer.", ["T"], ["chunk"], 50)
    assert (ref.text, ref.kind, ref.truncated) == ("The answer.", "expert answer", False)
    ref = build_reference(None, ["Art. 1", None], ["first text", "second text"], 500)
    assert ref.kind == "relevant passages" and ref.text == "[1] Art. 1\nfirst text\n\n[2]\nsecond text"
    long = build_reference("  ", ["A"], ["word " * 200], 120)
    assert long.kind == "relevant passages" and long.truncated and len(long.text) <= 122
    assert render_context(["T"], ["abc def ghi"], 7) == "[1] T\nabc def …"


def test_question_selection_is_seeded_sorted_and_reported():
    a = select_questions(78, 12, seed=42)
    assert len(a) == 12 and np.all(np.diff(a) > 0) and a.tolist() == select_questions(78, 12, 42).tolist()
    assert a.tolist() != select_questions(78, 12, seed=7).tolist()
    assert select_questions(5, 12, 42).tolist() == [0, 1, 2, 3, 4]
    assert select_questions(5, None, 42).tolist() == [0, 1, 2, 3, 4]


def test_params_validation_names_the_key():
    with pytest.raises(ParamsError, match=r"judge\.top_k"):
        parse_section({"top_k": 0}, "judge", JudgeParams)
    with pytest.raises(ParamsError, match=r"judge\.swap: unknown key"):
        parse_section({"swap": False}, "judge", JudgeParams)
    with pytest.raises(ParamsError, match=r"judge\.answer_prompt"):
        parse_section({"answer_prompt": "../x"}, "judge", JudgeParams)
    assert parse_section({"max_questions": None}, "judge", JudgeParams).max_questions is None


# --- a whole judgement with a scripted judge ---------------------------------------------------------


def _items(n=4):
    return [
        JudgeItem(
            question_id=f"q{i}",
            question=f"Who notifies breach {i}?",
            reference=Reference(f"The controller notifies breach {i} within 72 hours.", "expert answer"),
            chunk_ids={"cosine": [f"c{i}"], "adapter": [f"c{i}" if i == 0 else f"d{i}"]},
            context={"cosine": f"[1] ctx {i}", "adapter": f"[1] ctx {i}" if i == 0 else f"[1] other {i}"},
        )
        for i in range(n)
    ]


class ScriptedLlm:
    """Answers: cosine says 'unknown', adapter repeats the reference (q0: both the same). Judge: scores
    taken from the answers' text, so the result is known: the adapter wins except on q0 (tie); q3's
    adapter_first judgement is malformed every time."""

    def __init__(self):
        self.calls = []

    def __call__(self, calls):
        self.calls.extend(calls)
        out = []
        for c in calls:
            qid, what = c.item.split("/")
            if c.kind == "answer":
                good = what == "adapter" and qid != "q0"
                text = (
                    f"The controller notifies breach {qid[1:]} within 72 hours." if good else "Context is insufficient."
                )
                out.append(LlmReply(True, {"answer": text, "context_sufficient": good}))
                continue
            if qid == "q3" and what == "adapter_first":
                out.append(LlmReply(True, {"answer_1": scores(4)}))
                continue
            a1, a2 = c.user.split("Answer 1:\n")[1].split("\n\nAnswer 2:\n")
            value = [5 if "72 hours" in a else 2 for a in (a1, a2)]
            out.append(LlmReply(True, {"answer_1": scores(value[0]), "answer_2": scores(value[1])}))
        return out


def test_judge_items_end_to_end_with_a_scripted_llm():
    llm = ScriptedLlm()
    params = JudgeParams(bootstrap_resamples=200, schema_retries=1)
    embed = lambda texts: np.array([[len(t) % 7 + 1.0, 1.0] for t in texts])  # noqa: E731 - any fixed map
    result = judge_items(_items(), params, llm, embed, load_prompt("answer_v1"), load_prompt("judge_v1"))
    m = result.metrics
    assert sum(c.kind == "answer" for c in llm.calls) == 8
    # 4 questions x 2 orders, plus one retry of q3's malformed order
    assert sum(c.kind == "judge" for c in llm.calls) == 9
    assert m["setup"]["judged"] == 3 and m["failures"]["total"] == 1
    assert m["failures"]["by_reason"] == {"judge:invalid_output": 1}
    assert m["failures"]["items"][0]["item"] == "q3/adapter_first" and m["failures"]["items"][0]["attempts"] == 2
    assert m["arms"]["cosine"]["overall"] == 2.0 and m["arms"]["adapter"]["overall"] == pytest.approx(
        4.0
    )  # q0 2, q1 5, q2 5
    overall = m["adapter_vs_cosine"]["overall"]
    assert (overall["wins"], overall["ties"], overall["losses"]) == (2, 1, 0) and overall["questions"] == 3
    assert overall["sign_test_p"] == 0.5
    assert m["order_agreement"]["overall_winner_rate"] == 1.0
    assert m["identical_answers"] == {"pairs": 1, "judged": 1, "overall_equal": 1.0, "all_equal": 1.0}
    assert m["setup"]["identical_answers"] == 1 and m["setup"]["same_context"] == 1
    # LLM-free scores cover all 4 questions; adapter answers equal the reference from q1 on
    f1 = m["adapter_vs_cosine"]["token_f1"]
    assert f1["questions"] == 4 and (f1["wins"], f1["ties"]) == (3, 1)
    assert m["arms"]["adapter"]["context_insufficient_rate"] == 0.25
    rows = {(r["question_id"], r["arm"]): r for r in result.scores}
    assert rows[("q1", "adapter")]["overall"] == 5.0 and rows[("q1", "adapter")]["overall_shown_first"] == 5.0
    assert rows[("q3", "adapter")]["judged"] is False and rows[("q3", "adapter")]["overall"] is None
    assert rows[("q3", "cosine")]["overall_shown_first"] == 2.0  # the order that did succeed is kept
    assert rows[("q3", "adapter")]["token_f1"] == 1.0
    answers = {(r["question_id"], r["arm"]): r for r in result.answers}
    assert (
        answers[("q2", "adapter")]["chunk_ids"] == ["d2"] and answers[("q2", "cosine")]["context_sufficient"] is False
    )
    json.dumps(m)  # the metrics are plain JSON


def test_when_every_call_fails_the_failures_are_counted_and_outputs_still_written(tmp_path):
    from ragtune.judge.outputs import flat_judge_metrics, write_judge_outputs

    def refuse(calls):
        return [LlmReply(False, reason="refusal", detail="declined") for _ in calls]

    result = judge_items(
        _items(3), JudgeParams(bootstrap_resamples=100), refuse, None, load_prompt("answer_v1"), load_prompt("judge_v1")
    )
    m = result.metrics
    assert m["setup"]["judged"] == 0 and m["failures"]["by_reason"] == {"answer:refusal": 6, "judge:no_answer": 3}
    assert m["arms"]["adapter"]["overall"] is None and m["adapter_vs_cosine"]["overall"]["questions"] == 0
    assert m["order_agreement"]["questions"] == 0 and m["order_agreement"]["overall_winner_rate"] is None
    m["usage"] = {"calls": 6}
    assert flat_judge_metrics(m)["judge.failures"] == 9.0
    for path in write_judge_outputs(result, tmp_path):
        assert path.stat().st_size > 0
