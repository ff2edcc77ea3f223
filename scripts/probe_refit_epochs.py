"""How a bagged member that will be refit picks its epoch count: three rules on the same runs (not a stage).

In a workspace with real training questions, each of the `train.bagging` members is trained once on its own
real validation slice for `max_epochs`, every epoch validated. From those curves:

- `patience`: the epoch early stopping with `train.patience` selected (what `train.refit_patience: 4` does);
- `whole_curve`: the best epoch of the whole curve (`train.refit_patience: null`, the default);
- `pooled`: one epoch for every member, the best of the members' mean curve.

Each rule's members are refit on every row for their epochs and ensembled as the train stage does, and scored
on the test questions against raw cosine; `whole_curve` is also paired with `patience` (exact McNemar on
Hit@5, paired bootstrap on MRR@20). --params: train keys over the workspace's tuned ones, as JSON or @file;
repeated, later ones win.

    python scripts/probe_refit_epochs.py data/transfer/real/work/acord --params '{"seed": 47}'
    python scripts/probe_refit_epochs.py data/transfer/real/work/acord \
        --params @data/transfer/real_cv/tuned_params_acord.json --params '{"seed": 47}'
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument(
        "--params",
        action="append",
        default=[],
        help="JSON object (or @file) of train keys over the tuned ones; repeatable",
    )
    args = ap.parse_args()
    overrides = {}
    for given in args.params:
        overrides.update(json.loads(Path(given[1:]).read_text() if given.startswith("@") else given))
    os.chdir(args.workspace)
    sys.path.insert(0, str(Path("src").resolve()))
    import numpy as np
    from probe_eval import AgainstCosine, load_test_inputs

    from ragtune.adapter.config import TrainParams, apply_overrides, load_tuned
    from ragtune.adapter.data import TRAINING_INPUTS, load_training_data
    from ragtune.adapter.model import adapt_queries, ensemble_adapters
    from ragtune.adapter.splits import make_split
    from ragtune.adapter.training import EarlyStopping, refit_adapter, train_adapter
    from ragtune.evaluation.statistics import mcnemar_exact, paired_bootstrap
    from ragtune.params import load_section

    params, _ = load_tuned(load_section("train", TrainParams), "data/tune/best.json")
    params = apply_overrides(params, overrides)
    data = load_training_data(*TRAINING_INPUTS, round_trip_top_k=params.round_trip_top_k)
    runs = []  # (member params, selection run over the whole curve)
    for seed in range(params.seed, params.seed + params.bagging):
        member = params.model_copy(update={"seed": seed, "patience": params.max_epochs})
        split = make_split(data, member, seed)
        if split.validation != "real":
            raise SystemExit(f"{args.workspace}: no real validation questions; refit does not apply")
        runs.append((member, train_adapter(member, data, split)))
    curves = [[(row["val_hit@5"], row["val_mrr@10"]) for row in run.history] for _, run in runs]
    mean_curve = [tuple(np.mean([c[e] for c in curves], axis=0)) for e in range(len(curves[0]))]
    pooled = max(range(len(mean_curve)), key=lambda e: (mean_curve[e], -e))
    rules = {
        "patience": [EarlyStopping.replay(run.history, params.patience) for _, run in runs],
        "whole_curve": [run.best_epoch for _, run in runs],
        "pooled": [pooled] * len(runs),
    }

    refits: dict[tuple[int, int], object] = {}  # (seed, epochs) -> refit adapter: the rules often agree

    def refit(member, run, epochs):
        if (member.seed, epochs) not in refits:
            refits[(member.seed, epochs)] = refit_adapter(
                member, data, dataclasses.replace(run, best_epoch=epochs)
            ).adapter
        return refits[(member.seed, epochs)]

    versus = AgainstCosine(*load_test_inputs())
    out, scores = {"params": overrides, "test": len(versus.test.ids), "epochs": rules}, {}
    for rule, epochs in rules.items():
        ensemble = ensemble_adapters([refit(m, r, e) for (m, r), e in zip(runs, epochs)])
        transform = lambda q, a=ensemble: adapt_queries(a, q)  # noqa: E731
        scores[rule] = versus.scores(transform)
        out[rule] = {k: round(v, 4) for k, v in versus.compare(transform).items()}
    new, old, ev = scores["whole_curve"], scores["patience"], versus.params
    out["whole_curve_vs_patience"] = {
        "gained": int(((new["hit@5"] > 0) & ~(old["hit@5"] > 0)).sum()),
        "lost": int(((old["hit@5"] > 0) & ~(new["hit@5"] > 0)).sum()),
        "p_hit@5": round(mcnemar_exact(new["hit@5"] > 0, old["hit@5"] > 0).p_value, 4),
        "p_mrr@20": round(
            paired_bootstrap(new["mrr@20"], old["mrr@20"], ev.bootstrap_resamples, ev.confidence, ev.seed).p_value, 4
        ),
    }
    out["cosine"] = {k: round(float(versus.cosine[k].mean()), 4) for k in ("hit@5", "mrr@20")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
