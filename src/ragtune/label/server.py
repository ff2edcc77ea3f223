"""The local web page of `ragtune label`: Python's own `http.server` (ThreadingHTTPServer) serving one page of
vanilla JavaScript from the package (`ragtune/label/static/`) and a small JSON API over `LabelApp`.

Bound to 127.0.0.1 only. A request must name this server in its Host header (a page elsewhere that rebinds
its DNS name to 127.0.0.1 is refused), and a write must be a JSON POST (a cross-site form cannot send one).

    GET  /                      the page          GET  /api/state           counts, recommendation, judgements
    GET  /static/<file>         its script, style GET  /api/find?q=TEXT     chunks whose id/title/text hold TEXT
    POST /api/candidates        {"question"} -> the pooled, shuffled top k of every arm
    POST /api/judge             {"question", "relevant_ids": [...]} ([] = none) -> saved, then the state
    POST /api/skip              {"question"} -> the state, with the next queued question
"""

from __future__ import annotations

import errno
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import RagtuneError
from .storage import LeakageRefused

if TYPE_CHECKING:
    from .app import LabelApp

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 1 << 20  # bytes; a judgement is a few hundred
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


class LabelServer(ThreadingHTTPServer):
    """The listening socket, bound at once (a port in use fails before any model loads); `app` is set once
    start-up has loaded it, and requests before then are told to wait."""

    daemon_threads = True
    app: LabelApp | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def bind(port: int) -> LabelServer:
    """A server on 127.0.0.1:`port` (0: any free port); a port in use is a RagtuneError saying what to do."""
    try:
        return LabelServer((HOST, port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise RagtuneError(
                f"port {port} on {HOST} is in use (another ragtune label?): stop that, or pass --port N "
                "(--port 0 picks a free one)"
            ) from None
        raise RagtuneError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None


def static_file(name: str) -> bytes:
    return resources.files("ragtune.label").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    server: LabelServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # --- routing ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, static_file("index.html"), STATIC["index.html"])
        elif url.path.startswith("/static/") and url.path.removeprefix("/static/") in STATIC:
            name = url.path.removeprefix("/static/")
            self._send(HTTPStatus.OK, static_file(name), STATIC[name])
        elif url.path == "/api/state":
            self._call(lambda app: app.state())
        elif url.path == "/api/find":
            text = parse_qs(url.query).get("q", [""])[0]
            self._call(lambda app: app.find(text))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        body = self._json_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        question = body.get("question")
        if not isinstance(question, str):
            self._error(HTTPStatus.BAD_REQUEST, 'expected {"question": "..."}')
        elif path == "/api/candidates":
            self._call(lambda app: app.candidates(question))
        elif path == "/api/skip":
            self._call(lambda app: app.skip(question))
        elif path == "/api/judge":
            relevant = body.get("relevant_ids")
            if not isinstance(relevant, list) or not all(isinstance(r, str) for r in relevant):
                self._error(HTTPStatus.BAD_REQUEST, 'expected "relevant_ids": a list of chunk ids ([] for none)')
            else:
                self._call(lambda app: app.judge(question, relevant))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such action: {path}")

    # --- checks -----------------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        port = self.server.server_address[1]
        if self.headers.get("Host") in (f"{HOST}:{port}", f"localhost:{port}"):
            return True
        self._error(HTTPStatus.FORBIDDEN, f"open the page as http://{HOST}:{port}/")
        return False

    def _json_body(self) -> dict[str, Any] | None:
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request is over {MAX_BODY} bytes")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the request body is not a JSON object")
            return None
        return body

    # --- answers ----------------------------------------------------------------------------------

    def _call(self, action: Any) -> None:
        app = self.server.app
        if app is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "still loading the pipeline; try again in a moment")
            return
        try:
            with app.lock:
                result = action(app)
        except LeakageRefused as exc:
            self._error(HTTPStatus.CONFLICT, str(exc))
        except RagtuneError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:  # a bug: say so on the page and in the terminal, keep serving
            log.exception("ragtune label: %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc} (see the terminal)")
        else:
            self._send(HTTPStatus.OK, json.dumps(result, ensure_ascii=False).encode("utf-8"), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}, ensure_ascii=False).encode("utf-8"), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)
