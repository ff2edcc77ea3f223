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
    from probe_eval import AgainstCosine, load_test_inputs, train_tuned
    from ragtune.adapter.model import adapt_queries

    _, _, bagged = train_tuned(json.loads(args.params))
    versus = AgainstCosine(*load_test_inputs())
    ada = versus.compare(lambda q: adapt_queries(bagged.adapter, q))
    print(json.dumps({"params": json.loads(args.params), "test": len(versus.test.ids),
                      "val_hit@5": [round(m.best["hit@5"], 3) for m in bagged.members],
                      "cosine": {k: round(float(versus.cosine[k].mean()), 4) for k in ("hit@5", "mrr@20")},
                      "adapter": {k: round(ada[k], 4) for k in ("hit@5", "mrr@20")},
                      "p_hit@5": round(ada["p_hit@5"], 4), "p_mrr@20": round(ada["p_mrr@20"], 4)}))


if __name__ == "__main__":
    main()
