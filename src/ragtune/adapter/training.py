"""Training the query adapter: data loading, the seeded chunk-level validation split, and the loop.

The loop is AdamW with weight decay and gradient clipping; after each epoch Hit@5 is computed for
all validation questions at once (one batched product through `ragtune.search.dense`), and training
stops after `patience` epochs without improvement (`refit_patience` for a member that will be refit on its
real validation questions: by default none, the whole curve). The untrained adapter (the identity, i.e. raw
cosine) is epoch 0 of model selection, so the returned adapter is never worse than raw cosine on
validation. Same params, data and thread count -> bit-identical metrics.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from ..errors import DataError, RagtuneError
from ..params import Section
from .data import TrainingData
from .hard_negatives import MiningRule
from .losses import identity_distance, make_loss
from .model import Activation, AdapterConfig, AdapterKind, LossName, QueryAdapter, build_adapter
from .splits import Split, make_split, split_metrics

log = logging.getLogger(__name__)

# `train.interpolation: auto` without real validation questions. Synthetic questions are not the queries the
# adapter will serve; WiSE-FT's interpolation toward the start guards against that shift. 0.75 was the best of
# 1, 0.75, 0.5, 0.25 on the three development corpora together (README, "Interpolation toward raw cosine").
AUTO_INTERPOLATION = 0.75


class TrainParams(Section):
    """params.yaml `train`: the adapter, its loss and the optimiser. The tune stage searches over a
    subset of these keys (`tune.search_space`); the train stage overlays the best values found."""

    seed: int = 42
    val_fraction: float = Field(0.15, gt=0.0, le=0.5)
    # cap on validating chunks: every epoch scores each validation question against the whole corpus, so an
    # uncapped share of N chunks costs N^2 a pass (null: no cap; the default corpus' 15% is ~180 chunks)
    val_max_chunks: int | None = Field(2000, ge=1)
    use_tuned: bool = True
    # model
    kind: AdapterKind = "mlp"
    hidden_dim: int = Field(64, ge=4, le=16384)
    n_hidden_layers: int = Field(1, ge=0, le=3)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Activation = "gelu"
    residual_scale: float = Field(1.0, gt=0.0, le=100.0)
    # loss
    loss: LossName = "in_batch"
    temperature: float = Field(0.03, ge=0.001, le=10.0)
    identity_weight: float = Field(0.5, ge=0.0, le=1000.0)
    # optimiser
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0, le=100.0)
    batch_size: int = Field(512, ge=2, le=1_000_000)
    max_epochs: int = Field(30, ge=1, le=10_000)
    patience: int = Field(4, ge=1, le=10_000)
    grad_clip: float = Field(1.0, ge=0.0, le=1e6)  # max gradient norm; 0 turns clipping off
    # hard negatives (in_batch loss only: full_corpus already scores every chunk)
    hard_negatives: int = Field(0, ge=0, le=64)  # mined per question from raw-cosine ranks; 0: in-batch only
    hard_negative_min_rank: int = Field(10, ge=1, le=10_000)  # rank window (1-based, inclusive) they come from
    hard_negative_max_rank: int = Field(50, ge=1, le=10_000)
    hard_negative_margin: float = Field(0.05, ge=0.0, lt=1.0)  # score <= (1 - margin) * the gold chunk's
    hard_negative_skip_same_parent: bool = True  # never a chunk of the gold chunk's document
    # ensemble over validation splits: seeds seed..seed+bagging-1, one adapter each, shipped as their mean
    bagging: int = Field(1, ge=1, le=32)
    # the shipped adapter moves each query this share of the way the trained one does (WiSE-FT's
    # interpolation toward the start, raw cosine); auto: AUTO_INTERPOLATION when selection saw only synthetic
    # questions, 1 when it saw real ones (`interpolation_for`)
    interpolation: float | Literal["auto"] = "auto"
    # LLM questions whose chunk is not in raw cosine's top k are dropped (round-trip consistency);
    # no-model pseudo-queries are exempt; null: off
    round_trip_top_k: int | None = Field(20, ge=1, le=10_000)
    # labelled real training questions (fetch.jsonl.train_questions), when there are any
    # loss weight of a real question's row against a synthetic one's; auto: the real rows together weigh
    # as much as the synthetic ones (n_synthetic / n_real training rows), whatever their counts
    real_weight: float | Literal["auto"] = "auto"
    real_val_fraction: float = Field(0.3, gt=0.0, lt=1.0)  # seeded share of them that validates (selection, tune)
    # after selection on real validation questions, each member is retrained from its start on every row, its
    # validation questions included, for the epochs it selected (`refit_adapter`): few labelled questions
    # are too dear to leave a share of them out of the shipped adapter
    refit: bool = True
    # patience while a member that will be refit selects its epoch count on its real validation slice;
    # None: no early stopping, the best epoch of the whole curve up to max_epochs (a slice of a few dozen
    # questions gives a noisy curve, and `patience` stopped members at its first dip, epoch 1 or 2)
    refit_patience: int | None = Field(None, ge=1, le=10_000)
    # k-fold over the human test questions (`ragtune.adapter.folds`): 0 off; k >= 2 trains k out-of-fold adapters
    # that eval reports, and ships one trained on all of them
    folds: int = Field(0, ge=0, le=50)
    compare_linear: bool = False
    device: Literal["cpu", "auto", "cuda", "mps"] = "cpu"
    # CPU threads for torch while training; 0 leaves torch's default. The matrices are small, so one
    # thread is as fast on an idle machine and far faster on a busy one (no OpenMP barrier waits);
    # a fixed count also keeps metrics bit-identical across machines.
    threads: int = Field(1, ge=0, le=1024)

    def adapter_config(self, dim: int) -> AdapterConfig:
        return AdapterConfig(
            dim=dim,
            kind=self.kind,
            hidden_dim=self.hidden_dim,
            n_hidden_layers=self.n_hidden_layers,
            dropout=self.dropout,
            activation=self.activation,
            residual_scale=self.residual_scale,
        )

    def mining_rule(self) -> MiningRule:
        return MiningRule(
            count=self.hard_negatives,
            min_rank=self.hard_negative_min_rank,
            max_rank=self.hard_negative_max_rank,
            relative_margin=self.hard_negative_margin,
            skip_same_parent=self.hard_negative_skip_same_parent,
        )

    @field_validator("interpolation")
    @classmethod
    def _interpolation(cls, v: float | str) -> float | str:
        if v != "auto" and not 0.0 < float(v) <= 1.0:
            raise ValueError("must be 'auto' or a number in (0, 1] (1: the trained adapter as it is)")
        return v

    def interpolation_for(self, validation: str) -> float:
        """The interpolation weight for members selected on `validation` ("real" or "synthetic")."""
        if self.interpolation != "auto":
            return float(self.interpolation)
        return 1.0 if validation == "real" else AUTO_INTERPOLATION

    @field_validator("folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("1 fold leaves nothing to train on; use 0 (off) or at least 2")
        return v

    @model_validator(mode="after")
    def _window(self) -> TrainParams:
        if self.hard_negative_max_rank < self.hard_negative_min_rank:
            raise ValueError(
                f"hard_negative_max_rank ({self.hard_negative_max_rank}) is below "
                f"hard_negative_min_rank ({self.hard_negative_min_rank})"
            )
        return self


# Keys the tune stage may search over (the rest say how to run, not what to train).
TUNABLE = frozenset(
    {
        "kind",
        "hidden_dim",
        "n_hidden_layers",
        "dropout",
        "activation",
        "residual_scale",
        "loss",
        "temperature",
        "identity_weight",
        "lr",
        "weight_decay",
        "batch_size",
        "grad_clip",
        "hard_negatives",
        "hard_negative_min_rank",
        "hard_negative_max_rank",
        "hard_negative_margin",
        "real_weight",
    }
)


def _selection_key(m: dict[str, float]) -> tuple[float, float]:
    # Hit@5 decides; MRR@10 breaks ties (validation sets are small, so Hit@5 ties are common).
    return (m["hit@5"], m["mrr@10"])


class EarlyStopping:
    """Model selection over epochs: the best validation metrics so far (a strictly better `(Hit@5, MRR@10)`
    wins, so ties keep the earlier epoch) and whether `patience` epochs in a row brought no better ones."""

    def __init__(self, baseline: dict[str, float], patience: int):
        self.best, self.best_epoch, self.patience, self.stale = baseline, 0, patience, 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record `epoch`'s validation metrics; True when they are the new best."""
        if _selection_key(metrics) > _selection_key(self.best):
            self.best, self.best_epoch, self.stale = metrics, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.stale >= self.patience

    @classmethod
    def replay(cls, history: list[dict[str, float]], patience: int) -> int:
        """The epoch selection picks from `history` (`TrainResult.history`, epoch 0 first) under `patience`:
        what a run with that patience would have selected, read off a longer run with the same seed."""

        def metrics(row: dict[str, float]) -> dict[str, float]:
            return {k[4:]: v for k, v in row.items() if k.startswith("val_")}

        stopping = cls(metrics(history[0]), patience)
        for row in history[1:]:
            stopping.update(int(row["epoch"]), metrics(row))
            if stopping.exhausted:
                break
        return stopping.best_epoch


