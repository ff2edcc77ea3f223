"""Hybrid search throughput (eval's `hybrid` arm, `ragtune search`'s third column) beside dense-only, at
10k and 100k chunks: queries per second of exact dense top-k alone, of BM25 alone, of each fusion alone,
and of the whole hybrid (dense and BM25 each `candidates` deep, then RRF cut to k), with the BM25 index's
build time. Random 384-d unit vectors; texts of a few hundred words drawn (Zipf-like) from a small
vocabulary, queries of a few words from it; BM25 with eval's default settings (bm25s, English stopwords
and stemmer, one thread as eval runs it).
"""

import time

import numpy as np
import torch

from ragtune.evaluation.arms import EmbeddingArm, HybridArm, LexicalArm
from ragtune.evaluation.inputs import QuerySet
from ragtune.search.dense import exact_top_k
from ragtune.search.fusion import HybridParams, reciprocal_rank_fusion, weighted_score_fusion
from ragtune.search.lexical import Bm25Index, Bm25Params

from .common import best_of, save

DIM = 384
N_QUERIES = 256
K = 10
CANDIDATES = 100
VOCABULARY = 5_000
WORDS_PER_TEXT = 300
WORDS_PER_QUERY = 6
SIZES = [10_000, 100_000]

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "gu", "fe", "zo", "bi", "ha", "ju"]


def _vocabulary(n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct pseudo-words of 3-4 syllables (stable under stemming, none a stopword)."""
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES, size=int(rng.integers(3, 5)))))
    return np.array(sorted(words))


def _texts(vocab: np.ndarray, n: int, length: int, rng: np.random.Generator) -> list[str]:
    """n texts of `length` words, word i drawn with probability ~ 1/(i + 10) (Zipf-like)."""
    p = 1.0 / (np.arange(len(vocab)) + 10.0)
    p /= p.sum()
    out: list[str] = []
    for start in range(0, n, 10_000):
        idx = rng.choice(len(vocab), size=(min(10_000, n - start), length), p=p)
        out += [" ".join(row) for row in vocab[idx]]
    return out


def _unit(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(sizes: list[int] | None = None, save_as: str = "hybrid") -> None:
    rng = np.random.default_rng(0)
    vocab = _vocabulary(VOCABULARY, rng)
    query_texts = _texts(vocab, N_QUERIES, WORDS_PER_QUERY, rng)
    queries = _unit(N_QUERIES, rng)
    exact_top_k(queries, _unit(2_000, rng), K)  # warm-up: first calls pay one-off costs
    params = HybridParams(candidates=CANDIDATES)

    rows = []
    for n in sizes or SIZES:
        corpus = _unit(n, rng)
        t0 = time.perf_counter()
        texts = _texts(vocab, n, WORDS_PER_TEXT, rng)
        t_texts = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = Bm25Index(texts, Bm25Params())
        t_index = time.perf_counter() - t0
        del texts
        qs = QuerySet(
            "bench",
            [str(i) for i in range(N_QUERIES)],
            queries,
            [np.array([0])] * N_QUERIES,
            ["synthetic"] * N_QUERIES,
            query_texts,
        )
        dense_arm, lexical_arm = EmbeddingArm("adapter", corpus), LexicalArm("bm25", index)
        hybrid = HybridArm("hybrid", dense_arm, lexical_arm, params)
        repeats = 3 if n <= 10_000 else 2

        t_dense = best_of(lambda: exact_top_k(queries, corpus, K), repeats)
        t_dense_deep = best_of(lambda: dense_arm.search(qs, CANDIDATES), repeats)
        t_bm25 = best_of(lambda: lexical_arm.search(qs, CANDIDATES), repeats)
        dense, lexical = dense_arm.search(qs, CANDIDATES), lexical_arm.search(qs, CANDIDATES)
        t_rrf = best_of(lambda: reciprocal_rank_fusion([dense[1], lexical[1]], k=60, depth=K), repeats)
        t_weighted = best_of(lambda: weighted_score_fusion([dense, lexical], [0.5, 0.5], depth=K), repeats)
        t_hybrid = best_of(lambda: hybrid.retrieve(qs, K), repeats)
        fused = hybrid.retrieve(qs, K)
        assert fused.shape == (N_QUERIES, K) and (fused >= 0).all(), "every query should have k fused results"

        def qps(t: float) -> float:
            return round(N_QUERIES / t, 1)

        rows.append(
            {
                "corpus": n,
                "dense_only_queries_per_s": qps(t_dense),
                "hybrid_queries_per_s": qps(t_hybrid),
                "hybrid_vs_dense": round(t_dense / t_hybrid, 3),
                "dense_top_candidates_queries_per_s": qps(t_dense_deep),
                "bm25_queries_per_s": qps(t_bm25),
                "rrf_fusion_queries_per_s": qps(t_rrf),
                "weighted_fusion_queries_per_s": qps(t_weighted),
                "bm25_index_s": round(t_index, 2),
                "text_generation_s": round(t_texts, 2),
                "bm25_empty_slots": round(float((lexical[1] < 0).mean()), 3),
            }
        )
        r = rows[-1]
        print(
            f"corpus {n:>9,}: dense {r['dense_only_queries_per_s']:>9,.1f} q/s  hybrid "
            f"{r['hybrid_queries_per_s']:>8,.1f} q/s  (bm25 {r['bm25_queries_per_s']:,.1f}, rrf "
            f"{r['rrf_fusion_queries_per_s']:,.0f}, weighted {r['weighted_fusion_queries_per_s']:,.0f} q/s; "
            f"index {r['bm25_index_s']:.1f} s)",
            flush=True,
        )
        del corpus, index, dense_arm, lexical_arm, hybrid

    save(
        save_as,
        {
            "dim": DIM,
            "queries_per_batch": N_QUERIES,
            "k": K,
            "candidates": CANDIDATES,
            "vocabulary": VOCABULARY,
            "words_per_text": WORDS_PER_TEXT,
            "words_per_query": WORDS_PER_QUERY,
            "torch_threads": torch.get_num_threads(),
            "bm25_threads": 1,
            "device": "cpu",
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
