"""Export a trained adapter as a sentence-transformers model that cannot hand out the wrong vector in silence.

Layout of `out_dir` (format 2):

    out_dir/                 a query/document `Router` with no default route:
                             encode_query(q)        -> adapted query vector
                             encode_document(d)     -> the plain document vector the index already holds
                             encode(x)              -> ValueError naming task='query' / task='document'
    out_dir/query/           the query encoder alone (the embedder, then the adapter): a plain
                             SentenceTransformer whose encode(q) is the adapted vector, for wrappers that
                             cannot pass a task (LlamaIndex, Chroma); the Router's routes load its modules,
                             so the weights are stored once.

A Router with a default route (sentence-transformers' `for_query_document` default is "document") makes
the most common call, `model.encode(question)`, return the unadapted vector without a word: LangChain's
`HuggingFaceEmbeddings.embed_query` did exactly that (issue 29). Without one, every task-less call fails
and says what to pass; a wrapper that can pass `task` (LangChain's `query_encode_kwargs`, Haystack's
`encode_kwargs`) gets both sides from the root, and one that cannot uses `query/` for questions and the
base model for documents.

How the adapter is expressed:
- `linear`, and `mlp` without hidden layers, are one affine map: a built-in `Dense` (+ `Normalize`),
  which loads with plain `SentenceTransformer(path)`.
- an `mlp` with hidden layers adds a residual branch to its input, which no built-in module can
  express; it is the module in `ragtune_query_adapter.py`, copied into the export (root and `query/`).
  sentence-transformers >= 6 imports a module class from outside its own package only with
  `trust_remote_code=True`, so such an export loads with `SentenceTransformer(path, trust_remote_code=True)`
  (ragtune itself is not needed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import RagtuneError
from ..io import apply_umask_modes
from .model import QueryAdapter

if TYPE_CHECKING:
    from sentence_transformers.base.modules.module import Module

MODULE_FILE = "ragtune_query_adapter.py"
MODULE_TYPE = "ragtune_query_adapter.QueryAdapterModule"
EXPORT_INFO = "ragtune_export.json"
QUERY_DIR = "query"  # the query encoder alone, inside the export
# 1: a Router defaulting to the document route (encode() of a question gave the plain vector);
# 2: no default route, and the query encoder alone in query/.
FORMAT = 2
log = logging.getLogger(__name__)


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


def adapter_modules(adapter: QueryAdapter) -> list[Module]:
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


def document_modules(adapter: QueryAdapter, base_model, normalize: bool = True) -> list[Module]:
    """`base_model`'s modules, L2-normalised when `normalize` (the embed stage's document vectors)."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    modules = list(base_model.children())
    if normalize and not any(isinstance(m, Normalize) for m in modules):
        modules.append(Normalize())
    dim = base_model.get_embedding_dimension()
    if dim != adapter.config.dim:
        raise ValueError(f"the embedder gives {dim}-d vectors but the adapter expects {adapter.config.dim}-d")
    return modules


