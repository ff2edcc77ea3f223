"""A quick transfer probe behind the README's design tables (not a pipeline stage).

For one corpus folder (corpus.jsonl + test.jsonl in the project's contracts) it generates no-model
pseudo-queries with the `ict` backend's code (`llm.ict.style`), embeds them with the default embedder (cache
in /tmp by default), trains the adapter with *fixed* params (the EU default's tuned configuration unless
--params overrides keys) over several seeds, and prints test Hit@5 / MRR@20 for raw cosine, BM25, each seed
and the seeds' ensemble, with McNemar and paired-bootstrap p-values against cosine. No tuning: it isolates
one design change at a time. The whole pipeline (with tuning) is `ragtune bench`.

    python scripts/probe_transfer.py ../shared/devsets/acord --style both --seeds 42,43,44,45,46 \
        --params '{"hard_negatives": 4}'
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ragtune.adapter.config import TrainParams
from ragtune.adapter.data import build_training_data
from ragtune.adapter.model import adapt_queries, ensemble_adapters
from ragtune.adapter.splits import split_by_chunk
from ragtune.adapter.training import train_adapter
from ragtune.cache import ContentCache
from ragtune.embedding.embedder import CachedEmbedder
from ragtune.evaluation.metrics import EvalParams, per_question_metrics
from ragtune.evaluation.ranking import hit_matrix
from ragtune.evaluation.statistics import mcnemar_exact, paired_bootstrap
from ragtune.llm.config import IctParams
from ragtune.llm.ict import make_extractor, styled_queries
from ragtune.params import EmbeddingParams
from ragtune.records import load_corpus, load_test
from ragtune.search.dense import exact_top_k, ids_to_indices
from ragtune.search.lexical import Bm25Index

# The EU default's tuned configuration (data/tune/best.json before this probe existed).
EU_TUNED = dict(
    kind="linear",
    loss="in_batch",
    lr=1.48e-4,
    weight_decay=0.0017,
    temperature=0.0162,
    identity_weight=0.38,
    batch_size=64,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--style", default="both", choices=["sentence", "keyphrase", "both"])
    ap.add_argument("--protocol", default="include", choices=["include", "exclude"])
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--params", default="{}", help="JSON object of train keys over the EU-tuned ones")
    ap.add_argument("--cache", default="/tmp/ragtune-probe-embeddings.sqlite")
    args = ap.parse_args()

    chunks = load_corpus(args.dir / "corpus.jsonl")
    tests = load_test(args.dir / "test.jsonl", corpus_ids=[c.id for c in chunks])
    test_chunks = {r for q in tests for r in q.relevant_ids}
    ict = IctParams(style=args.style)
    extractor = make_extractor(ict) if args.style != "sentence" else None
    questions, chunk_of = [], []
    for c in chunks:
        if args.protocol == "exclude" and c.id in test_chunks:
            continue
        qs, _ = styled_queries(c.text, 3, 42, ict, extractor)
        for q in dict.fromkeys(qs):
            questions.append(q)
            chunk_of.append(c.id)
    with ContentCache(args.cache) as cache:
        embedder = CachedEmbedder(EmbeddingParams(), cache)
        corpus_emb = embedder.encode_documents([c.text for c in chunks])
        test_emb = embedder.encode_queries([q.question for q in tests])
        question_emb = embedder.encode_queries(questions)
    ids = [c.id for c in chunks]
    data = build_training_data(
        ids,
        corpus_emb,
        [c.text for c in chunks],
        [f"q{i}" for i in range(len(questions))],
        question_emb,
        chunk_of,
        corpus_parents=[c.parent for c in chunks],
    )
    relevant = ids_to_indices(ids, [q.relevant_ids for q in tests])
    n_relevant = np.array([len(r) for r in relevant])
    ep = EvalParams()

    def metrics(query_emb):
        _, idx = exact_top_k(query_emb, corpus_emb, ep.depth)
        return per_question_metrics(hit_matrix(idx, relevant), n_relevant, ep)

    def line(name, m, base):
        mc = mcnemar_exact(base["hit@5"] > 0, m["hit@5"] > 0)
        pb = paired_bootstrap(m["mrr@20"], base["mrr@20"], 10_000, 0.95, 42)
        return (
            f"{name}: Hit@5 {m['hit@5'].mean() * 100:.1f} (+{mc.gained}/-{mc.lost}, p={mc.p_value:.3g}) "
            f"MRR@20 {m['mrr@20'].mean():.3f} ({pb.diff:+.3f}, p={pb.p_value:.3g})"
        )

    cosine = metrics(test_emb)
    _, bm25_idx = Bm25Index([c.text for c in chunks]).top_k([q.question for q in tests], ep.depth)
    bm25 = per_question_metrics(hit_matrix(bm25_idx, relevant), n_relevant, ep)
    overrides = {**EU_TUNED, **json.loads(args.params)}
    print(
        f"[{args.dir.name} style={args.style} protocol={args.protocol} params={args.params}] "
        f"{len(questions)} pseudo-queries; cosine Hit@5 {cosine['hit@5'].mean() * 100:.1f} "
        f"MRR@20 {cosine['mrr@20'].mean():.3f}; " + line("bm25", bm25, cosine)
    )
    adapters = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        params = TrainParams(**overrides, seed=seed)
        t0 = time.perf_counter()
        result = train_adapter(params, data, split_by_chunk(data, params.val_fraction, seed))
        adapters.append(result.adapter)
        print(
            f"  seed {seed} ({time.perf_counter() - t0:.1f} s, val Hit@5 {result.baseline['hit@5']:.3f} -> "
            f"{result.best['hit@5']:.3f}): " + line("adapter", metrics(adapt_queries(result.adapter, test_emb)), cosine)
        )
    if len(adapters) > 1:
        ensemble = ensemble_adapters(adapters)
        print("  " + line(f"ensemble of {len(adapters)}", metrics(adapt_queries(ensemble, test_emb)), cosine))


if __name__ == "__main__":
    sys.exit(main())
