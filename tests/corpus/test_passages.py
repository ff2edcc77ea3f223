"""Long documents: the embed stage's window report, passages (ids, relevance mapping, params), documents
ranked by their best passage in eval, and a long-document fixture where splitting finds what truncation
cannot."""

import json

import numpy as np
import pytest

from ragtune.corpus.fetching import apply_passages
from ragtune.corpus.passages import map_relevance, split_corpus, split_text
from ragtune.corpus.sources import SourceResult
from ragtune.errors import ParamsError
from ragtune.evaluation.ranking import document_hits, hit_matrix
from ragtune.params import FetchParams, load_section
from ragtune.records import Chunk, TestQuestion


def words(text: str) -> int:
    return len(text.split())


def test_passages_fit_the_size_and_overlap():
    text = " ".join(f"w{i}" for i in range(100))
    pieces = split_text(text, words, size=30, overlap=10)
    assert all(words(p) <= 30 for p in pieces) and len(pieces) >= 4
    assert pieces[0].split()[0] == "w0" and pieces[-1].split()[-1] == "w99"
    # consecutive passages share words
    assert set(pieces[0].split()) & set(pieces[1].split())
    with pytest.raises(ValueError, match="overlap"):
        split_text(text, words, size=10, overlap=10)


def test_long_chunks_become_passages_with_document_ids_and_relevance_follows():
    chunks = [
        Chunk(id="short", text="a few words here"),
        Chunk(id="long", text=" ".join(f"w{i}" for i in range(50)), title="Lease", split="test"),
        Chunk(id="art1", text=" ".join(f"v{i}" for i in range(25)), parent="reg-1"),
    ]
    out, passages_of, stats = split_corpus(chunks, words, size=12, overlap=2)
    ids = [c.id for c in out]
    assert ids[0] == "short" and out[0].document is None
    assert passages_of["long"] == [i for i in ids if i.startswith("long#")] and passages_of["long"][0] == "long#p1"
    for c in out[1:]:
        assert c.document in ("long", "art1") and words(c.text) <= 12
    long_parts = [c for c in out if c.document == "long"]
    assert all(c.title == "Lease" and c.split == "test" and c.parent == "long" for c in long_parts)
    assert all(c.parent == "reg-1" for c in out if c.document == "art1")  # a known parent is kept
    assert stats["documents_split"] == 2 and stats["passages"] == len(out) - 1

    questions = [
        TestQuestion(id="q1", question="?", relevant_ids=["long", "short"]),
        TestQuestion(id="q2", question="?", relevant_ids=["short"]),
    ]
    mapped = map_relevance(questions, passages_of)
    assert mapped[0].relevant_ids == passages_of["long"] + ["short"] and mapped[1] is questions[1]


def test_apply_passages_maps_test_and_training_questions():
    result = SourceResult(
        chunks=[Chunk(id="d", text=" ".join(["x"] * 40))],
        test=[TestQuestion(id="t", question="?", relevant_ids=["d"])],
        train_questions=[TestQuestion(id="r", question="??", relevant_ids=["d"])],
    )
    out = apply_passages(result, words, 16, 4)
    ids = [c.id for c in out.chunks]
    assert out.test[0].relevant_ids == ids and out.train_questions[0].relevant_ids == ids
    assert out.stats["passage_size"] == 16


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "fetch:\n  passages:\n    size: 64\n    overlap: 64\n",
            "fetch.passages.overlap: Value error, must be smaller than size (64)",
        ),
        (
            "fetch:\n  passages:\n    overlap: -1\n",
            "fetch.passages.overlap: Input should be greater than or equal to 0",
        ),
        ("fetch:\n  passages:\n    size: 4\n", "fetch.passages.size: Input should be greater than or equal to 16"),
    ],
)
def test_bad_passage_params_name_the_key(tmp_path, text, expected):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError) as err:
        load_section("fetch", FetchParams, tmp_path / "params.yaml")
    assert expected in str(err.value)


def test_documents_are_ranked_by_their_best_passage():
    documents = np.array([0, 0, 1, 1, 2, 3])  # rows 0-1: doc 0, rows 2-3: doc 1, ...
    idx = np.array(
        [
            [0, 1, 2, 3, 4, 5],  # doc 0 twice, then doc 1 twice: docs 0, 1, 2, 3
            [3, 2, 1, -1, -1, -1],
        ]
    )  # docs 1, 0, then nothing
    relevant = [np.array([4]), np.array([0, 1])]  # q0 wants doc 2, q1 wants doc 0 (two passages)
    hits, n_docs = document_hits(idx, relevant, documents, depth=3)
    assert hits.tolist() == [[False, False, True], [False, True, False]]
    assert n_docs.tolist() == [1, 1]
    # at passage level doc 2 is only at rank 5
    assert hit_matrix(idx, relevant)[0].tolist() == [False, False, False, False, True, False]


