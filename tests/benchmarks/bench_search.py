"""Exact blocked top-k search (`retrieval.exact_top_k`, the code path of eval, validation and `ragtune
search`): queries per second against corpus size, 1k to 1M chunks of 384-d random unit vectors, and
its GFLOP/s against a plain matrix product of the same shape (the ceiling: top-k adds selection and
merging on top of the product).
"""

import torch

from ragtune.search.dense import exact_top_k

from .common import best_of, save

DIM = 384
N_QUERIES = 256
K = 10
SIZES = [1_000, 10_000, 100_000, 1_000_000]


def _unit(n: int, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, DIM, generator=generator)
    return torch.nn.functional.normalize(x, dim=1, out=x)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = _unit(N_QUERIES, gen)
    exact_top_k(queries, _unit(2_000, gen), K)  # warm-up: first calls pay one-off costs

    rows = []
    for n in SIZES:
        corpus = _unit(n, gen)
        repeats = 5 if n <= 10_000 else 3 if n <= 100_000 else 1
        t_search = best_of(lambda: exact_top_k(queries, corpus, K), repeats)
        t_matmul = best_of(lambda: torch.mm(queries, corpus.T), repeats)
        if n == 10_000:  # the blocked search returns exactly what a full product + topk returns
            _, idx = exact_top_k(queries, corpus, K, corpus_block=4_096)
            ref = torch.topk(queries @ corpus.T, K, dim=1).indices.numpy()
            assert (idx == ref).mean() > 0.999, "blocked top-k disagrees with the full product"
        flop = 2.0 * N_QUERIES * n * DIM
        rows.append(
            {
                "corpus": n,
                "queries_per_s": round(N_QUERIES / t_search, 1),
                "ms_per_batch": round(t_search * 1e3, 2),
                "search_gflop_s": round(flop / t_search / 1e9, 1),
                "matmul_gflop_s": round(flop / t_matmul / 1e9, 1),
                "search_vs_matmul": round(t_matmul / t_search, 3),
            }
        )
        print(
            f"corpus {n:>9,}: {rows[-1]['queries_per_s']:>10,.1f} queries/s  "
            f"search {rows[-1]['search_gflop_s']:6.1f} GFLOP/s  matmul {rows[-1]['matmul_gflop_s']:6.1f} GFLOP/s",
            flush=True,
        )
        del corpus

    save(
        "search",
        {"dim": DIM, "queries_per_batch": N_QUERIES, "k": K, "dtype": "float32", "device": "cpu", "results": rows},
    )


if __name__ == "__main__":
    main()
