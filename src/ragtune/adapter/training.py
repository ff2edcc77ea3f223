"""Training one query adapter: the loop, model selection over epochs, and the refit on every row.

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
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .config import TrainParams
from .data import TrainingData
from .losses import identity_distance, make_loss
from .model import QueryAdapter, build_adapter
from .splits import Split, split_metrics

log = logging.getLogger(__name__)


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


@dataclass
class _Batches:
    """What every training step of one run reads: the rows to shuffle, the loss, and the optional per-row
    extras (mined negatives (n, h), real rows' relevant chunks (n, r) and loss weights (n,))."""

    train_rows: torch.Tensor  # (n_train,) int64 row indices
    loss_fn: Callable[..., torch.Tensor]
    negatives: torch.Tensor | None
    relevant: torch.Tensor | None
    weights: torch.Tensor | None


def _real_rows(
    params: TrainParams, data: TrainingData, split: Split, device: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weights (n,) float32, relevant (n, r)) for data with real questions: real rows weighted against synthetic
    ones, their other relevant chunks masked. Without real questions (None, None): the loss is then exactly the
    synthetic-only one."""
    if data.row_real is None or not (data.row_real >= 0).any():
        return None, None
    weight = real_row_weight(params.real_weight, data.row_real[split.train])
    weights = torch.where(torch.as_tensor(data.row_real >= 0, device=device), weight, 1.0).to(torch.float32)
    return weights, data.relevant


def _train_epoch(
    adapter: QueryAdapter,
    optimiser: torch.optim.Optimizer,
    data: TrainingData,
    batches: _Batches,
    order: torch.Tensor,
    params: TrainParams,
) -> float:
    """One pass over the training rows in `order` (batch_size at a time); the mean batch loss."""
    adapter.train()
    loss_sum = torch.zeros((), device=order.device)
    n_batches = 0
    for s in range(0, len(order), params.batch_size):
        batch = order[s : s + params.batch_size]
        if len(batch) < 2:  # a lone question has no in-batch negatives; it rejoins next epoch
            continue
        query_emb = data.question_emb[batch]
        adapted = adapter(query_emb)
        loss = batches.loss_fn(
            adapted,
            data.gold_rows[batch],
            data.corpus_emb,
            data.text_group,
            None if batches.negatives is None else batches.negatives[batch],
            None if batches.relevant is None else batches.relevant[batch],
            None if batches.weights is None else batches.weights[batch],
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
    return float(loss_sum) / max(n_batches, 1)


def _history_row(epoch: int, train_loss: float, metrics: dict[str, float], seconds: float) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in metrics.items()}, "seconds": seconds}


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
        weights, relevant = _real_rows(params, data, split, device)
        batches = _Batches(torch.as_tensor(split.train, device=device), loss_fn, negatives, relevant, weights)

        fixed = epochs is not None  # refit: a fixed number of epochs, the last state kept, nothing validated
        baseline = {} if fixed else split_metrics(adapter, data, split)
        history = [_history_row(0, float("nan"), baseline, 0.0)]
        stopping = EarlyStopping(baseline, params.patience)
        best_state = copy.deepcopy(adapter.state_dict())
        for epoch in range(1, (epochs if epochs is not None else params.max_epochs) + 1):
            t_epoch = time.perf_counter()
            order = batches.train_rows[torch.randperm(len(batches.train_rows), generator=shuffle).to(device)]
            train_loss = _train_epoch(adapter, optimiser, data, batches, order, params)
            metrics = {} if fixed else split_metrics(adapter, data, split)
            row = _history_row(epoch, train_loss, metrics, time.perf_counter() - t_epoch)
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
