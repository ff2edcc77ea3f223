"""A fixed-params probe over a pipeline workspace with real training questions (not a pipeline stage).

It reads a workspace's stage outputs (embed, fetch, tune), trains the bagged adapter with the tuned params
plus --params overrides, and prints test Hit@5 / MRR@20 against raw cosine with paired tests: one design
change at a time, without retuning.

    python scripts/probe_real.py data/transfer/real/work/acord --params '{"real_weight": 10}'
"""

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--params", default="{}", help="JSON object of train keys over the tuned ones")
    args = ap.parse_args()
    os.chdir(args.workspace)
    sys.path.insert(0, str(Path("src").resolve()))
    from ragtune.adapter.model import adapt_queries
    from ragtune.evaluation.arms import EmbeddingArm, identity
    from ragtune.evaluation.metrics import EvalParams, hit_matrix, per_question_metrics
    from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set
    from ragtune.params import load_section
    from ragtune.evaluation.statistics import mcnemar_exact, paired_bootstrap
    from ragtune.adapter.data import TRAINING_INPUTS, load_training_data
    from ragtune.adapter.training import TrainParams, apply_overrides, load_tuned, train_bagged

    base, _ = load_tuned(load_section("train", TrainParams), "data/tune/best.json")
    params = apply_overrides(base, json.loads(args.params))
    inputs = TRAINING_INPUTS
    data = load_training_data(*inputs, round_trip_top_k=params.round_trip_top_k)
    ev = EvalParams()
    corpus = load_corpus_with_embeddings(Path(inputs[2]), Path(inputs[1]))
    test = load_test_set(Path(inputs[3]), Path("data/embed/test.npz"), corpus.ids)
    bagged = train_bagged(params, data)

    def scores(transform):
        hits = hit_matrix(EmbeddingArm("x", corpus.emb, transform).retrieve(test, ev.depth), test.relevant)
        return per_question_metrics(hits, test.n_relevant, ev)

    cos = scores(identity)
    ada = scores(lambda q: adapt_queries(bagged.adapter, q))
    mc = mcnemar_exact(ada["hit@5"] > 0, cos["hit@5"] > 0)
    pb = paired_bootstrap(ada["mrr@20"], cos["mrr@20"], 10_000, 0.95, 42)
    print(json.dumps({"params": json.loads(args.params), "test": len(test.ids),
                      "val_hit@5": [round(m.best["hit@5"], 3) for m in bagged.members],
                      "cosine": {"hit@5": round(cos["hit@5"].mean(), 4), "mrr@20": round(cos["mrr@20"].mean(), 4)},
                      "adapter": {"hit@5": round(ada["hit@5"].mean(), 4), "mrr@20": round(ada["mrr@20"].mean(), 4)},
                      "p_hit@5": round(mc.p_value, 4), "p_mrr@20": round(pb.p_value, 4)}))


if __name__ == "__main__":
    main()
