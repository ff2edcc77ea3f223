"""Fault cases 5 and 6 (issue 30), bad input: each is an error naming the file and line, or the param, and what
to do; none is a traceback, and none passes silently. And every param of every stage is checked before the
first stage works: the check stage of dvc.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from fault_support import Project, corpus_rows

from ragtune.checks import SECTION_MODELS, check_params_file
from ragtune.corpus.fetching import apply_passages, fetch_source
from ragtune.corpus.sources import SourceResult
from ragtune.errors import DataError, ParamsError
from ragtune.params import SECTIONS, FetchParams, load_section, resolve_section_model
from ragtune.records import load_corpus


def jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def jsonl_params(corpus: str, test: str | None = None) -> FetchParams:
    return FetchParams(source="jsonl", jsonl={"corpus": corpus, "test": test})


def test_non_utf8_corpus_names_file_line_and_byte(tmp_path):
    path = tmp_path / "corpus.jsonl"
    jsonl(path, corpus_rows(5))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"authority", b"autorit\xe9")  # a Latin-1 é
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"corpus.jsonl:4: not UTF-8 \(byte 0xe9 at column \d+\); save the file as"):
        load_corpus(path)
    (tmp_path / "params.yaml").write_text("fetch:\n  source: jsonl\n  jsonl:\n    corpus: corpus.jsonl\n")
    proc = subprocess.run(  # the fetch stage, as a user runs it
        [sys.executable, "-m", "ragtune.stages.fetch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "RAGTUNE_LOG": "WARNING"},
    )
    assert proc.returncode == 2 and "corpus.jsonl:4: not UTF-8" in proc.stderr and "Traceback" not in proc.stderr


def test_non_utf8_params_file_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"fetch:\n  source: jsonl\n# r\xe9sum\xe9\n")
    with pytest.raises(ParamsError, match=r"params.yaml:3: not UTF-8 \(byte 0xe9\)"):
        load_section("fetch", FetchParams, path)


def test_passage_id_clash_names_file_and_line(tmp_path):
    long = " ".join(f"word{i}" for i in range(60))
    path = jsonl(
        tmp_path / "corpus.jsonl",
        [{"id": "a", "text": long}, {"id": "b", "text": "short text"}, {"id": "a#p1", "text": "another short"}],
    )
    result = SourceResult(chunks=load_corpus(path), test=[], stats={})
    with pytest.raises(DataError) as err:
        apply_passages(result, lambda text: len(text.split()), size=20, overlap=0, corpus_file=path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: chunk id 'a#p1' is also the id fetch.passages gives a passage of the long text")
    assert "fetch.passages.enabled: false" in msg


def test_empty_test_file_is_an_error_saying_what_to_do(tmp_path):
    corpus = jsonl(tmp_path / "corpus.jsonl", corpus_rows(6))
    (tmp_path / "test.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test.jsonl: no test questions \(the file is empty\).*fetch.jsonl.test: null"):
        fetch_source(jsonl_params(corpus, str(tmp_path / "test.jsonl")))


def test_corpus_of_identical_texts_says_why(tmp_path):
    rows = [{"id": f"d{i}", "text": "Entities shall report incidents."} for i in range(12)]
    corpus = jsonl(tmp_path / "corpus.jsonl", rows)
    with pytest.raises(DataError, match=r"corpus.jsonl: all 12 chunks have the same text, so no retriever can tell"):
        fetch_source(jsonl_params(corpus))


def test_misspelt_section_is_refused_with_a_suggestion(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("embeding:\n  batch_size: 0\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"unknown section 'embeding' \(did you mean 'embedding'\?\): it would be"):
        load_section("fetch", FetchParams, path)


def test_check_names_every_missing_input_and_variable_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEAM_STORAGE", raising=False)
    (tmp_path / "params.yaml").write_text(
        "fetch:\n  source: jsonl\n  jsonl:\n    corpus: corpus/missing.jsonl\n"
        "tune:\n  storage_env: TEAM_STORAGE\n  n_trials: 0\ntrain:\n  max_epochs: 0\n",
        encoding="utf-8",
    )
    with pytest.raises(ParamsError) as err:
        check_params_file("params.yaml")
    msg = str(err.value)
    assert "tune.n_trials: Input should be greater than or equal to 1" in msg
    assert "train.max_epochs: Input should be greater than or equal to 1" in msg
    (tmp_path / "params.yaml").write_text(
        "fetch:\n  source: jsonl\n  jsonl:\n    corpus: corpus/missing.jsonl\ntune:\n  storage_env: TEAM_STORAGE\n",
        encoding="utf-8",
    )
    with pytest.raises(ParamsError) as err:
        check_params_file("params.yaml")
    msg = str(err.value)
    assert "fetch.jsonl.corpus: corpus/missing.jsonl not found" in msg
    assert "tune.storage_env: the environment variable TEAM_STORAGE is not set" in msg


def test_the_check_stage_knows_every_section():
    assert {name: SECTION_MODELS[name] for name in SECTIONS} == {n: resolve_section_model(n) for n in SECTIONS}


@pytest.mark.slow
def test_a_bad_param_of_a_later_stage_stops_the_pipeline_before_any_stage_works(tmp_path):
    project = Project(tmp_path / "p")
    project.write_corpus(corpus_rows(8), [{"id": "q1", "question": "What must be reported?", "relevant_ids": ["c1"]}])
    project.set_params(train={"max_epochs": 0})
    out = project.dvc("repro", ok=False)
    assert "Running stage 'check'" in out and "train.max_epochs: Input should be greater than or equal to 1" in out
    assert "Running stage 'fetch'" not in out
    # Fixed and run; then a valid change of a later stage's param reruns the check, and nothing it does not read.
    project.set_params(train={"max_epochs": 30})
    project.dvc("repro", "fetch")
    project.set_params(train={"lr": 0.001})
    out = project.dvc("repro", "fetch")
    assert "Running stage 'check'" in out and "Running stage 'fetch'" not in out


def test_damaged_json_and_npz_outputs_name_the_file_and_the_stage_that_remakes_them(tmp_path):
    from ragtune.embeddings_npz import load_embeddings, save_embeddings
    from ragtune.errors import UnreadableFileError
    from ragtune.io import read_json

    report = tmp_path / "data/tune/best.json"
    report.parent.mkdir(parents=True)
    report.write_text('{"value": 0.5, "params": {', encoding="utf-8")  # cut off
    with pytest.raises(UnreadableFileError, match=r"best.json: not valid JSON .*rerun that stage \(dvc repro -f"):
        read_json(report)
    emb = tmp_path / "data/embed/corpus.npz"
    save_embeddings(emb, ["a", "b"], np.eye(2, dtype=np.float32))
    emb.write_bytes(emb.read_bytes()[:100])
    with pytest.raises(UnreadableFileError, match=r"corpus.npz: not a readable embeddings file .*dvc repro -f embed"):
        load_embeddings(emb)
    assert issubclass(UnreadableFileError, ValueError)  # an optional file that is unreadable still reads as absent