# --- the embed stage's window report and a long-document fixture --------------------------------------


def long_corpus(n_docs=6, filler_sentences=220):
    """Documents of ~20,000 characters whose distinctive clause sits past the first 2,000."""
    filler = (
        "The parties acknowledge the general terms and conditions set out in this agreement and agree "
        "to perform their obligations in good faith. "
    )
    topics = [
        "the landlord must repair the heating boiler within ten days",
        "the employee may not join a competitor for twelve months",
        "the seller indemnifies the buyer against patent infringement claims",
        "late invoices accrue interest at two percent per month",
        "the software licence terminates if the licensee becomes insolvent",
        "disputes are settled by arbitration in Geneva under Swiss law",
    ]
    rows, questions = [], []
    for i in range(n_docs):
        text = filler * 20 + f"Clause {i + 1}: {topics[i]}. " + filler * (filler_sentences - 20)
        rows.append({"id": f"doc{i}", "text": text, "title": None, "source": "fixture"})
        questions.append({"id": f"q{i}", "question": f"Which clause says {topics[i]}?", "relevant_ids": [f"doc{i}"]})
    return rows, questions


@pytest.mark.slow
def test_long_documents_end_to_end(tmp_path):
    """Without passages the embed stage warns and the right document is not found (every text reads the
    same first 256 word pieces); with them it is, counted per document."""
    import yaml
    from pipeline_support import run_stages, write_jsonl

    from ragtune.cache import ContentCache
    from ragtune.embedding.embedder import CachedEmbedder
    from ragtune.evaluation.arms import EmbeddingArm
    from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set

    rows, questions = long_corpus()
    assert min(len(r["text"]) for r in rows) > 19_000
    write_jsonl(tmp_path / "corpus" / "corpus.jsonl", rows)
    write_jsonl(tmp_path / "corpus" / "test.jsonl", questions)
    base = {
        "fetch": {"source": "jsonl", "jsonl": {"corpus": "corpus/corpus.jsonl", "test": "corpus/test.jsonl"}},
        "embedding": {"device": "cpu"},
        "mlflow": {"enabled": False},
    }
    found = {}
    for enabled in (False, True):
        params = {**base, "fetch": {**base["fetch"], "passages": {"enabled": enabled}}}
        run_stages(tmp_path, params, "fetch")
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        # embed directly (the stage's own function) so the report can be read back
        from ragtune.embedding.sets import EmbedInputs, embed_all
        from ragtune.params import EmbeddingParams

        with ContentCache(tmp_path / "cache.sqlite") as cache:
            info = embed_all(
                CachedEmbedder(EmbeddingParams(device="cpu"), cache),
                EmbedInputs(tmp_path / "data/fetch/corpus.jsonl", (tmp_path / "data/fetch/test.jsonl",)),
                tmp_path / "data/embed",
            )
        corpus = load_corpus_with_embeddings(tmp_path / "data/fetch/corpus.jsonl", tmp_path / "data/embed/corpus.npz")
        test = load_test_set(tmp_path / "data/fetch/test.jsonl", tmp_path / "data/embed/test.npz", corpus.ids)
        idx = EmbeddingArm("cosine", corpus.emb).retrieve(test, 40)
        if enabled:
            assert info["window"]["over_window"] == 0 and corpus.documents is not None
            hits, _ = document_hits(idx, test.relevant, corpus.documents, 1)
        else:
            assert info["window"]["over_window"] == 6 and info["window"]["unread_token_share"] > 0.8
            hits = hit_matrix(idx, test.relevant)[:, :1]
        found[enabled] = hits[:, 0].mean()
    report = json.loads((tmp_path / "data/fetch/report.json").read_text())
    assert report["documents_split"] == 6 and report["passages"] > 6 * 10
    assert found[True] == 1.0 and found[False] < 0.5


def test_embed_stage_warns_about_texts_past_the_window(capsys):
    from ragtune.stages import embed as module

    module.warn_window({"over_window": 0, "texts": 10, "max_seq_length": 256})
    assert capsys.readouterr().out == ""
    module.warn_window(
        {
            "over_window": 3,
            "texts": 10,
            "over_window_share": 0.3,
            "max_seq_length": 256,
            "over_window_median_tokens": 400,
            "longest_tokens": 900,
            "unread_token_share": 0.25,
        }
    )
    out = capsys.readouterr().out
    assert "3 of 10 chunks (30.0%) are longer than the embedder's window of 256" in out and "fetch.passages" in out


def test_window_report_counts_texts_past_the_window():
    from ragtune.embedding.embedder import window_report

    report = window_report(np.array([100, 300, 500, 256]), 256)
    assert (report["over_window"], report["longest_tokens"], report["over_window_median_tokens"]) == (2, 500, 400)
    assert report["unread_token_share"] == round((44 + 244) / 1156, 4)
    assert window_report(np.array([10, 20]), 256)["over_window"] == 0