@dataclass
class TrainResult:
    adapter: QueryAdapter  # the selected state (epoch `best_epoch`), eval mode
    history: list[dict[str, float]]  # one row per epoch; epoch 0 is the untrained identity
    best_epoch: int
    best: dict[str, float]  # validation metrics of the selected state
    baseline: dict[str, float]  # validation metrics of raw cosine (epoch 0)
    seconds: float
    # `refit_adapter`: the adapter was retrained on its validation questions too, so `best` is from before
    refit: bool = False
    # `refit_adapter`: the adapter as selected, before it trained on its validation questions (None: not refit)
    selected_adapter: QueryAdapter | None = None

    @property
    def held_out_adapter(self) -> QueryAdapter:
        """The adapter that never trained on this run's validation questions (before any refit)."""
        return self.adapter if self.selected_adapter is None else self.selected_adapter

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"val_{k}": v for k, v in self.best.items()}
        out.update({f"baseline_val_{k}": v for k, v in self.baseline.items()})
        out.update(
            best_epoch=self.best_epoch,
            epochs_run=len(self.history) - 1,
            seconds=round(self.seconds, 3),
            refit=self.refit,
        )
        return out


EpochCallback = Callable[[int, dict[str, float]], None]


def resolve_device(preference: str) -> str:
    if preference == "auto":
        from ..embedding.embedder import pick_device

        return pick_device("auto")
    return preference


