"""Inference backends of the frozen embedder: PyTorch (fp32, bf16) and ONNX Runtime (fp32, dynamic int8), both
through sentence-transformers' own `backend=` support.

The ONNX file is exported here, once, from the local model directory (no Hub): torch.onnx writes
`onnx/model.onnx` (the exporter of optimum-onnx fails on transformers 5.25's attention masks), and
sentence-transformers' `export_dynamic_quantized_onnx_model` writes the int8 file beside it, for the instruction
set this CPU has (avx512_vnni, avx512, avx2 or arm64). Both live under `export_root()` in a folder named by the
source model's fingerprint and the export recipe, so a rerun loads them instead of exporting again; each file is
written to a temporary name and renamed, so an interrupted export leaves nothing half-written. The file's
sha256 is part of the model fingerprint, hence of every embedding cache key (`embedder.model_fingerprint`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import RagtuneError

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx"]
Precision = Literal["fp32", "bf16", "int8"]

# Bump when the export recipe changes: a new folder, new files, new fingerprints (and cache rows).
_EXPORT_VERSION = "onnx-export/v1"
_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FP32_FILE = "onnx/model.onnx"


def export_root() -> Path:
    """Where exported models are kept: $RAGTUNE_EXPORT_DIR, else $XDG_CACHE_HOME/ragtune/exported (~/.cache)."""
    if os.environ.get("RAGTUNE_EXPORT_DIR"):
        return Path(os.environ["RAGTUNE_EXPORT_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ragtune" / "exported"


def quantization_target() -> str:
    """sentence-transformers' dynamic-quantisation preset for this CPU: avx512_vnni, avx512, avx2 or arm64."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


@dataclass(frozen=True)
class ExportedModel:
    """An exported model folder (the source's config and tokenizer files linked in) and the ONNX file to load,
    relative to it; `sha256` is that file's digest."""

    directory: Path
    file_name: str
    sha256: str

    @property
    def fingerprint(self) -> str:
        return f"{self.file_name}@{self.sha256}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_folder(source_fingerprint: str) -> Path:
    """The folder for one source model and this export recipe (exporter version included)."""
    import torch

    recipe = hashlib.sha256(f"{_EXPORT_VERSION}\x00{_OPSET}\x00{torch.__version__}".encode()).hexdigest()[:12]
    return export_root() / f"{hashlib.sha256(source_fingerprint.encode()).hexdigest()[:24]}-{recipe}"


def onnx_model(source_dir: str, source_fingerprint: str, precision: Precision) -> ExportedModel:
    """The ONNX export of the sentence-transformers model in `source_dir` at `precision` (fp32 or int8),
    exported on the first call and read from `export_folder` after that."""
    folder = export_folder(source_fingerprint)
    if not (folder / _FP32_FILE).is_file():
        _export_fp32(Path(source_dir), folder)
    file_name = _FP32_FILE
    if precision == "int8":
        target = quantization_target()
        file_name = f"onnx/model_qint8_{target}.onnx"
        if not (folder / file_name).is_file():
            _quantize(folder, target, file_name)
    return ExportedModel(folder, file_name, _sha256(folder / file_name))


def _link_source_files(source: Path, folder: Path) -> None:
    """The source's files (config, tokenizer, pooling) linked into `folder`; its torch weights are not needed."""
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        if path.is_dir() or ".git" in rel.parts or path.suffix in (".safetensors", ".bin", ".onnx"):
            continue
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.symlink(path.resolve(), dest)


def _export_fp32(source: Path, folder: Path) -> None:
    """torch.onnx export of the transformer (input ids, mask, token types -> last hidden state), dynamic in batch
    and length; pooling and normalisation stay sentence-transformers modules."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    log.info("embedding: exporting %s to ONNX under %s (once)", source, folder)
    folder.mkdir(parents=True, exist_ok=True)
    _link_source_files(source, folder)
    model = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    sample = tokenizer(["an example", "a second, longer example sentence"], padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in sample]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, tensors))).last_hidden_state

    dynamic = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    (folder / "onnx").mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder / "onnx", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.no_grad():
            torch.onnx.export(
                LastHiddenState(model),
                tuple(sample[n] for n in names),
                tmp,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=dynamic,
                opset_version=_OPSET,
                dynamo=False,
            )
        os.replace(tmp, folder / _FP32_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _quantize(folder: Path, target: str, file_name: str) -> None:
    """sentence-transformers' dynamic int8 quantisation of the fp32 file, written beside it."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    log.info("embedding: quantising %s to int8 (%s, once)", folder / _FP32_FILE, target)
    model = SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"file_name": _FP32_FILE})
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        export_dynamic_quantized_onnx_model(model, target, tmp)
        written = Path(tmp) / file_name
        if not written.is_file():
            raise RagtuneError(f"embedding: int8 export wrote no {file_name} (found {sorted(os.listdir(tmp))})")
        os.replace(written, folder / file_name)
    shutil.rmtree(folder / "onnx" / "__pycache__", ignore_errors=True)


def load_onnx(source_dir: str, source_fingerprint: str, precision: Precision):
    """(SentenceTransformer on ONNX Runtime's CPU provider, its ExportedModel)."""
    try:
        import onnxruntime  # noqa: F401
        from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
    except ImportError:
        raise RagtuneError(
            "embedding.backend: onnx needs ONNX Runtime and optimum (pip install -e '.[onnx]'; `make venv` installs "
            "it), or set embedding.backend: torch"
        ) from None
    from sentence_transformers import SentenceTransformer

    exported = onnx_model(source_dir, source_fingerprint, precision)
    model = SentenceTransformer(
        str(exported.directory),
        backend="onnx",
        device="cpu",
        model_kwargs={"file_name": exported.file_name, "provider": "CPUExecutionProvider"},
    )
    return model, exported
