"""Device check (issue 34): the embed and train steps on CUDA at 100,000 chunks, with the card named.

Embeds the seeded synthetic corpus' chunks (ragtune.benchmark.synthetic_corpus) and short questions with the
default embedder on `cuda` (fp32 and bf16), then trains one adapter epoch over 3 questions a chunk with each loss
(in_batch with 4 hard negatives, full_corpus) on `cuda`, and reports texts/s and epoch seconds. Without CUDA it
stops at once with exit status 2. Nothing here is needed by the project's tests.

    python scripts/gpu_check.py [--chunks 100000] [--out data/bench/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def embed_rates(texts: list[str], questions: list[str]) -> dict:
    import torch

    from ragtune.embedding.embedder import load_model
    from ragtune.params import EmbeddingParams

    out = {}
    for precision in ("fp32", "bf16"):
        model = load_model(EmbeddingParams(device="cuda", precision=precision, batch_size=256))
        model.encode(texts[:512], batch_size=256)  # warm-up: kernels, allocator
        for name, data in (("chunks", texts), ("questions", questions)):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.encode(data, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
            torch.cuda.synchronize()
            out[f"{precision}_{name}_per_s"] = round(len(data) / (time.perf_counter() - t0), 1)
        del model
        torch.cuda.empty_cache()
    return out


def train_epochs(n: int) -> dict:
    import torch

    from ragtune.adapter.config import TrainParams
    from ragtune.adapter.training import train_adapter
    from ragtune.benchmark.scale import _training_data

    data, split = _training_data(n, np.random.default_rng(0))
    out = {"training_questions": int(len(split.train)), "validation_questions": int(len(split.val))}
    for loss in ("in_batch", "full_corpus"):
        params = TrainParams(loss=loss, max_epochs=1, bagging=1, batch_size=512, device="cuda")
        t0 = time.perf_counter()
        if loss == "in_batch":
            data.hard_negatives(params.mining_rule())
            out["hard_negative_mining_s"] = round(time.perf_counter() - t0, 2)
        torch.cuda.reset_peak_memory_stats()
        result = train_adapter(params, data, split)
        out[f"{loss}_epoch_s"] = round(result.seconds, 2)
        out[f"{loss}_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=Path("data/bench/gpu_check.json"))
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False; this torch is "
            f"{torch.__version__}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    from ragtune.benchmark.synthetic_corpus import Source, generate_chunks, test_questions

    card = torch.cuda.get_device_name(0)
    print(f"gpu_check: {card}, {args.chunks} chunks", flush=True)
    chunks = list(generate_chunks(Source.load(), args.chunks, seed=0))
    texts = [c.text for c in chunks]
    questions = [q.question for q in test_questions(chunks, min(len(chunks), 50_000), seed=0)]
    report = {
        "card": card,
        "torch": torch.__version__,
        "chunks": len(texts),
        "mean_chunk_chars": round(sum(map(len, texts)) / len(texts)),
        "questions": len(questions),
        "embed": embed_rates(texts, questions),
        "train": train_epochs(args.chunks),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