def real_row_weight(setting: float | str, row_real: np.ndarray) -> float:
    """The loss weight of a real row: the number given, or for `auto` n_synthetic / n_real of the training
    rows `row_real` (-1: synthetic), so that real and synthetic rows weigh the same in all (1 when either
    side is empty)."""
    if setting != "auto":
        return float(setting)
    n_real = int((row_real >= 0).sum())
    n_synthetic = len(row_real) - n_real
    return n_synthetic / n_real if n_real and n_synthetic else 1.0


def train_adapter(
    params: TrainParams,
    data: TrainingData,
    split: Split,
    on_epoch: EpochCallback | None = None,
    epochs: int | None = None,
) -> TrainResult:
    """Train one adapter; `on_epoch(epoch, row)` is called after each epoch's validation (the tuner
    reports to Optuna there and may raise to prune). With `epochs`, train exactly that many epochs on
    `split.train` and keep the last state: no validation, no selection (`refit_adapter`)."""
    if len(split.train) == 0 or (split.n_validation == 0 and epochs is None):
        raise DataError("the training or validation split is empty; synthesize more questions")
    previous_threads = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(params.threads)
    try:
        negatives = None
        if params.hard_negatives > 0 and params.loss == "in_batch":
            negatives = data.hard_negatives(params.mining_rule())
        return _train(params, data, split, on_epoch, negatives, epochs)
    finally:
        torch.set_num_threads(previous_threads)


def refit_selection_params(params: TrainParams) -> TrainParams:
    """`params` for the selection run of a member that `refit_adapter` will retrain: `refit_patience` in place of
    `patience` (None: every epoch up to max_epochs, the best of the whole curve)."""
    return params.model_copy(update={"patience": params.refit_patience or params.max_epochs})


def refit_adapter(params: TrainParams, data: TrainingData, selected: TrainResult) -> TrainResult:
    """`selected`'s run repeated from its start (same seed: same initialisation and shuffles) on every row of
    `data`, its validation questions included, for the `selected.best_epoch` epochs that selection chose.
    The selection's history and validation metrics are kept (the refit adapter has no held-out questions)."""
    if selected.best_epoch == 0:  # selection kept raw cosine: so does the refit
        return dataclasses.replace(selected, refit=True, selected_adapter=selected.adapter)
    every = Split(train=np.arange(len(data.question_ids)), val=np.zeros(0, dtype=np.int64))
    fitted = train_adapter(params, data, every, epochs=selected.best_epoch)
    return dataclasses.replace(
        selected,
        adapter=fitted.adapter,
        seconds=selected.seconds + fitted.seconds,
        refit=True,
        selected_adapter=selected.adapter,
    )


