"""Shared bits for benchmarks: where results go and how they are printed."""

import json
import os
import platform
import time
from pathlib import Path

import torch

OUT = Path("data/bench")


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save(topic: str, results: dict) -> Path:
    """Write data/bench/<topic>.json with the machine description, and print it."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{topic}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return path


def best_of(fn, repeats: int) -> float:
    """Fastest of `repeats` timed calls of fn(), in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
