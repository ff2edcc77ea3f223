"""One rule for "the same question" (ragtune.textnorm), and each leakage guard that uses it: real training
questions against the test set (records), `ragtune label`'s guard, and synthesize's filter against test
questions and duplicates."""

from __future__ import annotations

import json

import pytest
from conftest import CountingBackend, make_chunks

from ragtune.cache import ContentCache
from ragtune.errors import DataError
from ragtune.label.storage import LeakageGuard, LeakageRefused
from ragtune.records import TestQuestion, load_train_questions
from ragtune.synthesis.run import SynthesizeParams, synthesize
from ragtune.textnorm import normalise_text

TEST = TestQuestion(id="t1", question="Quelle est la période de préavis ?", relevant_ids=["c1"], origin="human")


def test_one_rule_ignores_case_accents_punctuation_and_spacing():
    assert normalise_text("Quelle est la  PÉRIODE de préavis ?") == "quelle est la periode de preavis"
    assert normalise_text("What is the  Notice period?") == normalise_text("what is the notice period")
    assert normalise_text("ﬁnal ｄｅａｄｌｉｎｅ") == "final deadline"  # ligature and full-width letters fold
    assert normalise_text("Straße") == normalise_text("STRASSE")
    assert normalise_text("notice period") != normalise_text("notice periods")  # words are kept as they are
    assert normalise_text("art_5 (2)") == "art_5 2"


def test_records_refuse_a_train_question_that_is_a_test_question_up_to_accents(tmp_path):
    path = tmp_path / "train_questions.jsonl"
    row = {"id": "r1", "question": "quelle est la periode de preavis", "relevant_ids": ["c2"]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train_questions.jsonl:1: 'r1' has the same text as test question 't1'"):
        load_train_questions(path, [TEST])


def test_label_guard_refuses_a_test_question_typed_without_accents(tmp_path):
    guard = LeakageGuard([(tmp_path / "test.jsonl", [TEST])])
    with pytest.raises(LeakageRefused, match="is test question 't1'"):
        guard.check("label-x", "QUELLE est la periode de preavis")
    guard.check("label-y", "Quelle est la période d'essai ?")  # another question passes


def test_synthesize_drops_generated_questions_equal_to_a_test_question_or_each_other_up_to_accents(tmp_path):
    chunks = make_chunks(2)
    generated = ["Quelle est la periode de preavis?", "Qui contrôle les règles?", "Qui controle les regles?"]
    backend = CountingBackend(questions=lambda req: generated)
    with ContentCache(tmp_path / "llm.sqlite") as cache:
        out = synthesize(chunks, [TEST], backend, cache, SynthesizeParams())
    # Per chunk: the first is the test question, the third a copy of the second; the second chunk's second
    # question is a copy of the first chunk's.
    assert out.report["dropped"] == {"duplicate": 3, "same_as_test_question": 2}
    assert [q.question for q in out.questions] == ["Qui contrôle les règles?"]
