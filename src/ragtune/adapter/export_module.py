"""The ragtune query adapter as a sentence-transformers module.

This file is self-contained (torch and sentence-transformers only): `ragtune.adapter.export` copies it into
every exported model as `ragtune_query_adapter.py`, so the export loads without ragtune installed.
It must compute exactly what `ragtune.adapter.model.QueryAdapter` computes (a test checks the two agree);
parameter names match, so a QueryAdapter state dict loads into it unchanged.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

try:  # sentence-transformers >= 6
    from sentence_transformers.base.modules.module import Module
except ImportError:  # pragma: no cover - 5.x layout
    # The pinned 6.x has no such module, and the name is bound above: mypy checks against 6.x only.
    from sentence_transformers.models.Module import Module  # type: ignore[import-not-found,no-redef]

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


class CentredLayerNorm(nn.Module):
    """LayerNorm without epsilon: `weight * sqrt(n) * normalize(z - mean(z)) + bias`."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(dim=-1, keepdim=True)
        return F.normalize(centred, dim=-1) * (math.sqrt(self.n) * self.weight) + self.bias


class QueryAdapterModule(Module):
    """Replaces `sentence_embedding` (n, dim) with the adapted, L2-normalised query embedding."""

    config_keys = ["dim", "kind", "hidden_dim", "n_hidden_layers", "dropout", "activation", "residual_scale", "members"]

    def __init__(
        self,
        dim: int,
        kind: str = "mlp",
        hidden_dim: int = 256,
        n_hidden_layers: int = 1,
        dropout: float = 0.0,
        activation: str = "gelu",
        residual_scale: float = 1.0,
        members: int = 1,
    ):
        super().__init__()
        self.dim, self.kind, self.hidden_dim = dim, kind, hidden_dim
        self.n_hidden_layers, self.dropout, self.activation = n_hidden_layers, dropout, activation
        self.residual_scale, self.members_count = residual_scale, members
        if members > 1:  # an ensemble: the normalised mean of the members' adapted vectors
            self.members = nn.ModuleList(
                QueryAdapterModule(dim, kind, hidden_dim, n_hidden_layers, dropout, activation, residual_scale)
                for _ in range(members)
            )
        elif kind == "linear":
            self.delta = nn.Parameter(torch.zeros(dim, dim))
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            blocks: list[nn.Module] = []
            width = dim
            for _ in range(n_hidden_layers):
                blocks += [
                    nn.Linear(width, hidden_dim),
                    CentredLayerNorm(hidden_dim),
                    ACTIVATIONS[activation](),
                    nn.Dropout(dropout),
                ]
                width = hidden_dim
            self.hidden = nn.Sequential(*blocks)
            self.out = nn.Linear(width, dim)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        if self.members_count > 1:
            y = torch.stack([cast(QueryAdapterModule, member).adapt(x) for member in self.members]).mean(dim=0)
        elif self.kind == "linear":
            y = x + x @ self.delta.T + self.bias
        else:
            y = x + self.residual_scale * self.out(self.hidden(x))
        return F.normalize(y, dim=-1)

    def forward(self, features: dict, **kwargs) -> dict:
        features["sentence_embedding"] = self.adapt(features["sentence_embedding"])
        return features

    def get_config_dict(self) -> dict:
        # `members` names the ModuleList of an ensemble; the saved config holds the count.
        return {**{k: getattr(self, k) for k in self.config_keys if k != "members"}, "members": self.members_count}

    def get_embedding_dimension(self) -> int:
        return self.dim

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        init_defaults: dict[str, Any] | None = None,  # sentence-transformers >= 6.2 passes it; the config has all
        **kwargs: Any,
    ) -> QueryAdapterModule:
        hub: dict[str, Any] = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        config = cls.load_config(model_name_or_path, **hub)
        model = cls(**{k: v for k, v in config.items() if k in cls.config_keys})
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=model, **hub)
