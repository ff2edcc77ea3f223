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
    from probe_eval import AgainstCosine, load_test_inputs

    from ragtune.adapter.model import adapt_queries, load_query_adapter, moves_with_interpolation

    versus = AgainstCosine(*load_test_inputs())
    shipped = load_query_adapter("models/adapter")
    applied = json.loads(Path("models/adapter/config.json").read_text()).get("interpolation", 1.0)
    moving = {n: p.detach().clone() for n, p in shipped.named_parameters() if moves_with_interpolation(n)}

    rows = []
    for alpha in (float(a) for a in args.alphas.split(",")):
        with torch.no_grad():
            for name, param in shipped.named_parameters():
                if name in moving:
                    param.copy_(moving[name] * (alpha / applied))
        ada = versus.compare(lambda q: adapt_queries(shipped, q))
        rows.append(
            {
                "alpha": alpha,
                "hit@5": round(100 * ada["hit@5"], 1),
                "mrr@20": round(ada["mrr@20"], 3),
                "p_hit@5": round(ada["p_hit@5"], 4),
                "p_mrr@20": round(ada["p_mrr@20"], 4),
            }
        )
    cos = versus.cosine
    print(
        json.dumps(
            {
                "workspace": str(args.workspace),
                "test": len(versus.test.ids),
                "kind": shipped.config.kind,
                "shipped_alpha": applied,
                "cosine": {
                    "hit@5": round(100 * cos["hit@5"].mean(), 1),
                    "mrr@20": round(float(cos["mrr@20"].mean()), 3),
                },
                "alphas": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