def _train(
    params: TrainParams,
    data: TrainingData,
    split: Split,
    on_epoch: EpochCallback | None,
    negatives: torch.Tensor | None,
    epochs: int | None = None,
) -> TrainResult:
    t0 = time.perf_counter()
    device = resolve_device(params.device)
    data = data.to(device)
    if negatives is not None:
        negatives = negatives.to(device)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, then restore
        torch.manual_seed(params.seed)
        adapter = build_adapter(params.adapter_config(data.dim), params.seed).to(device)
        loss_fn = make_loss(params.loss, params.temperature)
        optimiser = torch.optim.AdamW(adapter.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        shuffle = torch.Generator().manual_seed(params.seed)
        train_rows = torch.as_tensor(split.train, device=device)
        # Real rows: weighted against synthetic ones, their other relevant chunks masked. Without real
        # questions neither is passed, and the loss is exactly the synthetic-only one.
        weights = relevant = None
        if data.row_real is not None and (data.row_real >= 0).any():
            relevant = data.relevant
            weight = real_row_weight(params.real_weight, data.row_real[split.train])
            weights = torch.where(torch.as_tensor(data.row_real >= 0, device=device), weight, 1.0).to(torch.float32)

        fixed = epochs is not None  # refit: a fixed number of epochs, the last state kept, nothing validated
        baseline = {} if fixed else split_metrics(adapter, data, split)
        history = [
            {"epoch": 0, "train_loss": float("nan"), **{f"val_{k}": v for k, v in baseline.items()}, "seconds": 0.0}
        ]
        stopping = EarlyStopping(baseline, params.patience)
        best_state = copy.deepcopy(adapter.state_dict())
        for epoch in range(1, (epochs if fixed else params.max_epochs) + 1):
            t_epoch = time.perf_counter()
            adapter.train()
            order = train_rows[torch.randperm(len(train_rows), generator=shuffle).to(device)]
            loss_sum = torch.zeros((), device=device)
            n_batches = 0
            for s in range(0, len(order), params.batch_size):
                batch = order[s : s + params.batch_size]
                if len(batch) < 2:  # a lone question has no in-batch negatives; it rejoins next epoch
                    continue
                query_emb = data.question_emb[batch]
                adapted = adapter(query_emb)
                loss = loss_fn(
                    adapted,
                    data.gold_rows[batch],
                    data.corpus_emb,
                    data.text_group,
                    None if negatives is None else negatives[batch],
                    None if relevant is None else relevant[batch],
                    None if weights is None else weights[batch],
                )
                if params.identity_weight > 0:
                    loss = loss + params.identity_weight * identity_distance(adapted, query_emb)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if params.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(adapter.parameters(), params.grad_clip)
                optimiser.step()
                loss_sum += loss.detach()
                n_batches += 1
            metrics = {} if fixed else split_metrics(adapter, data, split)
            row = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / max(n_batches, 1),
                **{f"val_{k}": v for k, v in metrics.items()},
                "seconds": time.perf_counter() - t_epoch,
            }
            history.append(row)
            if not math.isfinite(row["train_loss"]):
                log.warning(
                    "training diverged at epoch %d (loss %s); keeping epoch %d",
                    epoch,
                    row["train_loss"],
                    stopping.best_epoch,
                )
                break
            if fixed:  # the last finite state
                stopping.best_epoch, best_state = epoch, copy.deepcopy(adapter.state_dict())
                continue
            if stopping.update(epoch, metrics):
                best_state = copy.deepcopy(adapter.state_dict())
            if on_epoch is not None:
                on_epoch(epoch, row)
            if stopping.exhausted:
                break
    adapter.load_state_dict(best_state)
    adapter.eval()
    return TrainResult(
        adapter=adapter.cpu(),
        history=history,
        best_epoch=stopping.best_epoch,
        best=stopping.best,
        baseline=baseline,
        seconds=time.perf_counter() - t0,
    )


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
    from .model import ensemble_adapters, interpolate_toward_identity

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


def load_tuned(params: TrainParams, best_path: str | Path) -> tuple[TrainParams, dict[str, Any]]:
    """`params` with the tune stage's best values (data/tune/best.json) when `use_tuned`, and best.json."""
    if not params.use_tuned:
        return params, {}
    path = Path(best_path)
    if not path.is_file():
        raise RagtuneError(
            f"{path} not found: run the tune stage first, or set train.use_tuned: false "
            "to train the params.yaml configuration"
        )
    from ..io import read_json

    best = read_json(path)
    return apply_overrides(params, best.get("params", {}), source=str(path)), best


def apply_overrides(params: TrainParams, overrides: dict[str, Any], source: str = "overrides") -> TrainParams:
    """`params` with tuned values; an unknown key or a bad value is an error naming `source`."""
    unknown = sorted(set(overrides) - set(TrainParams.model_fields))
    if unknown:
        raise RagtuneError(f"{source}: unknown train key(s) {unknown}; rerun the tune stage")
    from ..params import parse_section

    merged = {**params.model_dump(), **overrides}
    return parse_section(merged, "train", TrainParams, source)
