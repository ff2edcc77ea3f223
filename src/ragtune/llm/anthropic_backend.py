"""Claude through the official `anthropic` SDK: structured output through a forced tool call, bounded
concurrency or the Message Batches API, prompt caching of the fixed system prompt, and our own
retry loop (so every retry is counted and `retry-after` is honoured) on 429, 529, other 5xx and
connection errors.

The API key is read from the environment variable named in params, checked before any work, and
never logged, stored or sent anywhere but the API.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any

from ..credentials import remember
from ..errors import RagtuneError
from .base import GenRequest, GenResult, OnResult, StateStore, Usage, read_reply, request_tool
from .config import LlmParams, Price
from .reachability import ReachabilityGuard

log = logging.getLogger(__name__)

_PENDING_BATCHES = "anthropic/pending-batches/v1"
_MAX_BATCH_REQUESTS = 10_000


def estimate_cost(usage: Usage, price: Price | None, factor: float = 1.0) -> float | None:
    """USD for one call from its token counts; None when the model has no price in params."""
    if price is None:
        return None
    cache_write = price.cache_write if price.cache_write is not None else 1.25 * price.input
    cache_read = price.cache_read if price.cache_read is not None else 0.1 * price.input
    plain_in = usage.tokens_in - usage.cache_read - usage.cache_write
    usd = (
        plain_in * price.input
        + usage.tokens_out * price.output
        + usage.cache_write * cache_write
        + usage.cache_read * cache_read
    ) / 1e6
    return round(usd * factor, 8)


def api_key_from_env(var: str) -> str:
    key = os.environ.get(var, "").strip()
    remember(key)  # hidden in every log and error (credentials.redact)
    if not key:
        raise RagtuneError(
            f"llm.backend is 'anthropic' but the environment variable {var} is not set. Export your "
            f"Anthropic API key as {var} (or set llm.anthropic.api_key_env to the variable that holds it), "
            "or pick an offline backend: llm.backend=llamacpp or llm.backend=ict."
        )
    return key


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class AnthropicBackend:
    name = "anthropic"
    cacheable = True
    deterministic = False  # sampled (temperature), and the API gives no seed
    uses_prompt = True
    takes_repeat_penalty = False  # the Messages API has no repetition penalty

    def __init__(self, params: LlmParams, client: Any = None):
        self.params = params
        self.p = params.anthropic
        self.model = self.p.model
        self.price = params.prices.get(self.model)
        if self.price is None:
            log.warning("llm.prices has no entry for %s: cost will be reported as unknown", self.model)
        if client is None:
            import anthropic

            key = api_key_from_env(self.p.api_key_env)  # before any work
            # A host that drops packets is known unreachable after seconds, not after the whole call timeout.
            timeout = anthropic.Timeout(self.p.timeout_seconds, connect=min(10.0, self.p.timeout_seconds))
            client = anthropic.Anthropic(api_key=key, base_url=self.p.base_url, max_retries=0, timeout=timeout)
        self.client = client
        self.retries = 0  # retried attempts over the whole run (429/5xx/connection)
        self.reachability = ReachabilityGuard(
            self.p.fail_fast_calls,
            str(getattr(client, "base_url", None) or self.p.base_url or "the Anthropic API"),
            "llm.anthropic.base_url",
            "llm.anthropic.base_url, or ANTHROPIC_BASE_URL when it is null; llm.anthropic.fail_fast_calls: 0 "
            "retries every call instead",
        )

    # --- identity and request building -------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        # Batch vs. direct does not change the output distribution: not part of the key.
        sampling = (
            {"temperature": self.params.temperature, "top_p": self.params.top_p} if self.p.send_sampling_params else {}
        )
        return {"backend": self.name, "model": self.model, "max_tokens": self.params.max_tokens, **sampling}

    def request_params(self, req: GenRequest) -> dict[str, Any]:
        system: dict[str, Any] = {"type": "text", "text": req.system}
        if self.p.prompt_caching:
            # Tools come before the system prompt in the cached prefix, so both are cached together.
            system["cache_control"] = {"type": "ephemeral"}
        tool = request_tool(req)
        kw: dict[str, Any] = {
            "model": self.model,
            "max_tokens": req.max_tokens or self.params.max_tokens,
            "system": [system],
            "messages": [{"role": "user", "content": req.user}],
            "tools": [{"name": tool.name, "description": tool.description, "input_schema": tool.schema}],
            "tool_choice": {"type": "tool", "name": tool.name},
        }
        # Sampling params are deprecated for Claude models after Opus 4.6: sent only when asked for.
        if self.p.send_sampling_params:
            kw["temperature"] = self.params.temperature if req.temperature is None else req.temperature
            if self.params.top_p is not None:
                kw["top_p"] = self.params.top_p
        return kw

    # --- parsing ------------------------------------------------------------------------------

    def result_from_message(
        self, key: str, msg: Any, seconds: float, attempts: int, batch: bool = False, req: GenRequest | None = None
    ) -> GenResult:
        """`req` (the request answered) names the tool to read; without it, the question generator's."""
        req = req if req is not None else GenRequest(key=key, system="", user="")
        tool = request_tool(req)
        u = getattr(msg, "usage", None)
        cache_read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
        cache_write = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
        usage = Usage(
            tokens_in=int(getattr(u, "input_tokens", 0) or 0) + cache_read + cache_write,
            tokens_out=int(getattr(u, "output_tokens", 0) or 0),
            cache_read=cache_read,
            cache_write=cache_write,
        )
        cost = estimate_cost(usage, self.price, self.params.batch_discount if batch else 1.0)
        common: dict[str, Any] = {"usage": usage, "cost_usd": cost, "seconds": seconds, "attempts": attempts}
        stop = getattr(msg, "stop_reason", None)
        if stop == "refusal":
            return GenResult.failure(key, "refusal", "the model declined to answer", **common)
        if stop == "max_tokens":
            return GenResult.failure(
                key, "max_tokens", f"the answer hit max_tokens={req.max_tokens or self.params.max_tokens}", **common
            )
        for block in getattr(msg, "content", None) or []:
            if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == tool.name:
                try:
                    fields = read_reply(req, block.input)
                except ValueError as exc:
                    return GenResult.failure(key, "invalid_output", f"tool input breaks the schema: {exc}", **common)
                return GenResult(key=key, ok=True, **fields, **common)
        return GenResult.failure(key, "invalid_output", f"no {tool.name} tool call (stop_reason={stop})", **common)

    # --- direct calls -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return min(self.p.retry_max_seconds, self.p.retry_base_seconds * 2**attempt) * (0.75 + 0.25 * random.random())

    def call(self, req: GenRequest, stop: threading.Event) -> GenResult:
        """One chunk, with retries. Returns a failure result rather than raising, except for errors
        that concern the whole run (authentication, permission), which raise RagtuneError."""
        import anthropic

        t0 = time.perf_counter()
        kw = self.request_params(req)
        # SDK 1.x dropped the sampling keywords; the API still takes them in the body.
        extra = {k: kw.pop(k) for k in ("temperature", "top_p") if k in kw}
        if extra:
            kw["extra_body"] = extra
        for attempt in range(self.p.max_retries + 1):
            try:
                msg = self._create(lambda: self.client.messages.create(**kw))
                return self.result_from_message(req.key, msg, time.perf_counter() - t0, attempt + 1, req=req)
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
                raise RagtuneError(
                    f"the Anthropic API refused the key in {self.p.api_key_env} "
                    f"(HTTP {exc.status_code}); check it and its permissions"
                ) from None
            except anthropic.NotFoundError:
                raise RagtuneError(
                    f"llm.anthropic.model: the API does not know model '{self.model}' (HTTP 404)"
                ) from None
            except (
                anthropic.RateLimitError,
                anthropic.InternalServerError,
                anthropic.APIConnectionError,
                anthropic.ConflictError,
            ) as exc:
                status = getattr(exc, "status_code", None)
                reason = {429: "rate_limited", 529: "overloaded"}.get(
                    status or 0, f"http_{status}" if status else "connection"
                )
                if attempt >= self.p.max_retries or stop.is_set():
                    return GenResult.failure(
                        req.key,
                        reason,
                        f"gave up after {attempt + 1} attempts: {_short(exc)}",
                        seconds=time.perf_counter() - t0,
                        attempts=attempt + 1,
                    )
                wait_s = retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
                delay = min(self.p.retry_max_seconds, wait_s) if wait_s is not None else self._backoff(attempt)
                self.retries += 1
                log.info("anthropic: %s on attempt %d, retrying in %.1f s", reason, attempt + 1, delay)
                stop.wait(delay)
            except anthropic.APIStatusError as exc:  # other 4xx: this request is at fault
                return GenResult.failure(
                    req.key,
                    f"http_{exc.status_code}",
                    _short(exc),
                    seconds=time.perf_counter() - t0,
                    attempts=attempt + 1,
                )
        raise AssertionError("unreachable")

    def _create(self, send: Any) -> Any:
        """One request (`send()`), telling the reachability guard whether the server answered (any HTTP
        status) or could not be reached; the guard stops the run when the first calls all fail to connect."""
        import anthropic

        try:
            out = send()
        except anthropic.APIStatusError:
            self.reachability.answer()
            raise
        except anthropic.APIConnectionError as exc:
            if _unreachable(exc):
                self.reachability.connection_failed(_short(exc))
            raise
        self.reachability.answer()
        return out

    def generate(
        self,
        requests: Sequence[GenRequest],
        on_result: OnResult,
        stop: threading.Event,
        state: StateStore | None = None,
    ) -> None:
        if self.p.batch:
            self._generate_batch(requests, on_result, stop, state)
            return
        todo = iter(requests)
        with ThreadPoolExecutor(self.p.concurrency, thread_name_prefix="anthropic") as ex:
            running: set[Future] = set()
            try:
                while True:
                    while len(running) < self.p.concurrency and not stop.is_set():
                        req = next(todo, None)
                        if req is None:
                            break
                        running.add(ex.submit(self.call, req, stop))
                    if not running:
                        break
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        on_result(fut.result())
            finally:
                if running:  # an error or a stop: let in-flight calls finish and keep what they paid for
                    stop.set()
                    for fut in running:
                        try:
                            on_result(fut.result())
                        except Exception:  # noqa: BLE001 - the first error is already propagating
                            pass

    # --- Message Batches ----------------------------------------------------------------------

    def _generate_batch(
        self, requests: Sequence[GenRequest], on_result: OnResult, stop: threading.Event, state: StateStore | None
    ) -> None:
        """Submit what no pending batch already covers, persist the batch ids at once (a crash then
        collects the same batch instead of paying again), poll until ended, then collect."""
        by_key = {r.key: r for r in requests}
        pending: list[dict[str, Any]] = list((state.get_json(_PENDING_BATCHES) if state else None) or [])
        covered = {k for b in pending for k in b["keys"] if k in by_key}
        if covered:
            log.info(
                "anthropic: %d chunks are in %d batch(es) submitted earlier; collecting those",
                len(covered),
                len(pending),
            )
        fresh = [r for r in requests if r.key not in covered]
        for i in range(0, len(fresh), _MAX_BATCH_REQUESTS):
            part = fresh[i : i + _MAX_BATCH_REQUESTS]
            batch = self._with_retries(
                lambda part=part: self.client.messages.batches.create(
                    requests=[{"custom_id": r.key, "params": self.request_params(r)} for r in part]
                )
            )
            pending.append({"id": batch.id, "keys": [r.key for r in part], "created": time.time()})
            if state is not None:
                state.put_json(_PENDING_BATCHES, pending)
            log.info("anthropic: submitted batch %s with %d requests", batch.id, len(part))

        deadline = time.time() + self.p.batch_max_wait_hours * 3600
        for b in list(pending):
            if not any(k in by_key for k in b["keys"]):
                continue
            t0 = time.perf_counter()
            while True:
                info = self._with_retries(lambda b=b: self.client.messages.batches.retrieve(b["id"]))
                if info.processing_status == "ended":
                    break
                if stop.is_set() or time.time() > deadline:
                    log.warning("anthropic: batch %s still %s; a rerun collects it", b["id"], info.processing_status)
                    return
                stop.wait(self.p.batch_poll_seconds)
            seconds = time.perf_counter() - t0
            seen = set()
            for item in self._with_retries(lambda b=b: list(self.client.messages.batches.results(b["id"]))):
                key = item.custom_id
                seen.add(key)
                res = item.result
                if res.type == "succeeded":
                    out = self.result_from_message(
                        key, res.message, seconds / max(1, len(b["keys"])), 1, batch=True, req=by_key.get(key)
                    )
                else:
                    err = getattr(getattr(res, "error", None), "error", None)
                    detail = getattr(err, "message", None) or getattr(err, "type", None) or res.type
                    out = GenResult.failure(key, f"batch_{res.type}", str(detail))
                if key in by_key:
                    on_result(out)
            for key in b["keys"]:
                if key not in seen and key in by_key:
                    on_result(GenResult.failure(key, "batch_missing", f"no result in batch {b['id']}"))
            pending = [x for x in pending if x["id"] != b["id"]]
            if state is not None:
                state.put_json(_PENDING_BATCHES, pending)

    def _with_retries(self, fn: Any) -> Any:
        import anthropic

        for attempt in range(self.p.max_retries + 1):
            try:
                return self._create(fn)
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
                raise RagtuneError(
                    f"the Anthropic API refused the key in {self.p.api_key_env} (HTTP {exc.status_code})"
                ) from None
            except (anthropic.RateLimitError, anthropic.InternalServerError, anthropic.APIConnectionError) as exc:
                if attempt >= self.p.max_retries:
                    raise RagtuneError(
                        f"Anthropic batch API: gave up after {attempt + 1} attempts: {_short(exc)}"
                    ) from None
                wait_s = retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
                self.retries += 1
                time.sleep(min(self.p.retry_max_seconds, wait_s) if wait_s is not None else self._backoff(attempt))
        raise AssertionError("unreachable")

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _unreachable(exc: BaseException) -> bool:
    """A connection that never carried an answer: refused, reset, DNS, or a connect (not a read) timeout."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):  # the SDK's HTTP client's own ConnectTimeout, by name
        return type(exc.__cause__).__name__ == "ConnectTimeout"
    return isinstance(exc, anthropic.APIConnectionError)
