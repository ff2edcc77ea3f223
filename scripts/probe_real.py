"""A fixed-params probe over a pipeline workspace with real training questions (not a pipeline stage).

It reads a workspace's stage outputs (embed, fetch, tune), trains the bagged adapter with the tuned params
plus --params overrides, and prints test Hit@5 / MRR@20 against raw cosine with paired tests: one design
change at a time, without retuning. With --against, the same questions are also scored by a second set of
overrides and the two adapters are paired directly (exact McNemar on Hit@5, paired bootstrap on MRR@20).

    python scripts/probe_real.py data/transfer/real/work/acord --params '{"real_weight": 10}'
    python scripts/probe_real.py data/transfer/real/work/or_sharc --params '{"seed": 47}' \
        --against '{"seed": 47, "refit": false}'
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
    ap.add_argument("--against", default=None, help="a second JSON object of overrides to pair --params with")
    args = ap.parse_args()
    os.chdir(args.workspace)
    sys.path.insert(0, str(Path("src").resolve()))
    from probe_eval import AgainstCosine, load_test_inputs, train_tuned

    from ragtune.adapter.model import adapt_queries

    _, _, bagged = train_tuned(json.loads(args.params))
    versus = AgainstCosine(*load_test_inputs())
    ada = versus.compare(lambda q: adapt_queries(bagged.adapter, q))
    print(
        json.dumps(
            {
                "params": json.loads(args.params),
                "test": len(versus.test.ids),
                "val_hit@5": [round(m.best["hit@5"], 3) for m in bagged.members],
                "cosine": {k: round(float(versus.cosine[k].mean()), 4) for k in ("hit@5", "mrr@20")},
                "adapter": {k: round(ada[k], 4) for k in ("hit@5", "mrr@20")},
                "p_hit@5": round(ada["p_hit@5"], 4),
                "p_mrr@20": round(ada["p_mrr@20"], 4),
            }
        )
    )
    if args.against is not None:
        from ragtune.evaluation.statistics import mcnemar_exact, paired_bootstrap

        _, _, other = train_tuned(json.loads(args.against))
        new = versus.scores(lambda q: adapt_queries(bagged.adapter, q))
        old = versus.scores(lambda q: adapt_queries(other.adapter, q))
        ev = versus.params
        print(
            json.dumps(
                {
                    "against": json.loads(args.against),
                    "against_adapter": {k: round(float(old[k].mean()), 4) for k in ("hit@5", "mrr@20")},
                    "p_hit@5": round(mcnemar_exact(new["hit@5"] > 0, old["hit@5"] > 0).p_value, 4),
                    "p_mrr@20": round(
                        paired_bootstrap(
                            new["mrr@20"], old["mrr@20"], ev.bootstrap_resamples, ev.confidence, ev.seed
                        ).p_value,
                        4,
                    ),
                }
            )
        )


if __name__ == "__main__":
    main()
