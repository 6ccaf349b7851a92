"""A local image API on 127.0.0.1 that behaves like the real ones, with faults on demand.

It speaks both protocols the HTTP teachers use:

```
POST /v1/images/generations        OpenAI images: {"data": [{"b64_json"}]} or [{"url"}]; with
                                   honour_idempotency, an Idempotency-Key seen before gets the
                                   same answer again, unbilled
POST /queue                        submit: {"request_id"}; an Idempotency-Key header deduplicates
GET  /queue/requests/{id}/status   {"status": IN_PROGRESS | COMPLETED | FAILED, "error"}
GET  /queue/requests/{id}          {"images": [{"url"}]}
GET  /files/{name}.png             image bytes
```

An image answer takes `latency` seconds (a queued job finishes `latency` after its submit).
`hold()` keeps every generation request that arrives from then on unanswered (counted in `held`)
until `release()`; released, each is made and billed as any other, so a test can kill a client at
the moment its calls are certainly at the provider, not merely sent.
`inject(route, fault, times)` makes the next `times` requests of a route fail one way;
`fail_from(route, fault, after)` every request of it after the first `after`, until `heal()`
(a server that went down mid-run; "401" a revoked key, "402" an account out of credits). It keeps
the books a provider would: images it generated (and so would bill), every submit with its
idempotency key, every POSTed body, requests per route, the most requests it served at once, and
`spans`: each request's (route, start, end) in time.time() seconds.

It serves the tests and `evolvedirector bench teachers`; a run never starts it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

ROUTES = ("generate", "submit", "status", "result", "file")
FAULTS = ("401", "402", "403", "404", "429", "500", "503", "timeout", "reset", "truncated", "corrupt", "refuse",
          "job_failed")
# What real APIs answer with these statuses (OpenAI's words for 401 and 402).
STATUS_MESSAGES = {"401": "Incorrect API key provided.",
                   "402": "You exceeded your current quota: insufficient credits.",
                   "403": "Your account is not allowed to use this model.", "404": "The model does not exist."}
REFUSAL = "Your request was rejected as a result of our safety system (content_policy_violation)."


def fake_image(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A PNG that depends only on (prompt, seed, size): a coloured field with a block."""
    digest = hashlib.sha256(f"{prompt}\x1f{seed}".encode()).digest()
    image = np.empty((height, width, 3), np.uint8)
    image[:] = list(digest[:3])
    image[height // 4: height // 2, width // 4: width // 2] = list(digest[3:6])
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _size(value, default: int = 32) -> tuple[int, int]:
    if isinstance(value, str) and re.fullmatch(r"\d+x\d+", value):
        width, height = value.split("x")
        return min(int(width), 2048), min(int(height), 2048)
    if isinstance(value, int) and 0 < value <= 2048:
        return value, value
    if isinstance(value, dict) and all(isinstance(value.get(k), int) and 0 < value[k] <= 2048
                                       for k in ("width", "height")):
        return value["width"], value["height"]  # fal's custom image_size
    return default, default


@dataclass
class Job:
    id: str
    key: str | None
    prompt: str
    seed: int
    size: tuple[int, int]
    ready_at: float
    error: str | None = None


class FakeImageAPI:
    def __init__(self, latency: float = 0.0, api_key: str | None = None, files_from: "FakeImageAPI | None" = None,
                 port: int = 0, honour_idempotency: bool = False):
        self.latency = latency
        self.honour_idempotency = honour_idempotency
        self.generate_keys: list[str | None] = []  # the Idempotency-Key of every generation request
        self._answers: dict[str, dict] = {}  # key -> the generation's answer, replayed when honoured
        self.port = port  # 0: a free one
        self.api_key = api_key  # when set, API routes want `Authorization: Bearer <key>`
        self.files_from = files_from  # where image URLs point (another host, like a CDN); default: here
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.generated = 0  # sync images answered with 200: what the provider bills
        self.jobs: dict[str, Job] = {}
        self.submits: list[tuple[str | None, str]] = []  # (idempotency key, request id), every submit
        self.requests: Counter[str] = Counter()
        self.bodies: list[tuple[str, dict]] = []  # (route, JSON body) of every POST, in arrival order
        self.auth_seen: list[tuple[str, str | None]] = []  # (route, Authorization header)
        self.files: dict[str, bytes] = {}
        self.max_in_flight = 0
        self.held = 0  # generation requests waiting for release()
        self._released = threading.Event()
        self._released.set()
        self.spans: list[tuple[str, float, float]] = []
        self._in_flight = 0
        self._faults: dict[str, deque] = defaultdict(deque)
        self._fail_from: dict[str, tuple[int, str]] = {}  # route -> (requests served first, fault)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""  # http://127.0.0.1:PORT once started

    # -- lifetime -------------------------------------------------------------------------------

    def start(self) -> "FakeImageAPI":
        self._server = _Server(("127.0.0.1", self.port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-image-api", daemon=True)  # stop() waits one poll at most
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.stopped.set()  # wakes every handler that is waiting out a latency or a timeout
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FakeImageAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults and books -----------------------------------------------------------------------

    def inject(self, route: str, fault: str, times: int = 1, **options) -> None:
        """The next `times` requests of `route` fail with `fault` (options: retry_after, delay)."""
        if route not in ROUTES or fault not in FAULTS:
            raise ValueError(f"route must be one of {ROUTES} and fault one of {FAULTS}")
        with self.lock:
            self._faults[route].extend([(fault, options)] * times)

    def fail_from(self, route: str, fault: str, after: int = 0) -> None:
        """Every request of `route` after its first `after` (counted since the start) fails with
        `fault`, until heal()."""
        if route not in ROUTES or fault not in FAULTS:
            raise ValueError(f"route must be one of {ROUTES} and fault one of {FAULTS}")
        with self.lock:
            self._fail_from[route] = (after, fault)

    def heal(self) -> None:
        """No more faults: those injected and not yet met are dropped too."""
        with self.lock:
            self._fail_from.clear()
            self._faults.clear()

    def take_fault(self, route: str) -> tuple[str, dict] | tuple[None, dict]:
        with self.lock:
            if self._faults[route]:
                return self._faults[route].popleft()
            after, fault = self._fail_from.get(route, (None, None))
            if after is not None and self.requests[route] > after:  # this request is counted already
                return fault, {}
            return None, {}

    def hold(self) -> None:
        """Generation requests arriving from now on wait, unanswered, until release()."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def billed_jobs(self) -> int:
        """Jobs the provider would bill: every accepted job that did not fail."""
        with self.lock:
            return sum(job.error is None for job in self.jobs.values())

    def store_file(self, data: bytes) -> str:
        """Keep image bytes where URLs point; return the URL."""
        home = self.files_from or self
        name = f"{uuid.uuid4().hex}.png"
        with home.lock:
            home.files[name] = data
        return f"{home.url}/files/{name}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # many clients connect at once; a short backlog would drop SYNs

    def handle_error(self, request, client_address) -> None:
        # Clients that timed out, and connections reset on purpose, are expected; anything else
        # is a bug in this fake and should be seen.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _handler_for(api: FakeImageAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real APIs
        # Headers and body go out in separate writes: with Nagle's algorithm on, the body would
        # wait for the client's delayed ACK (~40 ms on every answer).
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        # -- plumbing -------------------------------------------------------------------------

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}

        def _send(self, status: int, data: bytes, content_type: str = "application/json",
                  headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), headers=headers)

        def _reset(self) -> None:
            # SO_LINGER 0 makes close() send a TCP RST: the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def _generic_fault(self, fault: str | None, options: dict) -> bool:
            """Answer with a transport or status fault; True if the request is finished."""
            if fault == "429":
                retry_after = options.get("retry_after", 0)
                self._json(429, {"error": {"message": "rate limit exceeded"}}, {"Retry-After": str(retry_after)})
            elif fault in ("500", "503"):
                self._json(int(fault), {"error": {"message": "server error"}})
            elif fault in STATUS_MESSAGES:
                self._json(int(fault), {"error": {"message": STATUS_MESSAGES[fault]}})
            elif fault == "timeout":
                api.stopped.wait(options.get("delay", 5.0))
                self.close_connection = True
            elif fault == "reset":
                self._reset()
            else:
                return False
            return True

        def _authorized(self, route: str) -> bool:
            header = self.headers.get("Authorization")
            with api.lock:
                api.auth_seen.append((route, header))
            if api.api_key is None or route == "file" or header == f"Bearer {api.api_key}":
                return True
            # Real APIs echo (part of) a wrong key back; the client must keep it out of its logs.
            self._json(401, {"error": {"message": f"Incorrect API key provided: {header}"}})
            return False

        def _route(self, method: str) -> tuple[str | None, str | None]:
            path = self.path.split("?")[0]
            if method == "POST" and path == "/v1/images/generations":
                return "generate", None
            if method == "POST" and path == "/queue":
                return "submit", None
            if method == "GET" and (m := re.fullmatch(r"/queue/requests/([\w-]+)/status", path)):
                return "status", m.group(1)
            if method == "GET" and (m := re.fullmatch(r"/queue/requests/([\w-]+)", path)):
                return "result", m.group(1)
            if method == "GET" and (m := re.fullmatch(r"/files/([\w-]+\.png)", path)):
                return "file", m.group(1)
            return None, None

        def _dispatch(self, method: str) -> None:
            route, arg = self._route(method)
            body = self._body() if method == "POST" else {}
            if route is None:
                self._json(404, {"error": {"message": "not found"}})
                return
            with api.lock:
                api.requests[route] += 1
                if method == "POST":
                    api.bodies.append((route, body))
                api._in_flight += 1
                api.max_in_flight = max(api.max_in_flight, api._in_flight)
            started = time.time()
            try:
                if not self._authorized(route):
                    return
                fault, options = api.take_fault(route)
                if self._generic_fault(fault, options):
                    return
                getattr(self, f"_{route}")(body, arg, fault)
            finally:
                with api.lock:
                    api._in_flight -= 1
                    api.spans.append((route, started, time.time()))

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_GET(self) -> None:
            self._dispatch("GET")

        # -- the routes -----------------------------------------------------------------------

        def _image_bytes(self, data: bytes, fault: str | None) -> bytes:
            if fault == "truncated":
                return data[: len(data) // 2]
            if fault == "corrupt":
                return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
            return data

        def _wait_for_release(self) -> bool:
            """False when the API stopped first."""
            if api._released.is_set():
                return True
            with api.lock:
                api.held += 1
            try:
                while not api._released.wait(0.02):
                    if api.stopped.is_set():
                        return False
                return True
            finally:
                with api.lock:
                    api.held -= 1

        def _generate(self, body: dict, _, fault: str | None) -> None:
            if fault == "refuse":
                self._json(400, {"error": {"code": "content_policy_violation", "message": REFUSAL}})
                return
            key = self.headers.get("Idempotency-Key")
            with api.lock:
                api.generate_keys.append(key)
                replay = api._answers.get(key) if api.honour_idempotency and key is not None else None
            if replay is not None:
                self._json(200, replay)
                return
            if not self._wait_for_release() or api.stopped.wait(api.latency):
                return
            width, height = _size(body.get("size"))
            data = self._image_bytes(fake_image(str(body.get("prompt", "")), 0, width, height), fault)
            if body.get("response_format") == "url":
                item = {"url": api.store_file(data)}
            else:
                item = {"b64_json": base64.b64encode(data).decode()}
            answer = {"created": int(time.time()), "data": [item]}
            with api.lock:
                api.generated += 1  # billed once made, whether or not the client is still there
                if key is not None:
                    api._answers[key] = answer
            self._json(200, answer)

        def _submit(self, body: dict, _, fault: str | None) -> None:
            key = self.headers.get("Idempotency-Key")
            with api.lock:
                existing = next((j for j in api.jobs.values() if key is not None and j.key == key), None)
                if existing is None:
                    error = {"refuse": "content policy violation: NSFW content detected",
                             "job_failed": "internal error while generating"}.get(fault)
                    seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
                    existing = Job(uuid.uuid4().hex, key, str(body.get("prompt", "")), seed,
                                   _size(body.get("image_size")), time.monotonic() + api.latency, error)
                    api.jobs[existing.id] = existing
                api.submits.append((key, existing.id))
            self._json(200, {"request_id": existing.id, "status": "IN_QUEUE"})

        def _job(self, request_id: str) -> Job | None:
            with api.lock:
                job = api.jobs.get(request_id)
            if job is None:
                self._json(404, {"error": {"message": f"no request {request_id}"}})
            return job

        def _status(self, _, request_id: str, fault: str | None) -> None:
            if (job := self._job(request_id)) is None:
                return
            if time.monotonic() < job.ready_at:
                self._json(200, {"status": "IN_PROGRESS"})
            elif job.error is not None:
                self._json(200, {"status": "FAILED", "error": job.error})
            else:
                self._json(200, {"status": "COMPLETED"})

        def _result(self, _, request_id: str, fault: str | None) -> None:
            if (job := self._job(request_id)) is None:
                return
            if time.monotonic() < job.ready_at or job.error is not None:
                self._json(400, {"error": {"message": f"request {request_id} has no result"}})
                return
            url = api.store_file(fake_image(job.prompt, job.seed, *job.size))
            self._json(200, {"images": [{"url": url, "content_type": "image/png"}]})

        def _file(self, _, name: str, fault: str | None) -> None:
            with api.lock:
                data = api.files.get(name)
            if data is None:
                self._json(404, {"error": {"message": "no such file"}})
                return
            self._send(200, self._image_bytes(data, fault), "image/png")

    return Handler


def main() -> None:
    """`python -m evolvedirector.testing.fake_images_api [--latency 1] [--port 8801]`: serve until
    SIGINT or SIGTERM (`kill`, Ctrl-C), then exit 0 with one line on stderr.

    Prints `http://127.0.0.1:PORT` on the first line of stdout once it serves and handles those
    signals, so a parent process knows where it is and may stop it from then on.
    """
    import argparse

    from evolvedirector.testing.serve import add_lifetime_option, say_stopped, serve_until_stopped

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    add_lifetime_option(parser)
    args = parser.parse_args()
    with FakeImageAPI(latency=args.latency, port=args.port) as api:
        reason = serve_until_stopped(lambda: print(api.url, flush=True), args.stop_on_stdin_close)
    say_stopped(f"fake images API on {api.url}", reason)


if __name__ == "__main__":
    main()
