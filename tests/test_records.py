"""The JSONL contracts: every bad row stops the reader with file:line and what to fix."""

import json

import pytest

from ragtune.errors import DataError
from ragtune.records import (
    Chunk,
    SyntheticQuestion,
    TestQuestion,
    load_corpus,
    load_test,
    mark_test_chunks,
    read_jsonl,
    write_jsonl,
)


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"id": "a", "text": "Alpha text.", "title": None, "source": "s"}


def test_corpus_roundtrip_keeps_every_field(tmp_path):
    chunks = [Chunk(id="a", text="Alpha", title="T", source="s", split="test"), Chunk(id="b", text="Ünïcode")]
    write_jsonl(tmp_path / "c.jsonl", chunks)
    assert load_corpus(tmp_path / "c.jsonl") == chunks


@pytest.mark.parametrize(
    "row, expected",
    [
        ('{"id": "b", "text": ', "c.jsonl:2: not valid JSON"),
        ("[1, 2]", "c.jsonl:2: expected a JSON object"),
        ({"id": "b", "text": "   "}, "c.jsonl:2: field 'text': text is empty"),
        ({"id": 7, "text": "x"}, "c.jsonl:2: field 'id': Input should be a valid string"),
        ({"text": "x"}, "c.jsonl:2: field 'id': Field required"),
        ({"id": "b", "text": "x", "split": "dev"}, "c.jsonl:2: field 'split'"),
        ({"id": "a", "text": "x"}, "c.jsonl:2: duplicate id 'a' (first on line 1)"),
    ],
)
def test_corpus_bad_rows_name_file_and_line(tmp_path, row, expected):
    path = write_lines(tmp_path / "c.jsonl", [GOOD, row])
    with pytest.raises(DataError) as err:
        load_corpus(path)
    assert expected in str(err.value)


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"id": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:3:"):
        load_corpus(path)


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(DataError, match="corpus is empty"):
        load_corpus(write_lines(tmp_path / "c.jsonl", []))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        load_corpus(tmp_path / "nope.jsonl")


def test_test_questions_must_point_into_the_corpus(tmp_path):
    path = write_lines(
        tmp_path / "t.jsonl",
        [
            {"id": "q1", "question": "What?", "relevant_ids": ["a"], "answer": None},
            {"id": "q2", "question": "Why?", "relevant_ids": ["a", "zz"]},
        ],
    )
    with pytest.raises(DataError, match=r"t\.jsonl:2: relevant id\(s\) \['zz'\] not in the corpus"):
        load_test(path, corpus_ids=["a"])


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"id": "q", "question": "Q", "relevant_ids": []}, "field 'relevant_ids'"),
        ({"id": "q", "question": "Q", "relevant_ids": "a"}, "field 'relevant_ids'"),
        ({"id": "q", "question": "", "relevant_ids": ["a"]}, "question is empty"),
        ({"id": "q", "question": "Q", "relevant_ids": ["a"], "answer": 3}, "field 'answer'"),
    ],
)
def test_test_question_types(tmp_path, row, expected):
    with pytest.raises(DataError) as err:
        load_test(write_lines(tmp_path / "t.jsonl", [row]))
    assert "t.jsonl:1:" in str(err.value) and expected in str(err.value)


def test_duplicate_test_ids(tmp_path):
    row = {"id": "q", "question": "Q", "relevant_ids": ["a"]}
    with pytest.raises(DataError, match="t.jsonl:2: duplicate id 'q'"):
        load_test(write_lines(tmp_path / "t.jsonl", [row, row]))


def test_mark_test_chunks_marks_exactly_the_relevant_ones():
    chunks = [Chunk(id=i, text=i) for i in "abc"]
    marked = mark_test_chunks(chunks, [TestQuestion(id="q", question="Q", relevant_ids=["b"])])
    assert [c.split for c in marked] == ["train", "test", "train"]


def test_synthetic_question_roundtrip(tmp_path):
    qs = [SyntheticQuestion(id="a#q1", chunk_id="a", question="Q?", backend="ict", model="-", prompt_id="p")]
    write_jsonl(tmp_path / "q.jsonl", qs)
    assert read_jsonl(tmp_path / "q.jsonl", SyntheticQuestion) == qs


def test_outputs_get_normal_file_permissions(tmp_path):
    import os
    import stat

    write_jsonl(tmp_path / "c.jsonl", [Chunk(id="a", text="x")])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "c.jsonl").stat().st_mode) == 0o666 & ~umask
