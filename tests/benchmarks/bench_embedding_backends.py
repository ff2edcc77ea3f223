"""Embedding texts/s per backend and precision (embedding.backend / embedding.precision) against PyTorch fp32, in
one run: the variants take turns batch by batch (so load from other processes falls on all of them alike), and
each variant's figure is its best batch. Chunks are the default corpus' (data/fetch/corpus.jsonl, else generated
paragraphs); questions the synthetic ones (data/synthesize/questions.jsonl, else short generated ones).

Goal (issue 34): the default backend at least 2x PyTorch fp32, with the metric guard of scripts/backend_quality.py.
"""

import json
import time
from pathlib import Path

from ragtune.embedding.embedder import load_model
from ragtune.params import EmbeddingParams

from .bench_embedding import texts
from .common import save

VARIANTS = ("torch:fp32", "torch:bf16", "onnx:fp32", "onnx:int8")
ROUNDS = 5
CHUNK_BATCH = 64
QUESTION_BATCH = 256


def questions(n: int) -> list[str]:
    path = Path("data/synthesize/questions.jsonl")
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line)["question"] for line, _ in zip(fh, range(n))]
    return [f"What are the obligations of providers under article {i}?" for i in range(n)]


def main() -> None:
    params = EmbeddingParams(device="cpu")
    models = {}
    for v in VARIANTS:
        backend, precision = v.split(":")
        t0 = time.perf_counter()
        models[v] = load_model(params.model_copy(update={"backend": backend, "precision": precision}))
        print(f"{v}: loaded in {time.perf_counter() - t0:.1f} s (an export runs once)", flush=True)
    chunks = texts(CHUNK_BATCH * ROUNDS)
    qs = questions(QUESTION_BATCH * ROUNDS)
    for model in models.values():  # warm-up: first calls pay one-off costs
        model.encode(chunks[:8], batch_size=params.batch_size)
    best = {v: {"chunks": float("inf"), "questions": float("inf")} for v in VARIANTS}
    for r in range(ROUNDS):
        for kind, data, size in (("chunks", chunks, CHUNK_BATCH), ("questions", qs, QUESTION_BATCH)):
            batch = data[r * size : (r + 1) * size]
            for v, model in models.items():
                t0 = time.perf_counter()
                model.encode(batch, batch_size=params.batch_size, normalize_embeddings=True, show_progress_bar=False)
                best[v][kind] = min(best[v][kind], (time.perf_counter() - t0) / len(batch))
    ref = best["torch:fp32"]
    results = {
        v: {
            "chunks_per_s": round(1 / b["chunks"], 1),
            "questions_per_s": round(1 / b["questions"], 1),
            "chunks_speedup_vs_torch_fp32": round(ref["chunks"] / b["chunks"], 2),
            "questions_speedup_vs_torch_fp32": round(ref["questions"] / b["questions"], 2),
        }
        for v, b in best.items()
    }
    save(
        "embedding_backends",
        {
            "rounds": ROUNDS,
            "chunk_batch": CHUNK_BATCH,
            "question_batch": QUESTION_BATCH,
            "mean_chunk_chars": round(sum(map(len, chunks)) / len(chunks)),
            "goal_speedup": 2.0,
            "variants": results,
        },
    )


if __name__ == "__main__":
    main()
