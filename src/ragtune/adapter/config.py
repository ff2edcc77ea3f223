"""params.yaml's `train` and `tune` sections: the adapter, its loss and optimiser, and the search over them.

`TUNABLE` names the `train` keys the tune stage may search (`tune.search_space`); the train stage overlays the
best values found (`load_tuned`, `apply_overrides`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..credentials import ENV_NAME, from_env
from ..errors import RagtuneError
from ..io import read_json
from ..params import Section, parse_section
from .hard_negatives import MiningRule
from .model import Activation, AdapterConfig, AdapterKind, LossName

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
    best = read_json(path)
    return apply_overrides(params, best.get("params", {}), source=str(path)), best


def apply_overrides(params: TrainParams, overrides: dict[str, Any], source: str = "overrides") -> TrainParams:
    """`params` with tuned values; an unknown key or a bad value is an error naming `source`."""
    unknown = sorted(set(overrides) - set(TrainParams.model_fields))
    if unknown:
        raise RagtuneError(f"{source}: unknown train key(s) {unknown}; rerun the tune stage")
    merged = {**params.model_dump(), **overrides}
    return parse_section(merged, "train", TrainParams, source)


Scalar = str | int | float | bool


class SearchDim(Section):
    """One hyperparameter's range (`float`/`int`, optionally on a log scale) or its `choices`."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Scalar] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SearchDim:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical dimension takes `choices` only")
        else:
            if self.low is None or self.high is None or self.choices is not None:
                raise ValueError(f"a {self.type} dimension takes `low` and `high` (no `choices`)")
            if self.low > self.high:
                raise ValueError(f"low {self.low} is above high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError("a log-scale range needs low > 0")
            if self.log and self.step is not None:
                raise ValueError("`step` and `log` cannot be combined")
            if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("an int dimension needs whole-number bounds")
        return self

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a float or int dimension (the validator makes both present)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} dimension has no low/high")
        return self.low, self.high

    def extremes(self) -> list[Scalar]:
        """The values that must be valid `train` values for the whole range to be."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        low, high = self.bounds()
        return [cast(low), cast(high)]


DEFAULT_SEARCH_SPACE: dict[str, SearchDim] = {
    "kind": SearchDim(type="categorical", choices=["mlp", "linear"]),
    "loss": SearchDim(type="categorical", choices=["in_batch", "full_corpus"]),
    "hidden_dim": SearchDim(type="categorical", choices=[64, 128, 256]),
    "n_hidden_layers": SearchDim(type="int", low=0, high=2),
    "dropout": SearchDim(type="float", low=0.0, high=0.3),
    "lr": SearchDim(type="float", low=3e-5, high=3e-3, log=True),
    "weight_decay": SearchDim(type="float", low=1e-4, high=0.3, log=True),
    "temperature": SearchDim(type="float", low=0.01, high=0.2, log=True),
    "identity_weight": SearchDim(type="float", low=1e-3, high=3.0, log=True),
    "batch_size": SearchDim(type="categorical", choices=[64, 128, 256, 512]),
}


class TuneParams(Section):
    """params.yaml `tune`: how long to search, where the study lives, and the search space."""

    n_trials: int = Field(50, ge=1, le=100_000)
    timeout_s: float | None = Field(270.0, gt=0)
    seed: int = 42
    n_workers: int = Field(1, ge=1, le=256)
    # null: a journal file in data/tune/storage/; a path; or a database URL without a password. A URL with one
    # (postgresql://user:PASSWORD@host/db) is refused here: name the environment variable holding it in
    # storage_env instead, which then replaces storage.
    storage: str | None = None
    storage_env: str | None = Field(None, pattern=ENV_NAME)
    study_name: str = Field("ragtune", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    resume: bool = True
    pruning: bool = True
    pruner_startup_trials: int = Field(5, ge=0)
    pruner_warmup_epochs: int = Field(2, ge=0)
    sampler_startup_trials: int = Field(10, ge=0)
    real_folds: int = Field(0, ge=0, le=100)
    search_space: dict[str, SearchDim] = Field(default_factory=lambda: dict(DEFAULT_SEARCH_SPACE))

    @field_validator("real_folds")
    @classmethod
    def _real_folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError(
                "1 fold would validate on the questions it trains on; use 0 (one seeded "
                "train.real_val_fraction slice) or 2 and more"
            )
        return v

    def storage_url(self) -> str | None:
        """The storage to open: the URL in storage_env's variable, else storage (None: the default journal)."""
        if self.storage_env:
            return from_env(self.storage_env, "tune.storage_env", "postgresql://user:PASSWORD@host:5432/optuna")
        return self.storage

    @model_validator(mode="after")
    def _one_storage(self) -> TuneParams:
        if self.storage and self.storage_env:
            raise ValueError("set storage or storage_env, not both (storage_env's variable replaces storage)")
        return self

    @model_validator(mode="after")
    def _space_names_train_keys(self) -> TuneParams:
        unknown = sorted(set(self.search_space) - TUNABLE)
        if unknown:
            raise ValueError(f"search_space: {unknown} are not tunable train keys; tunable: {sorted(TUNABLE)}")
        for name, dim in self.search_space.items():
            for value in dim.extremes():
                try:
                    TrainParams(**{name: value})
                except ValueError as exc:
                    first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
                    raise ValueError(f"search_space.{name}: {value!r} is not a valid train.{name} ({first})") from None
        return self
