"""The scale benchmark's synthetic corpus generator: seeded, legal-like, sized as asked, and valid pipeline input."""

from __future__ import annotations

import statistics

from ragtune.benchmark.synthetic_corpus import Source, default_test_size, generate_chunks, write_corpus
from ragtune.records import load_corpus, load_test

SOURCE = Source.load(__import__("pathlib").Path("no/such/corpus.jsonl"))  # the built-in provisions


def test_same_seed_same_corpus_byte_for_byte_and_another_seed_another(tmp_path):
    a_corpus, a_test = write_corpus(tmp_path / "a", 500, seed=3, source=SOURCE)
    b_corpus, b_test = write_corpus(tmp_path / "b", 500, seed=3, source=SOURCE)
    c_corpus, _ = write_corpus(tmp_path / "c", 500, seed=4, source=SOURCE)
    assert a_corpus.read_bytes() == b_corpus.read_bytes() and a_test.read_bytes() == b_test.read_bytes()
    assert a_corpus.read_bytes() != c_corpus.read_bytes()


def test_the_files_are_pipeline_input_of_the_size_asked(tmp_path):
    corpus, test = write_corpus(tmp_path, 1234, seed=0, source=SOURCE)
    chunks = load_corpus(corpus)  # the corpus contract: ids unique, texts non-empty
    questions = load_test(test, corpus_ids=[c.id for c in chunks])  # relevant ids exist
    assert len(chunks) == 1234 and len(questions) == default_test_size(1234) == 50
    assert len({c.text for c in chunks}) == len(chunks)  # the paragraph mark (article.part) keeps texts apart
    assert all(c.parent and c.title and c.title.startswith("Article ") for c in chunks)


def test_chunk_lengths_follow_the_source_distribution():
    lengths = [600, 800, 900, 1000, 1400] * 20
    source = Source.from_texts(
        [" ".join(["The authority shall keep the records of each inspection for five years."] * 30)], ["Records"]
    )
    source = Source(source.sentences, source.titles, tuple(lengths))
    made = [len(c.text) for c in generate_chunks(source, 2000, seed=1)]
    # Filled sentence by sentence (~75 characters) to the drawn length within half a sentence.
    assert abs(statistics.median(made) - statistics.median(lengths)) < 60
    assert min(made) >= 600 - 40 and max(made) <= 1400 + 40


def test_the_gpu_check_stops_clearly_without_cuda():
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no device, whatever the machine has
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--chunks", "10"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and not proc.stdout


def test_validation_chunks_are_capped_and_the_cap_only_trims_the_same_permutation():
    import numpy as np
    from test_training import learnable_data

    from ragtune.adapter.config import TrainParams
    from ragtune.adapter.splits import make_split, split_by_chunk

    data = learnable_data(n_chunks=400)
    groups = data.text_group[data.gold_rows].numpy()
    free = split_by_chunk(data, 0.25, seed=3)
    assert len(set(groups[free.val])) == 100  # 25% of 400 chunks (399 text groups, rounded up)
    below = split_by_chunk(data, 0.25, seed=3, max_val_chunks=100)
    assert np.array_equal(below.val, free.val) and np.array_equal(below.train, free.train)
    capped = split_by_chunk(data, 0.25, seed=3, max_val_chunks=30)
    assert len(set(groups[capped.val])) == 30 and set(capped.val) < set(free.val)
    assert sorted([*capped.train, *capped.val]) == list(range(len(groups)))  # the rest train
    params = TrainParams(val_fraction=0.25, val_max_chunks=30, seed=3)
    assert np.array_equal(make_split(data, params, params.seed).val, capped.val)


def test_bootstrap_blocks_shrink_with_the_sample_and_the_resamples_stay_the_same():
    import numpy as np

    from ragtune.evaluation.statistics import _BLOCK_CELLS, bootstrap_counts

    for n in (7, 2001, 9001):
        blocks = list(bootstrap_counts(n, 3001, seed=42))
        assert sum(len(b) for b in blocks) == 3001 and len(blocks[0]) == min(2000, _BLOCK_CELLS // n)
        assert all(b.size <= _BLOCK_CELLS for b in blocks)
        same = np.concatenate(list(bootstrap_counts(n, 3001, seed=42, block=2000)))  # the former block size
        assert np.array_equal(np.concatenate(blocks), same)


def test_fusion_in_query_blocks_equals_fusion_of_all_queries_at_once(monkeypatch):
    import numpy as np

    from ragtune.deploy import hybrid
    from ragtune.search import fusion

    rng = np.random.default_rng(5)
    dense = np.argsort(rng.random((50, 40)), axis=1)[:, :10]
    lexical = np.argsort(rng.random((50, 40)), axis=1)[:, :10]
    lexical[rng.random(lexical.shape) < 0.2] = -1  # BM25's empty slots
    scores = np.sort(rng.random((50, 10)), axis=1)[:, ::-1]
    whole = fusion.reciprocal_rank_fusion([dense, lexical], 60.0, depth=12)
    weighted = fusion.weighted_score_fusion([(scores, dense), (scores, lexical)], [0.3, 0.7], depth=12)
    monkeypatch.setattr(hybrid, "_QUERY_BLOCK", 7)  # 8 blocks, the last one short
    for a, b in zip(whole, fusion.reciprocal_rank_fusion([dense, lexical], 60.0, depth=12)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(weighted, fusion.weighted_score_fusion([(scores, dense), (scores, lexical)], [0.3, 0.7], depth=12)):
        np.testing.assert_array_equal(a, b)
