"""`make bench-scale`: wall time and peak memory of each pipeline step against the corpus size N, the fitted growth
exponent per step (the slope of log cost on log N), written to data/bench/scale.{json,csv} and plotted log-log
(data/bench/scale.png). Texts come from the seeded synthetic corpus (`synthetic_corpus`); vectors are seeded random
unit vectors of the default embedder's 384 dimensions (embedding itself is linear in N: `make bench` measures its
texts/s). Each (step, N) runs in a fresh process, so its peak memory is its own (Linux: VmHWM, reset after setup).

Steps, what N counts, and the order each must have:
  generate        chunks generated                          O(N)
  synthesize      chunks given ict pseudo-queries (llm.ict)  O(N)
  bm25_index      chunks indexed                            O(N)
  bm25_search     chunks searched by 1,000 queries          O(N) per query
  dense_search    chunks searched by 1,000 queries (top 100) O(N) per query
  hard_negatives  chunks, with 3N questions mined against them (exact top 50)   O(N^2): every question scans all
  train_in_batch  chunks, one epoch over 3N questions (batch 512, 4 hard negatives)   O(N)
  train_full_corpus  chunks, one epoch over 3N questions, softmax over all N    O(N^2); memory O(batch x N)
  fusion          questions, RRF of two 100-deep rankings   O(N)
  statistics      questions, eval's per-arm summary (10,000 bootstrap resamples)  O(N) per resample

    python -m ragtune.benchmark.scale [--sizes 1000 10000 100000] [--large 1000000] [--steps ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("data/bench")
DIM = 384
QUERIES = 1000
DEPTH = 100
LARGE_STEPS = ("dense_search", "bm25_search", "fusion", "statistics")  # the steps also run at --large sizes


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _texts(n: int) -> tuple[list[Any], list[str]]:
    from .synthetic_corpus import Source, generate_chunks, test_questions

    chunks = list(generate_chunks(Source.load(), n, seed=0))
    return chunks, [q.question for q in test_questions(chunks, QUERIES, seed=0)]


def _training_data(n: int, rng: np.random.Generator):
    """N chunks and 3N questions near their gold chunk (learnable), as TrainingData, and a 85/15 split."""
    import torch

    from ..adapter.data import TrainingData
    from ..adapter.splits import Split

    corpus = _unit(rng, n)
    gold = rng.integers(0, n, 3 * n)
    questions = corpus[gold] + 1.5 * rng.standard_normal((3 * n, DIM), dtype=np.float32) / DIM**0.5
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    data = TrainingData(
        [f"c{i}" for i in range(n)],
        torch.from_numpy(corpus),
        torch.arange(n),
        [f"q{i}" for i in range(3 * n)],
        torch.from_numpy(questions),
        torch.from_numpy(gold),
    )
    cut = int(0.85 * 3 * n)
    return data, Split(train=np.arange(cut), val=np.arange(cut, 3 * n))


# Each setup(n, rng) returns the step: a function of no arguments, timed alone.
def setup_generate(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from .synthetic_corpus import Source, generate_chunks

    source = Source.load()
    return lambda: sum(1 for _ in generate_chunks(source, n, seed=0))


def setup_synthesize(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..cache import ContentCache
    from ..llm import LlmParams, make_backend
    from ..params import load_section
    from ..synthesis.run import SynthesizeParams, synthesize

    chunks, _ = _texts(n)
    llm = load_section("llm", LlmParams).model_copy(update={"backend": "ict"})
    params = load_section("synthesize", SynthesizeParams)
    backend = make_backend(llm)

    def run() -> Any:
        with ContentCache(":memory:") as cache:
            return synthesize(chunks, [], backend, cache, params)

    return run


def setup_bm25_index(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..search.lexical import Bm25Index

    chunks, _ = _texts(n)
    texts = [c.text for c in chunks]
    return lambda: Bm25Index(texts)


def setup_bm25_search(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..search.lexical import Bm25Index

    chunks, queries = _texts(n)
    index = Bm25Index([c.text for c in chunks])
    return lambda: index.top_k(queries, DEPTH)


def setup_dense_search(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..search.dense import exact_top_k

    corpus, queries = _unit(rng, n), _unit(rng, QUERIES)
    return lambda: exact_top_k(queries, corpus, DEPTH)


def setup_hard_negatives(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..adapter.hard_negatives import MiningRule, mine_hard_negatives

    data, _ = _training_data(n, rng)
    rule = MiningRule(count=4)
    return lambda: mine_hard_negatives(
        data.question_emb, data.gold_rows.numpy(), data.corpus_emb, data.text_group.numpy(), None, rule
    )


def _setup_train(loss: str) -> Callable[[int, np.random.Generator], Callable[[], Any]]:
    def setup(n: int, rng: np.random.Generator) -> Callable[[], Any]:
        from ..adapter.config import TrainParams
        from ..adapter.training import train_adapter

        data, split = _training_data(n, rng)
        params = TrainParams(loss=loss, max_epochs=1, bagging=1, batch_size=512)
        if loss == "in_batch":
            data.hard_negatives(params.mining_rule())  # mined once per corpus (hard_negatives measures it)
        return lambda: train_adapter(params, data, split)

    return setup


def setup_fusion(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..search.fusion import reciprocal_rank_fusion

    corpus_rows = max(10 * DEPTH, n)

    def ranking() -> np.ndarray:  # (n, DEPTH) distinct rows per question, half shared between the two arms
        return (rng.permutation(2 * DEPTH)[:DEPTH][None, :] + offsets) % corpus_rows

    offsets = rng.integers(0, corpus_rows, (n, 1))
    dense, lexical = ranking(), ranking()
    return lambda: reciprocal_rank_fusion([dense, lexical], 60.0, depth=DEPTH)


def setup_statistics(n: int, rng: np.random.Generator) -> Callable[[], Any]:
    from ..evaluation.metrics import EvalParams, summarise_arm

    hits = rng.random((n, 20)) < 0.05
    n_relevant = rng.integers(1, 3, n)
    return lambda: summarise_arm(hits, n_relevant, EvalParams())


STEPS: dict[str, Callable[[int, np.random.Generator], Callable[[], Any]]] = {
    "generate": setup_generate,
    "synthesize": setup_synthesize,
    "bm25_index": setup_bm25_index,
    "bm25_search": setup_bm25_search,
    "dense_search": setup_dense_search,
    "hard_negatives": setup_hard_negatives,
    "train_in_batch": _setup_train("in_batch"),
    "train_full_corpus": _setup_train("full_corpus"),
    "fusion": setup_fusion,
    "statistics": setup_statistics,
}


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def run_cell(step: str, n: int) -> dict[str, Any]:
    """Set the step up at size n, reset the peak-RSS mark, time it once; seconds and memory in MB."""
    fn = STEPS[step](n, np.random.default_rng(0))
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak is the step's
    except OSError:
        pass
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    return {
        "step": step,
        "n": n,
        "seconds": round(seconds, 4),
        "peak_rss_mb": None if peak is None else round(peak / 1024, 1),
        "step_memory_mb": None if peak is None or before is None else round((peak - before) / 1024, 1),
    }


def fit_exponent(ns: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(n) (cost ~ n^slope); None with fewer than two sizes."""
    pairs = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if v and v > 0]
    if len(pairs) < 2:
        return None
    x, y = np.array(pairs).T
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for step in dict.fromkeys(c["step"] for c in cells):
        rows = sorted((c for c in cells if c["step"] == step), key=lambda c: c["n"])
        ns = [c["n"] for c in rows]
        out[step] = {
            "time_exponent": fit_exponent(ns, [c["seconds"] for c in rows]),
            # memory above what the process held before the step (its inputs), where it is measurable
            "memory_exponent": fit_exponent(ns, [max(c["step_memory_mb"] or 0, 0) for c in rows]),
            "seconds": {str(c["n"]): c["seconds"] for c in rows},
            "peak_rss_mb": {str(c["n"]): c["peak_rss_mb"] for c in rows},
        }
    return out


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    for step in dict.fromkeys(c["step"] for c in cells):
        rows = sorted((c for c in cells if c["step"] == step), key=lambda c: c["n"])
        ax_t.plot([c["n"] for c in rows], [c["seconds"] for c in rows], marker="o", label=step)
        ax_m.plot([c["n"] for c in rows], [c["peak_rss_mb"] or float("nan") for c in rows], marker="o", label=step)
    for ax, label in ((ax_t, "wall seconds"), (ax_m, "peak RSS (MB)")):
        ax.set(xscale="log", yscale="log", xlabel="N (chunks; questions for fusion and statistics)", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle("Cost of each step against corpus size (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--large", type=int, nargs="*", default=[1_000_000], help=f"extra sizes for {LARGE_STEPS}")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cell", nargs=2, metavar=("STEP", "N"), help=argparse.SUPPRESS)  # one cell, in a child
    args = ap.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(args.cell[0], int(args.cell[1]))))
        return
    cells = []
    for step in args.steps:
        for n in sorted(set(args.sizes) | (set(args.large) if step in LARGE_STEPS else set())):
            proc = subprocess.run(
                [sys.executable, "-m", "ragtune.benchmark.scale", "--cell", step, str(n)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                cell = {"step": step, "n": n, "error": proc.stderr.strip().splitlines()[-1:]}
                print(json.dumps(cell), flush=True)
                continue
            cells.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(cells[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps({"cells": cells, "steps": summarise(cells)}, indent=2) + "\n")
    with open(args.out / "scale.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["step", "n", "seconds", "peak_rss_mb", "step_memory_mb"])
        writer.writeheader()
        writer.writerows(cells)
    if cells:
        plot(cells, args.out / "scale.png")
    print(json.dumps(summarise(cells), indent=1))


if __name__ == "__main__":
    main()
