"""A local stand-in for the Anthropic Messages API (and the Message Batches endpoints) on 127.0.0.1.

The SDK is pointed at it through `base_url`. What it answers is chosen by a marker in the user
message, `SCENARIO=<name>`; without one it succeeds. Every request is recorded (headers and body)
so tests can count calls and check what was sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOOL = "record_questions"


def message(
    content: list[dict[str, Any]],
    stop_reason: str = "tool_use",
    model: str = "claude-haiku-4-5",
    input_tokens: int = 120,
    output_tokens: int = 30,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }


def tool_message(tool_input: Any, **kw: Any) -> dict:
    return message([{"type": "tool_use", "id": "toolu_fake", "name": TOOL, "input": tool_input}], **kw)


def questions_for(user: str) -> list[str]:
    """Deterministic questions derived from the passage, so different chunks get different questions."""
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"[A-Za-z]{4,}", user.split("\n", 2)[-1])))[-3:]
    tag = hashlib.sha256(user.encode()).hexdigest()[:6]
    return [f"What does rule {tag} say about {w}?" for w in words or ["things"]]


# A stand-in for Claude's tokenizer (not public): GPT-2-style pieces, a word of up to 5 letters (with its
# leading space), up to 3 digits, one other character, or a run of whitespace. About 4 characters a token on
# English prose and fewer on JSON, the density Anthropic states for Claude (about 3.5 characters a token).
_PIECE = re.compile(r" ?[A-Za-z]{1,5}| ?\d{1,3}|\s+(?=\s)|\s+|[^\sA-Za-z\d]")
# Tokens of the tool-use system prompt the API adds when tools are given (Claude 4.x models: 313 with
# tool_choice any/tool, 346 with auto/none); count_tokens and usage both include them.
TOOL_PROMPT_TOKENS = {"tool": 313, "any": 313, "auto": 346, "none": 346}
# Shortest prefix the API caches (a shorter one is sent uncached, silently); per model family.
MIN_CACHEABLE = {"claude-haiku-4-5": 4096, "claude-opus-4-5": 4096, "claude-sonnet-4-5": 1024}


def fake_tokens(text: str) -> int:
    return len(_PIECE.findall(text))


def _texts(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    return "".join(b.get("text", "") for b in blocks or [])


def prefix_tokens(body: dict[str, Any]) -> int:
    """Tools, then the system prompt: the part of a request a system `cache_control` marks for caching."""
    tools = body.get("tools") or []
    n = sum(fake_tokens(t["name"] + (t.get("description") or "") + json.dumps(t["input_schema"])) for t in tools)
    if tools:
        n += TOOL_PROMPT_TOKENS[(body.get("tool_choice") or {"type": "auto"})["type"]]
    return n + fake_tokens(_texts(body.get("system")))


def input_tokens(body: dict[str, Any]) -> int:
    """All input tokens of a request, as count_tokens reports them: the prefix, then each message with 4
    tokens of framing."""
    return prefix_tokens(body) + sum(4 + fake_tokens(_texts(m["content"])) for m in body["messages"])


def cache_marked(body: dict[str, Any]) -> bool:
    system = body.get("system")
    return isinstance(system, list) and any("cache_control" in b for b in system)


@dataclass
class FakeAnthropic:
    delay: float = 0.0  # seconds before each /v1/messages answer
    # While set, a request whose user message contains this text gets a 500, whatever its scenario: an outage
    # for part of a run, switched off between runs.
    failing: str | None = None
    # Usage as the API reports it (input counted with fake_tokens, prompt caching of the tools + system prefix,
    # output = the tool input's tokens); off: the fixed 120 in / 30 out that older tests assert on.
    count_usage: bool = False
    cached_prefixes: set[str] = field(default_factory=set)
    batch_polls: int = 1  # retrieve calls that still say in_progress
    requests: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self, "GET")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def message_calls(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == "/v1/messages"]

    # --- dispatch ----------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        n = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(n) if n else b""
        body = json.loads(raw) if raw else None
        path = h.path.split("?")[0]
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "headers": {k.lower(): v for k, v in h.headers.items()},
                    "body": body,
                    "t": time.time(),
                }
            )
        if method == "POST" and path == "/v1/messages":
            status, payload, headers = self._message(body)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            status, payload, headers = 200, {"input_tokens": input_tokens(body)}, {}
        elif method == "POST" and path == "/v1/messages/batches":
            status, payload, headers = self._batch_create(body)
        elif method == "GET" and re.fullmatch(r"/v1/messages/batches/[\w-]+", path):
            status, payload, headers = self._batch_get(path.rsplit("/", 1)[1])
        elif method == "GET" and re.fullmatch(r"/v1/messages/batches/[\w-]+/results", path):
            self._batch_results(h, path.split("/")[-2])
            return
        else:
            status, payload, headers = 404, _error("not_found_error", f"no route {method} {path}"), {}
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The reply for one Messages request, by the SCENARIO marker in its user message."""
        user = body["messages"][0]["content"]
        user = user if isinstance(user, str) else json.dumps(user)
        m = re.search(r"SCENARIO=(\w+)", user)
        scenario = m.group(1) if m else "ok"
        with self.lock:
            self.attempts[user] = self.attempts.get(user, 0) + 1
            attempt = self.attempts[user]
        ok = (200, tool_message({"questions": questions_for(user)}, model=body.get("model", "")), {})
        if self.failing and self.failing in user:
            return 500, _error("api_error", "Internal server error"), {}
        if scenario == "ok":
            return ok
        if scenario == "rate_limited_once":
            return ok if attempt > 1 else (429, _error("rate_limit_error", "slow down"), {"retry-after": "1"})
        if scenario == "overloaded_once":
            return ok if attempt > 1 else (529, _error("overloaded_error", "Overloaded"), {})
        if scenario == "server_error_once":
            return ok if attempt > 1 else (500, _error("api_error", "Internal server error"), {})
        if scenario == "server_error_always":
            return 500, _error("api_error", "Internal server error"), {}
        if scenario == "bad_schema":
            return 200, tool_message({"questions": "What is this, a string?"}), {}
        if scenario == "max_tokens":
            return 200, tool_message({"questions": ["What is cut"]}, stop_reason="max_tokens"), {}
        if scenario == "refusal":
            return 200, message([], stop_reason="refusal"), {}
        if scenario == "unauthorized":
            return 401, _error("authentication_error", "invalid x-api-key"), {}
        raise AssertionError(f"unknown scenario {scenario}")

    def _message(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.delay:
            time.sleep(self.delay)
        return self._with_usage(body, *self.answer(body))

    def _with_usage(
        self, body: dict[str, Any], status: int, payload: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The reply with the usage the real API would report for `body` (when count_usage is on): the first
        request with a cache-marked prefix of at least the model's minimum writes it, later ones read it."""
        if not self.count_usage or status != 200 or "usage" not in payload:
            return status, payload, headers
        total, prefix = input_tokens(body), prefix_tokens(body)
        write = read = 0
        if cache_marked(body) and prefix >= MIN_CACHEABLE.get(body["model"], 1024):
            key = hashlib.sha256(json.dumps([body["model"], body.get("tools"), body["system"]]).encode()).hexdigest()
            with self.lock:
                if key in self.cached_prefixes:
                    read = prefix
                else:
                    write = prefix
                    self.cached_prefixes.add(key)
        out = sum(fake_tokens(json.dumps(b.get("input"))) + 10 for b in payload["content"] if b["type"] == "tool_use")
        payload["usage"] = {
            "input_tokens": total - write - read,
            "output_tokens": min(out, body["max_tokens"]),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }
        return status, payload, headers

    def _batch_create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            bid = f"msgbatch_{len(self.batches) + 1:04d}"
            self.batches[bid] = {"requests": body["requests"], "polls": 0}
        return 200, self._batch_obj(bid, "in_progress"), {}

    def _batch_get(self, bid: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        b = self.batches.get(bid)
        if b is None:
            return 404, _error("not_found_error", bid), {}
        with self.lock:
            b["polls"] += 1
            ended = b["polls"] > self.batch_polls
        return 200, self._batch_obj(bid, "ended" if ended else "in_progress"), {}

    def _batch_results(self, h: BaseHTTPRequestHandler, bid: str) -> None:
        lines = []
        for r in self.batches[bid]["requests"]:
            status, payload, _ = self._with_usage(r["params"], *self.answer(r["params"]))
            if status == 200:
                result = {"type": "succeeded", "message": payload}
            else:
                result = {"type": "errored", "error": {"type": "error", "error": payload["error"]}}
            lines.append(json.dumps({"custom_id": r["custom_id"], "result": result}))
        data = ("\n".join(lines) + "\n").encode()
        h.send_response(200)
        h.send_header("content-type", "application/binary")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _batch_obj(self, bid: str, status: str) -> dict[str, Any]:
        n = len(self.batches[bid]["requests"])
        return {
            "id": bid,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if status == "ended" else n,
                "succeeded": n if status == "ended" else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T00:01:00Z" if status == "ended" else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{bid}/results" if status == "ended" else None,
        }


def _error(kind: str, msg: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": msg}}
