"""The query adapter: its config, the model, ensembling, saving, loading and applying it.

The adapter maps a frozen query embedding to a new query embedding; documents are never touched, so
an existing vector index stays valid. Two kinds:

- `mlp`: `normalize(x + residual_scale * branch(x))`, where `branch` is 0-3 hidden blocks
  (Linear -> LayerNorm -> activation -> Dropout) and a last Linear that starts at zero. An untrained
  adapter is therefore the identity and retrieves exactly like raw cosine.
- `linear`: `normalize((I + delta) x + bias)`, the identity-initialised d x d matrix other adapter
  tools ship. It is stored as `I + delta` so that weight decay pulls it toward the identity (decay on a
  plain matrix only rescales it, which changes no ranking once the output is normalised).

The LayerNorm has no epsilon (it divides by the exact norm of the centred vector): that makes the
sentence-transformers export reproduce the adapter to float rounding.

The losses that train it are in `ragtune.adapter.losses`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import RagtuneError

AdapterKind = Literal["mlp", "linear"]


Activation = Literal["gelu", "relu", "silu", "tanh"]


LossName = Literal["full_corpus", "in_batch"]


ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


STATE_FILE = "adapter.pt"


CONFIG_FILE = "config.json"


FORMAT = "ragtune.query_adapter/v1"


@dataclass(frozen=True)
class AdapterConfig:
    """Everything needed to rebuild a QueryAdapter (saved as config.json next to the state dict)."""

    dim: int
    kind: AdapterKind = "mlp"
    hidden_dim: int = 256
    n_hidden_layers: int = 1
    dropout: float = 0.1
    activation: Activation = "gelu"
    residual_scale: float = 1.0
    members: int = 1  # > 1: an ensemble of that many MLPs, output the normalised mean of theirs

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "linear"):
            raise ValueError(f"unknown adapter kind {self.kind!r}; use 'mlp' or 'linear'")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}")
        if not 0 <= self.n_hidden_layers <= 3:
            raise ValueError(f"n_hidden_layers must be 0-3, got {self.n_hidden_layers}")
        if self.dim < 1 or self.hidden_dim < 1:
            raise ValueError("dim and hidden_dim must be positive")
        if self.members < 1 or (self.members > 1 and not self.has_hidden_layers):
            raise ValueError(
                f"members must be 1, or > 1 only for an mlp with hidden layers (got {self.members}); "
                "affine adapters are averaged into one map"
            )

    @property
    def has_hidden_layers(self) -> bool:
        return self.kind == "mlp" and self.n_hidden_layers > 0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AdapterConfig:
        fields = {k: v for k, v in raw.items() if k != "format"}
        return cls(**fields)


class CentredLayerNorm(nn.Module):
    """LayerNorm without epsilon: `gain * sqrt(n) * normalize(z - mean(z)) + bias`, input (..., n)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, z: Tensor) -> Tensor:
        centred = z - z.mean(dim=-1, keepdim=True)
        return F.normalize(centred, dim=-1) * (math.sqrt(self.n) * self.weight) + self.bias


class QueryAdapter(nn.Module):
    """forward(query_emb (n, d)) -> adapted query embeddings (n, d), L2-normalised."""

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        d = config.dim
        if config.members > 1:
            single = dataclasses.replace(config, members=1)
            self.members = nn.ModuleList(QueryAdapter(single) for _ in range(config.members))
        elif config.kind == "linear":
            self.delta = nn.Parameter(torch.zeros(d, d))
            self.bias = nn.Parameter(torch.zeros(d))
        else:
            blocks: list[nn.Module] = []
            width = d
            for _ in range(config.n_hidden_layers):
                blocks += [
                    nn.Linear(width, config.hidden_dim),
                    CentredLayerNorm(config.hidden_dim),
                    ACTIVATIONS[config.activation](),
                    nn.Dropout(config.dropout),
                ]
                width = config.hidden_dim
            self.hidden = nn.Sequential(*blocks)
            self.out = nn.Linear(width, d)
            # Zero last layer: the branch adds nothing until trained, so training starts at raw cosine.
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def unnormalised(self, query_emb: Tensor) -> Tensor:
        """The adapted vector before L2 normalisation (rankings depend only on its direction)."""
        if self.config.members > 1:
            return torch.stack([member(query_emb) for member in self.members]).mean(dim=0)
        if self.config.kind == "linear":
            return query_emb + query_emb @ self.delta.T + self.bias
        return query_emb + self.config.residual_scale * self.out(self.hidden(query_emb))

    def forward(self, query_emb: Tensor) -> Tensor:
        return F.normalize(self.unnormalised(query_emb), dim=-1)


