"""Export a trained adapter as a sentence-transformers model with a query/document `Router`.

The query route is the frozen embedder followed by the adapter; the document route is the frozen
embedder alone (same module objects, saved once). So, for any vector store:

    model = SentenceTransformer(path)            # trust_remote_code=True for an MLP adapter, see below
    model.encode_query(q)      # adapted query vector
    model.encode_document(d)   # the plain document vector the index already holds

How the adapter is expressed:
- `linear`, and `mlp` without hidden layers, are one affine map: a built-in `Dense` (+ `Normalize`),
  which loads with plain `SentenceTransformer(path)`.
- an `mlp` with hidden layers adds a residual branch to its input, which no built-in module can
  express; it is the module in `ragtune_query_adapter.py`, copied into the export. sentence-transformers
  >= 6 imports a module class from outside its own package only with `trust_remote_code=True`, so
  such an export loads with `SentenceTransformer(path, trust_remote_code=True)` (ragtune itself is
  not needed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import QueryAdapter

MODULE_FILE = "ragtune_query_adapter.py"
MODULE_TYPE = "ragtune_query_adapter.QueryAdapterModule"
EXPORT_INFO = "ragtune_export.json"


def needs_remote_code(adapter: QueryAdapter) -> bool:
    """True when the export carries its own module file (an MLP with hidden layers)."""
    return adapter.config.kind == "mlp" and adapter.config.n_hidden_layers > 0


def affine_form(adapter: QueryAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with adapter(x) == normalize(W x + b), for adapters without hidden layers."""
    cfg = adapter.config
    eye = torch.eye(cfg.dim)
    with torch.no_grad():
        if cfg.kind == "linear":
            return eye + adapter.delta.detach().cpu(), adapter.bias.detach().cpu().clone()
        if cfg.n_hidden_layers == 0:
            s = cfg.residual_scale
            return eye + s * adapter.out.weight.detach().cpu(), s * adapter.out.bias.detach().cpu()
    raise ValueError("an MLP with hidden layers has no affine form")


def adapter_modules(adapter: QueryAdapter) -> list[nn.Module]:
    """The sentence-transformers modules that apply `adapter` to `sentence_embedding`."""
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    cfg = adapter.config
    if not needs_remote_code(adapter):
        weight, bias = affine_form(adapter)
        dense = Dense(
            cfg.dim,
            cfg.dim,
            bias=True,
            activation_function=nn.Identity(),
            init_weight=weight.contiguous(),
            init_bias=bias.contiguous(),
        )
        return [dense, Normalize()]
    from .export_module import QueryAdapterModule

    module = QueryAdapterModule(
        dim=cfg.dim,
        kind=cfg.kind,
        hidden_dim=cfg.hidden_dim,
        n_hidden_layers=cfg.n_hidden_layers,
        dropout=cfg.dropout,
        activation=cfg.activation,
        residual_scale=cfg.residual_scale,
        members=cfg.members,
    )
    module.load_state_dict({k: v.detach().cpu() for k, v in adapter.state_dict().items()})
    return [module.eval()]


def build_router_model(
    adapter: QueryAdapter, base_model, query_prompt: str = "", document_prompt: str = "", normalize: bool = True
):
    """A SentenceTransformer whose query route is `base_model`'s modules + the adapter and whose
    document route is `base_model`'s modules alone. `normalize` mirrors the embed stage: the
    embeddings the adapter was trained on were L2-normalised."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Router

    base_modules = list(base_model.children())
    if normalize and not any(isinstance(m, Normalize) for m in base_modules):
        base_modules.append(Normalize())
    dim = base_model.get_embedding_dimension()
    if dim != adapter.config.dim:
        raise ValueError(f"the embedder gives {dim}-d vectors but the adapter expects {adapter.config.dim}-d")
    router = Router.for_query_document(
        query_modules=base_modules + adapter_modules(adapter), document_modules=base_modules, default_route="document"
    )
    return SentenceTransformer(
        modules=[router],
        device="cpu",
        prompts={"query": query_prompt, "document": document_prompt},
        similarity_fn_name="cosine",
    )


def export_sentence_transformer(
    adapter: QueryAdapter,
    out_dir: str | os.PathLike[str],
    base_model,
    query_prompt: str = "",
    document_prompt: str = "",
    normalize: bool = True,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the Router model to `out_dir`, replacing it only once the new export is complete."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = build_router_model(adapter, base_model, query_prompt, document_prompt, normalize)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save(str(tmp), create_model_card=False)
        remote = needs_remote_code(adapter)
        if remote:
            shutil.copyfile(Path(__file__).with_name("export_module.py"), tmp / MODULE_FILE)
            _retype_custom_module(tmp)
        (tmp / EXPORT_INFO).write_text(
            json.dumps(
                {
                    "adapter": adapter.config.to_dict(),
                    "trust_remote_code": remote,
                    "usage": (
                        "SentenceTransformer(path"
                        + (", trust_remote_code=True" if remote else "")
                        + ").encode_query(queries) / .encode_document(documents)"
                    ),
                    **(info or {}),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _retype_custom_module(root: Path) -> None:
    """Point the saved configs at the module file shipped in the export instead of `ragtune.*`."""
    ours = "ragtune.adapter.export_module.QueryAdapterModule"
    for cfg in list(root.rglob("router_config.json")) + list(root.rglob("modules.json")):
        text = cfg.read_text(encoding="utf-8")
        if ours in text:
            cfg.write_text(text.replace(ours, MODULE_TYPE), encoding="utf-8")


def load_exported(path: str | os.PathLike[str], device: str = "cpu"):
    """Load an export made by `export_sentence_transformer` (trusting its module file if it has one)."""
    from sentence_transformers import SentenceTransformer

    info_path = Path(path) / EXPORT_INFO
    remote = (
        json.loads(info_path.read_text(encoding="utf-8")).get("trust_remote_code", False)
        if info_path.is_file()
        else False
    )
    return SentenceTransformer(str(path), device=device, trust_remote_code=remote, local_files_only=True)
