"""`train.bagging`: several adapters on as many seeded validation splits, shipped as one ensemble, each member
interpolated toward raw cosine (`train.interpolation`) and, on real validation, refit on every row."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import TrainParams
from .data import TrainingData
from .model import QueryAdapter, ensemble_adapters, interpolate_toward_identity
from .splits import Split, make_split
from .training import TrainResult, refit_adapter, refit_selection_params, train_adapter


@dataclass
class BaggedResult:
    """`train.bagging` adapters, member i trained with seed `seed + i` on its own validation split, and
    their ensemble (`adapter`): one averaged map when the members are affine, else their mean output."""

    adapter: QueryAdapter
    members: list[TrainResult]
    seeds: list[int]
    splits: list[Split]
    interpolation: float = 1.0  # applied to every member (and so to the ensemble); selection saw alpha 1

    def summary(self) -> dict[str, Any]:
        """Member 0's summary (the single-seed run, as without bagging) plus every member's validation."""
        out = {**self.members[0].summary(), "interpolation": self.interpolation}
        if len(self.members) > 1:
            out["seconds"] = round(sum(m.seconds for m in self.members), 3)
            out["members"] = [
                {
                    "seed": seed,
                    "best_epoch": m.best_epoch,
                    "val_hit@5": m.best["hit@5"],
                    "baseline_val_hit@5": m.baseline["hit@5"],
                    "val_mrr@10": m.best["mrr@10"],
                }
                for seed, m in zip(self.seeds, self.members)
            ]
            out["members_mean_val_hit@5"] = float(np.mean([m.best["hit@5"] for m in self.members]))
            out["members_mean_baseline_val_hit@5"] = float(np.mean([m.baseline["hit@5"] for m in self.members]))
        return out


def train_bagged(params: TrainParams, data: TrainingData, validation: str = "auto") -> BaggedResult:
    """Train `params.bagging` adapters on as many seeded validation splits (`make_split`'s `validation`)
    and ensemble them, each member interpolated toward raw cosine by `params.interpolation_for` its split's
    validation. With bagging 1 and interpolation 1 this is exactly one `train_adapter` run with `params.seed`."""
    seeds = [params.seed + i for i in range(params.bagging)]
    members, splits = [], []
    for seed in seeds:
        member_params = params if seed == params.seed else params.model_copy(update={"seed": seed})
        split = make_split(data, params, seed, validation)
        refit = params.refit and split.validation == "real"
        member = train_adapter(refit_selection_params(member_params) if refit else member_params, data, split)
        if refit:
            member = refit_adapter(member_params, data, member)
        members.append(member)
        splits.append(split)
    alpha = params.interpolation_for(splits[0].validation)
    members = [
        dataclasses.replace(
            m,
            adapter=interpolate_toward_identity(m.adapter, alpha),
            selected_adapter=None
            if m.selected_adapter is None
            else interpolate_toward_identity(m.selected_adapter, alpha),
        )
        for m in members
    ]
    return BaggedResult(ensemble_adapters([m.adapter for m in members]), members, seeds, splits, alpha)