def build_adapter(config: AdapterConfig, seed: int) -> QueryAdapter:
    """A fresh adapter whose random initialisation depends only on `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return QueryAdapter(config)


def ensemble_adapters(adapters: Sequence[QueryAdapter]) -> QueryAdapter:
    """One adapter from several of the same configuration (in eval mode).

    Affine adapters (`linear`, or an `mlp` without hidden layers) compute `normalize(W x + b)` with W and b
    linear in the parameters, so the mean of the maps is again one map of the same kind: the parameters
    are averaged. MLPs with hidden layers become an ensemble whose output is the normalised mean of the
    members' outputs (adapted vectors (n, d) each).
    """
    if not adapters:
        raise ValueError("no adapters to ensemble")
    config = adapters[0].config
    if any(a.config != config for a in adapters):
        raise ValueError("cannot ensemble adapters of different configurations")
    if len(adapters) == 1:
        return adapters[0].eval()
    if not config.has_hidden_layers:
        out = QueryAdapter(config)
        states = [a.state_dict() for a in adapters]
        out.load_state_dict({k: torch.stack([s[k].detach().cpu() for s in states]).mean(dim=0) for k in states[0]})
        return out.eval()
    out = QueryAdapter(dataclasses.replace(config, members=len(adapters)))
    for slot, member in zip(out.members, adapters):
        slot.load_state_dict(member.state_dict())
    return out.eval()


@torch.no_grad()
def interpolate_toward_identity(adapter: QueryAdapter, alpha: float) -> QueryAdapter:
    """A copy of `adapter` that moves each query `alpha` of the way the trained one does (0 < alpha <= 1).

    The weight-space interpolation of WiSE-FT (Wortsman et al., 2022) between the starting point, raw
    cosine, and the trained adapter: for `linear` the map `I + alpha * delta`, `alpha * bias`; for `mlp`
    the last layer (zero at the start) scaled by alpha, i.e. `x + alpha * branch(x)`, in each member of an
    ensemble. Rankings of queries unlike the training questions move less; the configuration and export
    format stay as they are.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"interpolation alpha must be in (0, 1], got {alpha}")
    out = copy.deepcopy(adapter)
    if alpha == 1.0:
        return out
    for name, param in out.named_parameters():
        if moves_with_interpolation(name):
            param.mul_(alpha)
    return out


def moves_with_interpolation(name: str) -> bool:
    """Whether a QueryAdapter parameter scales with the interpolation alpha: the linear map's `delta` and
    `bias`, and the MLP's last layer (`out.*`, in every member); all of them are zero at the start."""
    return name in ("delta", "bias") or name.startswith("out.") or ".out." in name


def save_query_adapter(
    adapter: QueryAdapter, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> None:
    """Write `adapter.pt` (state dict) and `config.json` into directory `path`, each atomically."""
    import io

    from ..io import atomic_open, write_json

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    # Saved to memory first: torch names the archive's inner folder after the file it writes, and the random
    # name of a temporary file would make two saves of the same weights differ (and a rerun change dvc.lock).
    state = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in adapter.state_dict().items()}, state)
    with atomic_open(out / STATE_FILE, "wb") as fh:
        fh.write(state.getvalue())
    write_json(out / CONFIG_FILE, {**adapter.config.to_dict(), **(extra or {})})


def load_query_adapter(path: str | os.PathLike[str]) -> QueryAdapter:
    """Load a QueryAdapter saved by `save_query_adapter` (a directory with adapter.pt and config.json),
    in eval mode on the CPU."""
    root = Path(path)
    cfg_path, state_path = root / CONFIG_FILE, root / STATE_FILE
    if not cfg_path.is_file() or not state_path.is_file():
        raise RagtuneError(
            f"{root}: no adapter here (expected {CONFIG_FILE} and {STATE_FILE}); "
            "run the train stage first (dvc repro train)"
        )
    raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    if raw.get("format") != FORMAT:
        raise RagtuneError(f"{cfg_path}: format {raw.get('format')!r} is not {FORMAT!r}; retrain the adapter")
    known = set(AdapterConfig.__dataclass_fields__)
    config = AdapterConfig.from_dict({k: v for k, v in raw.items() if k in known or k == "format"})
    adapter = QueryAdapter(config)
    adapter.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    return adapter.eval()


@torch.no_grad()
def adapt_queries(adapter: QueryAdapter, query_emb: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Apply the adapter to a float matrix (n, d) in eval mode without gradients; float32 (n, d)."""
    was_training = adapter.training
    adapter.eval()
    try:
        device = next(adapter.parameters()).device
        q = torch.as_tensor(np.asarray(query_emb, dtype=np.float32))
        out = np.empty((q.shape[0], adapter.config.dim), dtype=np.float32)
        for s in range(0, q.shape[0], batch_size):
            out[s : s + batch_size] = adapter(q[s : s + batch_size].to(device)).cpu().numpy()
        return out
    finally:
        adapter.train(was_training)
