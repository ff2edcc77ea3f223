"""Embedding throughput: the cached embedder against SentenceTransformer.encode on the same texts, and
cold-cache texts/s against `embedding.processes` (sentence-transformers' multi-process pool, on the CPU).

Goals (issue 2): cold-cache throughput >= 0.9x direct encode; warm cache >= 50x faster than cold.
Texts: the default corpus chunks (data/fetch/corpus.jsonl) when fetched, else generated paragraphs.
"""

import tempfile
import time
from pathlib import Path

from ragtune.cache import ContentCache
from ragtune.embedding.embedder import CachedEmbedder, load_model
from ragtune.params import EmbeddingParams
from ragtune.records import load_corpus

from .common import save

N_TEXTS = 400
N_POOL_TEXTS = 1200  # a pool starts only for 512+ missing texts
PROCESSES = (1, 2, 4)


def texts(n: int = N_TEXTS) -> list[str]:
    corpus = Path("data/fetch/corpus.jsonl")
    if corpus.is_file():
        return [c.text for c in load_corpus(corpus)][:n]
    return [
        f"Paragraph {i}: the controller shall implement appropriate technical and organisational "
        f"measures to ensure a level of security appropriate to risk number {i}." * 3
        for i in range(n)
    ]


def processes_throughput(model) -> dict:
    """Cold-cache texts/s with 1, 2, 4 CPU processes, counting the pool's start (each process loads the model)
    as a user's run does, and without it."""
    import os

    data = texts(N_POOL_TEXTS)
    out = {"pool_texts": len(data), "cpu_cores": os.cpu_count()}
    for n in PROCESSES:
        params = EmbeddingParams(device="cpu", processes=n)
        with (
            tempfile.TemporaryDirectory() as tmp,
            ContentCache(Path(tmp) / "e.sqlite") as cache,
            CachedEmbedder(params, cache, model=model) as emb,
        ):
            t0 = time.perf_counter()
            if n > 1:
                emb._pool = emb._start_pool(emb.pool_devices())
            started = time.perf_counter()
            emb.encode_documents(data)
            done = time.perf_counter()
        out[f"processes_{n}_texts_per_s"] = round(len(data) / (done - t0), 1)
        out[f"processes_{n}_texts_per_s_after_start"] = round(len(data) / (done - started), 1)
    return out


def main() -> None:
    params = EmbeddingParams()
    model = load_model(params)
    data = texts()
    model.encode(data[:64], batch_size=params.batch_size)  # warm-up: first calls pay one-off costs

    t0 = time.perf_counter()
    model.encode(data, batch_size=params.batch_size, normalize_embeddings=True, show_progress_bar=False)
    direct = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        with ContentCache(Path(tmp) / "e.sqlite") as cache:
            emb = CachedEmbedder(params, cache, model=model)
            t0 = time.perf_counter()
            emb.encode_documents(data)
            cold = time.perf_counter() - t0
        with ContentCache(Path(tmp) / "e.sqlite") as cache:
            emb = CachedEmbedder(params, cache, model=model)
            t0 = time.perf_counter()
            emb.encode_documents(data)
            warm = time.perf_counter() - t0

    n = len(data)
    save(
        "embedding",
        {
            "texts": n,
            "mean_chars": round(sum(map(len, data)) / n),
            "direct_texts_per_s": round(n / direct, 1),
            "cold_cache_texts_per_s": round(n / cold, 1),
            "warm_cache_texts_per_s": round(n / warm, 1),
            "cold_vs_direct_ratio": round(direct / cold, 3),
            "goal_cold_vs_direct": 0.9,
            "warm_vs_cold_speedup": round(cold / warm, 1),
            "goal_warm_vs_cold": 50,
            **processes_throughput(model),
        },
    )


if __name__ == "__main__":
    main()
