"""The interpolation sweep behind `train.interpolation`'s default (not a pipeline stage).

For a pipeline workspace after `dvc repro eval` (the main checkout, or a `ragtune bench` workspace), it takes
the shipped adapter (models/adapter), rescales it to each alpha of --alphas (relative to the alpha it was
shipped with, recorded in its config.json; the interpolated parameters are linear in alpha), and prints test
Hit@5 / MRR@20 against raw cosine with McNemar and paired-bootstrap p-values. No retraining: the trained
adapter is the same for every alpha, only how far each query moves changes.

    python scripts/probe_interpolation.py data/transfer/work/acord --alphas 1,0.75,0.5,0.25
"""

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--alphas", default="1,0.75,0.5,0.25")
    args = ap.parse_args()
    os.chdir(args.workspace)
    sys.path.insert(0, str(Path("src").resolve()))
    import torch

    from ragtune.adapter.model import adapt_queries, load_query_adapter, moves_with_interpolation
    from ragtune.evaluation.arms import EmbeddingArm, identity
    from ragtune.evaluation.inputs import load_corpus_with_embeddings, load_test_set
    from ragtune.evaluation.metrics import EvalParams, hit_matrix, per_question_metrics
    from ragtune.evaluation.statistics import mcnemar_exact, paired_bootstrap

    ev = EvalParams()
    corpus = load_corpus_with_embeddings(Path("data/fetch/corpus.jsonl"), Path("data/embed/corpus.npz"))
    test = load_test_set(Path("data/fetch/test.jsonl"), Path("data/embed/test.npz"), corpus.ids)
    shipped = load_query_adapter("models/adapter")
    applied = json.loads(Path("models/adapter/config.json").read_text()).get("interpolation", 1.0)
    moving = {n: p.detach().clone() for n, p in shipped.named_parameters() if moves_with_interpolation(n)}

    def scores(transform):
        hits = hit_matrix(EmbeddingArm("x", corpus.emb, transform).retrieve(test, ev.depth), test.relevant)
        return per_question_metrics(hits, test.n_relevant, ev)

    cos = scores(identity)
    rows = []
    for alpha in (float(a) for a in args.alphas.split(",")):
        with torch.no_grad():
            for name, param in shipped.named_parameters():
                if name in moving:
                    param.copy_(moving[name] * (alpha / applied))
        ada = scores(lambda q: adapt_queries(shipped, q))
        rows.append({"alpha": alpha, "hit@5": round(100 * ada["hit@5"].mean(), 1),
                     "mrr@20": round(float(ada["mrr@20"].mean()), 3),
                     "p_hit@5": round(mcnemar_exact(ada["hit@5"] > 0, cos["hit@5"] > 0).p_value, 4),
                     "p_mrr@20": round(paired_bootstrap(ada["mrr@20"], cos["mrr@20"], 10_000, 0.95, 42).p_value, 4)})
    print(json.dumps({"workspace": str(args.workspace), "test": len(test.ids), "kind": shipped.config.kind,
                      "shipped_alpha": applied,
                      "cosine": {"hit@5": round(100 * cos["hit@5"].mean(), 1),
                                 "mrr@20": round(float(cos["mrr@20"].mean()), 3)}, "alphas": rows}))


if __name__ == "__main__":
    main()
