"""No-model synthesis (llm.backend: ict, the default params' style) chunks/s against llm.ict.processes, in one run:
the process counts take turns, each figure its best of ROUNDS, the pool's start included (as a stage run pays it).

Chooses the default of llm.ict.processes (issue 34: what is fastest on this 2-core machine).
"""

import os
import time
from pathlib import Path

from ragtune.cache import ContentCache
from ragtune.llm import LlmParams, make_backend
from ragtune.params import load_section
from ragtune.records import Chunk, load_corpus
from ragtune.synthesis.run import SynthesizeParams, synthesize

from .common import save

PROCESSES = (1, 2, 3, 4)
ROUNDS = 3


def corpus() -> list[Chunk]:
    path = Path("data/fetch/corpus.jsonl")
    if path.is_file():
        return load_corpus(path)
    text = (
        "Article {i}. 1. Member States shall lay down the rules on penalties applicable to infringements of this "
        "Regulation. 2. The competent authority may impose administrative fines of up to EUR {i} 000. Records "
        "shall be kept for five years."
    )
    return [Chunk(id=f"c{i}", text=text.format(i=i), title=None, source="bench", split="train") for i in range(1200)]


def main() -> None:
    llm = load_section("llm", LlmParams).model_copy(update={"backend": "ict"})
    params = load_section("synthesize", SynthesizeParams)
    chunks = corpus()
    best = {n: float("inf") for n in PROCESSES}
    for _ in range(ROUNDS):
        for n in PROCESSES:
            backend = make_backend(llm.model_copy(update={"ict": llm.ict.model_copy(update={"processes": n})}))
            with ContentCache(":memory:") as cache:
                t0 = time.perf_counter()
                synthesize(chunks, [], backend, cache, params)
                best[n] = min(best[n], time.perf_counter() - t0)
    save(
        "synthesis",
        {
            "chunks": len(chunks),
            "cpu_cores": os.cpu_count(),
            "style": llm.ict.style,
            "rounds": ROUNDS,
            "chunks_per_s": {str(n): round(len(chunks) / s, 1) for n, s in best.items()},
            "speedup_vs_1_process": {str(n): round(best[1] / s, 2) for n, s in best.items()},
            "fastest_processes": min(best, key=best.__getitem__),
        },
    )


if __name__ == "__main__":
    main()
