"""What every provider fake shares: a threaded HTTP server on 127.0.0.1, a PNG that depends on
its prompt, and the books a provider would keep (requests per route, images billed, bodies, the
auth header seen). Each fake (`bfl_api.py`, `replicate_api.py`, ...) adds its own routes, status
codes and error bodies, written from that provider's public API documentation, not from our code.

A fake's handler gets a `Call` (method, path, query, headers, body bytes, JSON body when it
parses) and returns a `Reply` (status, headers, JSON or raw bytes). `fail_next(route, reply, times)`
makes the next `times` requests of a route answer with a given reply (a documented error body),
before the route's own logic runs.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from evolvedirector.testing.fake_images_api import fake_image


def png(prompt: str, width: int, height: int, seed: int = 0) -> bytes:
    """A PNG that depends only on (prompt, seed, size): the shared fake API's image."""
    return fake_image(prompt, seed, width, height)


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: object = None  # the body parsed as JSON, when it is JSON


@dataclass
class Reply:
    status: int = 200
    json: object = None
    content: bytes | None = None  # raw bytes instead of JSON
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """Subclasses implement `route(call) -> str` (a route name for the books) and
    `handle(route, call) -> Reply`."""

    name = "fake"

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # route -> requests served
        self.calls: list[tuple[str, Call]] = []  # (route, call), in arrival order
        self.billed = 0  # images the provider would bill
        self._next: dict[str, deque[Reply]] = defaultdict(deque)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- what a test asks of it -------------------------------------------------------------------

    def fail_next(self, route: str, reply: Reply, times: int = 1) -> None:
        with self.lock:
            self._next[route].extend([reply] * times)

    def routes_seen(self, route: str) -> list[Call]:
        with self.lock:
            return [call for name, call in self.calls if name == route]

    # -- what a subclass provides -----------------------------------------------------------------

    def route(self, call: Call) -> str:
        raise NotImplementedError

    def handle(self, route: str, call: Call) -> Reply:
        raise NotImplementedError

    # -- lifetime ---------------------------------------------------------------------------------

    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, call: Call) -> Reply:
        route = self.route(call)
        with self.lock:
            self.requests[route] += 1
            self.calls.append((route, call))
            injected = self._next[route].popleft() if self._next[route] else None
        return injected if injected is not None else self.handle(route, call)


def _handler_for(fake: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            call = Call(self.command, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
                        {k.lower(): v for k, v in self.headers.items()}, body, parsed)
            reply = fake._serve(call)
            payload = reply.content if reply.content is not None else json.dumps(reply.json).encode()
            self.send_response(reply.status)
            headers = {"content-type": "application/json", **{k.lower(): v for k, v in reply.headers.items()}}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = do_PUT = _any

    return Handler
