"""`ragtune label` without a browser: pooling, the store (contract, durability, edits, resumption, leakage
refusal), the recommendation preview, start-up errors, and the session on a real tiny pipeline (the packaged
all-MiniLM-L6-v2 and the pipeline's own arms)."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from label_support import TEST_QUESTIONS, build_pipeline, copy_pipeline

from ragtune.cli import main
from ragtune.errors import DataError, RagtuneError
from ragtune.evaluation.metrics import EvalParams
from ragtune.evaluation.recommend import with_labels
from ragtune.label.command import LabelOptions, load_app, params_advice
from ragtune.label.pooling import pool
from ragtune.label.preview import TrainedOn, preview
from ragtune.label.server import bind
from ragtune.label.storage import (
    Judgement,
    LabelStore,
    LeakageGuard,
    LeakageRefused,
    label_id,
    load_questions_file,
    question_key,
)
from ragtune.params import FetchParams
from ragtune.records import TestQuestion, load_train_questions

CORPUS_IDS = [f"c{i}" for i in range(10)]
TESTS = [TestQuestion(id="t-1", question="What must a controller report?", relevant_ids=["c1"])]


def store(tmp_path: Path, name: str = "labels/train_questions.jsonl") -> LabelStore:
    return LabelStore(tmp_path / name, CORPUS_IDS, LeakageGuard([(tmp_path / "test.jsonl", TESTS)]))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- pooling ----------------------------------------------------------------------------------------


def test_the_pool_is_every_arms_top_k_once_in_an_order_no_arm_sets():
    rankings = {
        "cosine": np.array([3, 1, 7, 9]),
        "bm25": np.array([1, 5, -1, -1]),  # BM25 found two chunks only
        "hybrid": np.array([5, 3, 2, 0]),
    }
    rows = pool(rankings, 2, "Who notifies a breach?")
    assert sorted(rows) == [1, 3, 5]  # each arm's top 2, deduplicated, no empty slot
    assert pool(dict(reversed(rankings.items())), 2, "Who notifies a breach?") == rows  # arms' order: no effect
    assert pool(rankings, 2, "who  notifies a BREACH") == rows  # the same question: the same order on reload
    # The order is a draw per question, not any arm's ranking: over many questions each pooled row leads
    # about equally often, whichever arm ranked it first.
    firsts = [pool(rankings, 2, f"question {i}")[0] for i in range(600)]
    shares = np.bincount(firsts, minlength=6)[[1, 3, 5]] / len(firsts)
    assert np.all(np.abs(shares - 1 / 3) < 0.08), shares


# --- the store --------------------------------------------------------------------------------------


def test_judgements_are_saved_in_the_contract_edited_in_place_and_resumed(tmp_path):
    s = store(tmp_path)
    first = s.save("How fast is a breach notified?", ["c2", "c3", "c2"])
    s.save("Which body approves risk measures?", ["c4"])
    s.save("Is there a rule on lunch breaks?", [])
    assert first.id == label_id("how fast is a BREACH notified") and first.relevant_ids == ("c2", "c3")
    rows = lines(s.path)
    assert rows[0] == {
        "id": first.id,
        "question": "How fast is a breach notified?",
        "relevant_ids": ["c2", "c3"],
        "answer": None,
        "origin": "human",
    }
    assert [r.question for r in load_train_questions(s.path, TESTS, CORPUS_IDS)] == [
        "How fast is a breach notified?",
        "Which body approves risk measures?",
    ]
    assert lines(s.none_path) == [
        {
            "id": label_id("Is there a rule on lunch breaks?"),
            "question": "Is there a rule on lunch breaks?",
            "judgement": "none",
        }
    ]
    # The same question typed again is an edit: same id, same line, new marks.
    edited = s.save("how fast is a breach notified", ["c5"])
    assert edited.id == first.id and lines(s.path)[0]["relevant_ids"] == ["c5"] and len(lines(s.path)) == 2
    # labelled -> none -> labelled: the question moves between the files, never in both.
    s.save("Which body approves risk measures?", [])
    assert len(lines(s.path)) == 1 and len(lines(s.none_path)) == 2
    s.save("Is there a rule on lunch breaks?", ["c9"])
    assert [r["question"] for r in lines(s.none_path)] == ["Which body approves risk measures?"]
    s.close()
    # A new session reads what the last one left: every judgement, in file order.
    again = store(tmp_path)
    assert [(j.question, j.relevant_ids) for j in again.judgements()] == [
        ("How fast is a breach notified?", ("c5",)),
        ("Is there a rule on lunch breaks?", ("c9",)),
        ("Which body approves risk measures?", ()),
    ]
    assert again.counts == {"labelled": 2, "none": 1}


def test_an_edit_keeps_the_rows_own_keys_and_a_question_in_both_files_counts_as_labelled(tmp_path):
    out = tmp_path / "train_questions.jsonl"
    row = {
        "id": "log-7",
        "question": "Who reports incidents?",
        "relevant_ids": ["c1"],
        "answer": "The CSIRT",
        "team": "ops",
    }
    out.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (tmp_path / "train_questions.none.jsonl").write_text(
        json.dumps({"id": "log-7", "question": "who reports incidents", "judgement": "none"}) + "\n", encoding="utf-8"
    )
    s = store(tmp_path, "train_questions.jsonl")
    assert s.get("Who reports incidents?") == Judgement("log-7", "Who reports incidents?", ("c1",))
    s.save("Who reports incidents?", ["c1", "c6"])
    assert lines(out) == [{**row, "relevant_ids": ["c1", "c6"]}]


def test_a_test_question_is_refused_and_nothing_is_written(tmp_path):
    s = store(tmp_path)
    s.save("A question to train on?", ["c1"])
    before = s.path.read_bytes()
    refused = r"test question 't-1' of .*test\.jsonl \(after case, accents, punctuation"
    with pytest.raises(LeakageRefused, match=refused):
        s.save("what must a CONTROLLER report", ["c1"])
    with pytest.raises(LeakageRefused, match="id 't-1' is a test question"):
        s.save("Another wording entirely?", ["c2"], question_id="t-1")  # a queued question with a test id
    with pytest.raises(LeakageRefused):
        s.save("What must a controller report?", [])  # "none" is refused too: it is still that test question
    assert s.path.read_bytes() == before and not s.none_path.exists()
    # A labels file that already holds a test question is refused when the session starts, naming the line.
    s.path.write_text(
        before.decode()
        + json.dumps({"id": "x", "question": "What must a controller report", "relevant_ids": ["c1"]})
        + "\n"
    )
    s.close()
    with pytest.raises(DataError, match=r"train_questions\.jsonl:2: 'x' has the same text as test question 't-1'"):
        store(tmp_path)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"id": "a", "question": "q1", "relevant_ids": ["c1"]}\n{"id": "b", "question": ', r":2: not valid JSON"),
        (
            '{"id": "a", "question": "q1", "relevant_ids": ["nope"]}\n',
            r":1: relevant id\(s\) \['nope'\] not in the corpus",
        ),
        (
            '{"id": "a", "question": "Q1?", "relevant_ids": ["c1"]}\n'
            '{"id": "b", "question": "q1", "relevant_ids": ["c2"]}\n',
            r":2: 'b' is the same question as 'a' on line 1",
        ),
    ],
)
def test_an_unreadable_labels_file_names_the_file_and_line(tmp_path, content, error):
    out = tmp_path / "labels/train_questions.jsonl"
    out.parent.mkdir()
    out.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"train_questions\.jsonl" + error):
        store(tmp_path)


def test_one_session_per_folder_hand_edits_are_not_overwritten_and_killed_writes_are_cleaned_up(tmp_path):
    s = store(tmp_path)
    with pytest.raises(RagtuneError, match="another ragtune label is writing labels in"):
        store(tmp_path)
    s.save("First question?", ["c1"])
    with s.path.open("a", encoding="utf-8") as fh:  # the user edits the file while the session runs
        fh.write(json.dumps({"id": "mine", "question": "Typed by hand?", "relevant_ids": ["c2"]}) + "\n")
    with pytest.raises(RagtuneError, match="changed on disk since ragtune label read it"):
        s.save("Second question?", ["c3"])
    assert len(lines(s.path)) == 2  # the hand-written row is still there
    s.close()
    # A session killed in the middle of a write leaves its temporary file (ragtune.io.atomic_path's name).
    stale = s.path.parent / f".{s.path.name}.abc123.tmp"
    stale.write_text('{"id": "half', encoding="utf-8")
    s = store(tmp_path)
    assert not stale.exists() and s.counts == {"labelled": 2, "none": 0}
    s.close()


def test_a_move_between_the_files_cut_short_half_way_never_leaves_a_wrong_judgement(tmp_path, monkeypatch):
    s = store(tmp_path)
    s.save("Labelled, then none?", ["c1"])
    s.save("None, then labelled?", [])
    real_replace = os.replace

    def die_on_the_sidecar(src, dst):  # the process dies after the labels file is replaced
        if str(dst).endswith(".none.jsonl"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_the_sidecar)
    for question, relevant in [("Labelled, then none?", []), ("None, then labelled?", ["c2"])]:
        with pytest.raises(KeyboardInterrupt):
            s.save(question, relevant)
    monkeypatch.setattr(os, "replace", real_replace)
    s.close()
    again = store(tmp_path)
    assert again.get("Labelled, then none?") is None  # in neither file: asked again
    assert again.get("None, then labelled?").relevant_ids == ("c2",)  # in both: the labels file wins
    assert not list(tmp_path.glob("labels/.*.tmp"))


def test_questions_to_step_through(tmp_path):
    (tmp_path / "q.txt").write_text("First?\n\n  Second?  \n", encoding="utf-8")
    assert load_questions_file(tmp_path / "q.txt") == [(None, "First?"), (None, "Second?")]
    (tmp_path / "q.jsonl").write_text('{"question": "A?", "id": "log-1"}\n{"question": "B?"}\n', encoding="utf-8")
    assert load_questions_file(tmp_path / "q.jsonl") == [("log-1", "A?"), (None, "B?")]
    (tmp_path / "bad.jsonl").write_text('{"question": "A?"}\n{"text": "B?"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'question'"):
        load_questions_file(tmp_path / "bad.jsonl")
    with pytest.raises(RagtuneError, match=r"missing\.txt: file not found \(--questions\)"):
        load_questions_file(tmp_path / "missing.txt")


# --- the recommendation preview ---------------------------------------------------------------------


def test_the_preview_scores_each_arm_by_reciprocal_rank_and_leaves_out_what_the_adapter_trained_on():
    params = EvalParams(mrr_k=3)
    judgements = [Judgement(f"q{i}", f"question {i}", (f"c{i}",)) for i in range(8)]
    judgements += [Judgement("old", "trained question", ("c0",)), Judgement("n", "no answer here", ())]
    row_of = {f"c{i}": i for i in range(10)}
    rankings = {}
    for i in range(8):  # bm25 ranks the relevant chunk first; cosine third, or past the cut-off for half
        rest = [r for r in range(10) if r != i]
        rankings[question_key(f"question {i}")] = {
            "bm25": np.array([i, *rest[:4]]),
            "cosine": np.array([*rest[:2], i, *rest[2:4]]) if i % 2 else np.array([*rest[:4], i]),
        }
    rankings[question_key("trained question")] = {"bm25": np.arange(5), "cosine": np.arange(5)}
    trained = TrainedOn([TestQuestion(id="old", question="Trained question?", relevant_ids=["c0"])], Path("f.jsonl"))
    out = preview(judgements, rankings, ["cosine", "bm25"], row_of, trained, params)
    assert (out["labelled"], out["scored"], out["left_out"]) == (9, 8, 1)
    # the rule eval applies: the labels' best against the arm the no-label policy would deploy
    arm, statement, details = with_labels(
        {"cosine": np.array([0, 1 / 3] * 4), "bm25": np.ones(8)},
        "mrr@3",
        params,
        params.recommend.without_labels,
        params.recommend.margin,
    )
    assert out["arm"] == arm == "bm25" and out["scores"] == {
        "cosine": pytest.approx(1 / 6, abs=1e-4),
        "bm25": 1.0,
    }
    assert out["statement"].startswith(statement) and details["labelled"]["prior"] == "cosine"
    assert "1 labelled question(s) left out: the current adapter trained on them (f.jsonl" in out["statement"]
    empty = preview([], {}, ["cosine", "bm25"], row_of, trained, params)
    assert empty["scored"] == 0 and "No labelled questions yet" in empty["statement"]


# --- start-up ---------------------------------------------------------------------------------------


def test_startup_errors_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("fetch: {source: jsonl}\n", encoding="utf-8")
    assert main(["label", "--port", "0"]) == 2
    assert "fetch.jsonl.train_questions is not set in params.yaml: pass --out PATH" in capsys.readouterr().err
    for path, stage in [
        ("data/fetch/corpus.jsonl", "fetch"),
        ("data/embed/corpus.npz", "embed"),
        ("models/adapter", "train"),
        ("data/synthesize/test.jsonl", "synthesize"),
    ]:
        assert main(["label", "--port", "0", "--out", "corpus/labels.jsonl"]) == 2
        err = capsys.readouterr().err
        assert f"error: {path} not found: the {stage} stage has not run yet" in err and f"dvc repro {stage}" in err
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).mkdir() if stage == "train" else (tmp_path / path).touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The port is bound before anything loads: a port in use fails at once.
        assert main(["label", "--port", str(port), "--out", "corpus/labels.jsonl"]) == 2
        assert f"error: port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
        with pytest.raises(RagtuneError, match=r"pass --port N \(--port 0 picks a free one\)"):
            bind(port)


def test_the_advice_says_what_makes_dvc_repro_train_on_the_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("corpus/train_questions.jsonl")
    eu = params_advice(FetchParams(), out, Path("params.yaml"))
    assert "fetch.source is eu-law in params.yaml: fetch reads labels only from a jsonl source" in eu[0]
    unset = params_advice(FetchParams(source="jsonl"), out, Path("params.yaml"))
    assert "dvc exp run -S fetch.jsonl.train_questions=corpus/train_questions.jsonl" in unset[0]
    fetch = FetchParams(source="jsonl", jsonl={"train_questions": "corpus/train_questions.jsonl"})
    assert params_advice(fetch, out, Path("params.yaml"))[0].startswith("params.yaml reads these labels")
    outside = params_advice(fetch, Path("labels.jsonl"), Path("params.yaml"))
    assert any("labels.jsonl is outside corpus/: DVC will not see new labels" in line for line in outside)


# --- a session on a real pipeline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("label-pipeline"))


@pytest.mark.slow
def test_a_session_ranks_with_the_pipelines_arms_saves_and_previews(built, tmp_path, monkeypatch):
    root = copy_pipeline(built, tmp_path / "p")
    monkeypatch.chdir(root)
    (root / "questions.txt").write_text(
        "Who must notify a personal data breach?\nWhen is a national cybersecurity strategy adopted\n"
    )
    app, printed = load_app(LabelOptions(k=2, port=0, questions=Path("questions.txt")))
    try:
        assert printed[0].startswith("ragtune label: 12 chunks; arms cosine, adapter, bm25, hybrid_cosine, hybrid")
        assert any("params.yaml reads these labels" in line for line in printed)
        state = app.state()
        assert (
            state["queue"]["question"] == "Who must notify a personal data breach?" and state["queue"]["position"] == 1
        )
        shown = app.candidates(state["queue"]["question"])
        ids = [c["id"] for c in shown["candidates"]]
        # The pool is exactly the union of every arm's top 2, each chunk once, with title and text.
        ranked = app.search.rank([shown["question"]])[0]
        corpus_ids = app.search.corpus.ids
        assert sorted(ids) == sorted({corpus_ids[r] for rows in ranked.values() for r in rows[:2] if r >= 0})
        assert "gdpr-1" in ids and shown["refused"] is None
        assert shown["candidates"][ids.index("gdpr-1")]["text"].startswith("Controllers shall notify")
        assert app.find("statutory AUDITORS")["chunks"][0]["id"] == "csrd-11"
        state = app.judge(shown["question"], ["gdpr-1", "csrd-11"])
        assert state["counts"] == {"labelled": 1, "none": 0}
        assert state["recommendation"]["scored"] == 1 and state["recommendation"]["left_out"] == 0
        # The queue moves on to the next question: a test question (other punctuation), refused at once.
        nxt = app.candidates(state["queue"]["question"])
        assert "is test question 't-2' of data/synthesize/test.jsonl" in nxt["refused"]
        with pytest.raises(LeakageRefused):
            app.judge(nxt["question"], ["nis2-7"])
        # A question the shipped adapter trained on (data/fetch/train_questions.jsonl) is saved, not previewed.
        state = app.judge("How long do manufacturers handle vulnerabilities", ["cra-8"])
        rec = state["recommendation"]
        assert (rec["labelled"], rec["scored"], rec["left_out"]) == (
            2,
            1,
            1,
        ) and "1 labelled question(s) left out" in rec["statement"]
        assert set(rec["scores"]) == {"cosine", "adapter", "bm25", "hybrid_cosine", "hybrid"}
        saved = load_train_questions(Path("corpus/train_questions.jsonl"), [TestQuestion(**q) for q in TEST_QUESTIONS])
        assert [q.relevant_ids for q in saved] == [["gdpr-1", "csrd-11"], ["cra-8"]]
    finally:
        app.store.close()