def build_query_model(adapter: QueryAdapter, base_model, query_prompt: str = "", normalize: bool = True):
    """The query encoder alone: `base_model`'s modules + the adapter, the query prompt applied by default."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        modules=[*document_modules(adapter, base_model, normalize), *adapter_modules(adapter)],
        device="cpu",
        prompts={"query": query_prompt},
        # A task-less encode() then carries the embed stage's query prompt (when there is one).
        default_prompt_name="query" if query_prompt else None,
        similarity_fn_name="cosine",
    )


def build_router_model(
    adapter: QueryAdapter, base_model, query_prompt: str = "", document_prompt: str = "", normalize: bool = True
):
    """In memory, what the export's root loads as: a SentenceTransformer whose query route is `base_model`'s
    modules + the adapter and whose document route is `base_model`'s modules alone, with no default route."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    base_modules = document_modules(adapter, base_model, normalize)
    router = Router.for_query_document(
        query_modules=base_modules + adapter_modules(adapter),
        document_modules=base_modules,
        default_route=None,
        allow_empty_key=False,
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
    """Write the export (layout in the module docstring) to `out_dir`, replacing it only once the new one is
    complete; folders and files get the modes the umask gives (0755 / 0644 under 022)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    query_model = build_query_model(adapter, base_model, query_prompt, normalize)
    n_document_modules = len(document_modules(adapter, base_model, normalize))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        query_model.save(str(tmp / QUERY_DIR), create_model_card=False)
        _write_router(tmp, n_document_modules, query_prompt, document_prompt)
        remote = needs_remote_code(adapter)
        if remote:
            for folder in (tmp, tmp / QUERY_DIR):
                shutil.copyfile(Path(__file__).with_name("export_module.py"), folder / MODULE_FILE)
            _retype_custom_module(tmp)
        (tmp / EXPORT_INFO).write_text(
            json.dumps(_export_info(adapter, remote, info), indent=2) + "\n", encoding="utf-8"
        )
        apply_umask_modes(tmp)
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


def _export_info(adapter: QueryAdapter, remote: bool, info: dict[str, Any] | None) -> dict[str, Any]:
    trust = ", trust_remote_code=True" if remote else ""
    return {
        "format": FORMAT,
        "adapter": adapter.config.to_dict(),
        "trust_remote_code": remote,
        "usage": (
            f"SentenceTransformer(path{trust}).encode_query(queries) / .encode_document(documents); "
            f"plain encode() needs task='query' or task='document'. "
            f"SentenceTransformer(path + '/{QUERY_DIR}'{trust}).encode(queries): the query encoder alone, for "
            "wrappers that cannot pass a task (documents: the base model)."
        ),
        "query_model": QUERY_DIR,
        **(info or {}),
    }


def _write_router(root: Path, n_document_modules: int, query_prompt: str, document_prompt: str) -> None:
    """The root model: a Router over the modules saved in root/query (the document route is their first
    `n_document_modules`), no default route, and both prompts."""
    from sentence_transformers.sentence_transformer.modules import Router

    saved = json.loads((root / QUERY_DIR / "modules.json").read_text(encoding="utf-8"))
    ids = [f"{QUERY_DIR}/{entry['path']}".rstrip("/") for entry in saved]
    config = {
        "types": {module_id: entry["type"] for module_id, entry in zip(ids, saved)},
        "structure": {"query": ids, "document": ids[:n_document_modules]},
        "parameters": {"default_route": None, "allow_empty_key": False, "route_mappings": {}},
    }
    (root / Router.config_file_name).write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": "", "type": f"{Router.__module__}.{Router.__name__}"}]
    (root / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    st_config = json.loads((root / QUERY_DIR / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    st_config.update(prompts={"query": query_prompt, "document": document_prompt}, default_prompt_name=None)
    (root / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n", encoding="utf-8")


def _retype_custom_module(root: Path) -> None:
    """Point the saved configs at the module file shipped in the export instead of `ragtune.*`."""
    ours = "ragtune.adapter.export_module.QueryAdapterModule"
    for cfg in list(root.rglob("router_config.json")) + list(root.rglob("modules.json")):
        text = cfg.read_text(encoding="utf-8")
        if ours in text:
            cfg.write_text(text.replace(ours, MODULE_TYPE), encoding="utf-8")


def read_export_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The export's ragtune_export.json ({} when it has none)."""
    info_path = Path(path) / EXPORT_INFO
    return json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}


def load_exported(path: str | os.PathLike[str], device: str = "cpu"):
    """Load an export made by `export_sentence_transformer` (trusting its module file if it has one); an
    older export (format 1) still loads, with a warning that its plain encode() is the document route."""
    from sentence_transformers import SentenceTransformer

    info = read_export_info(path)
    if info.get("format", 1) < FORMAT:
        log.warning(
            "%s is an export of format 1: its plain encode() returns the unadapted document vector; call "
            "encode_query() for questions, or export again (dvc repro train) for format %d",
            path,
            FORMAT,
        )
    return SentenceTransformer(
        str(path), device=device, trust_remote_code=info.get("trust_remote_code", False), local_files_only=True
    )


def load_query_encoder(path: str | os.PathLike[str], device: str = "cpu"):
    """The export's query encoder alone (`path/query`): its plain encode() is the adapted query vector."""
    from sentence_transformers import SentenceTransformer

    info = read_export_info(path)
    if "query_model" not in info:
        raise RagtuneError(
            f"{path}: no query encoder of its own (an export of format 1, from before it had {QUERY_DIR}/); "
            "export it again (dvc repro train)"
        )
    return SentenceTransformer(
        str(Path(path) / info["query_model"]),
        device=device,
        trust_remote_code=info.get("trust_remote_code", False),
        local_files_only=True,
    )
