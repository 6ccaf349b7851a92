"""The blind A/B page: people choose between the student's and a teacher's image of one prompt.

`evolvedirector ab RUN_DIR` serves it (FastAPI, plain HTML and JavaScript from `ab_static/`).
The pairs are those of the latest `evolvedirector eval`: for each prompt, the student's image
against each teacher's. Votes go into the run's store (`ab_votes`) and the report folds them in.

Blindness: each pair gets a fresh random id and a random side for the student. The page sees the
prompt, that id and two image URLs `/api/image/<id>/left|right`; image responses carry the PNG
bytes only (no file name, hash, ETag or modification time, any of which could tell a teacher's
image bought long ago from a fresh render).

Safety: bound to 127.0.0.1 unless told otherwise; every `/api/` request needs the token (made
with `secrets`, printed once in the address, compared in constant time, never logged: the access
log is off because the first request carries it in its query string); request bodies are
pydantic models that refuse unknown fields and choices, capped at `MAX_BODY_BYTES` before they are
read into memory, and a refusal names the field without echoing what was sent; images come only
from the run's content-addressed store, by a hash the server itself chose, checked against its
pattern and its content.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import socket
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Path as PathParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from evolvedirector.store import Store

STATIC = Path(__file__).parent / "ab_static"
STATIC_TYPES = {"ab.js": "text/javascript; charset=utf-8", "ab.css": "text/css; charset=utf-8"}
TOKEN_HEADER = "X-AB-Token"
PAIR_ID = r"^[A-Za-z0-9_-]{22,64}$"
HASH = r"^[0-9a-f]{64}$"
MAX_BODY_BYTES = 4096  # a vote is about 100 bytes; a token holder's 200 MB body took 1.1 GB uncapped
MAX_OPEN_PAIRS = 1000  # pairs shown but not voted on (skipped, or a tab closed) are forgotten past this
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class AbError(ValueError):
    """The A/B page cannot start; the message says what is missing."""


@dataclass(frozen=True)
class Item:
    """One comparison people can be asked: the student's image against one teacher's."""

    prompt: str
    domain: str
    teacher: str
    student_image: str
    teacher_image: str


@dataclass(frozen=True)
class Pair:
    item: Item
    student_side: Literal["left", "right"]


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pair_id: str = Field(pattern=PAIR_ID)
    choice: Literal["left", "right", "tie"]


class PairOut(BaseModel):
    pair_id: str
    prompt: str
    left: str
    right: str
    votes: int


class VoteOut(BaseModel):
    stored: bool
    votes: int


def load_items(run_dir: Path) -> list[Item]:
    """The pairs of the latest evaluation whose two images are in the run's image store."""
    path = Path(run_dir) / "eval" / "eval.json"
    if not path.is_file():
        raise AbError(f"{run_dir} has no evaluation yet (no eval/eval.json): run `evolvedirector eval {run_dir}` first")
    try:
        results = json.loads(path.read_text())
        entries = results["items"]
    except (ValueError, KeyError, TypeError) as error:
        raise AbError(
            f"{path} is not an evaluation result ({type(error).__name__}); run `evolvedirector eval` again"
        ) from None
    images = Path(run_dir) / "images"
    pattern = re.compile(HASH)
    items = []
    for entry in entries:
        student = entry.get("student_image")
        for teacher, result in (entry.get("teachers") or {}).items():
            image = (result or {}).get("image")
            hashes_ok = all(isinstance(h, str) and pattern.fullmatch(h) for h in (student, image))
            if hashes_ok and all((images / h[:2] / f"{h}.png").is_file() for h in (student, image)):
                domain = str(entry.get("domain", "other"))
                items.append(Item(str(entry["prompt"]), domain, str(teacher), student, image))
    if not items:
        raise AbError(f"{path} lists no pair with both images on disk: run `evolvedirector eval {run_dir}` again")
    return items


class AbState:
    """The pairs handed out and the vote counts; lives in the server's event-loop thread."""

    def __init__(self, run_dir: Path, items: list[Item], store: Store):
        self.images = Path(run_dir) / "images"
        self.items = items
        self.store = store
        self.random = random.SystemRandom()  # sides and pair choice people cannot predict
        self.open: OrderedDict[str, Pair] = OrderedDict()
        self.counts = {item: 0 for item in items}
        votes = store.votes()
        for vote in votes:
            key = Item(vote["prompt"], vote["domain"], vote["teacher"], vote["student_image"], vote["teacher_image"])
            if key in self.counts:
                self.counts[key] += 1
        self.total = len(votes)

    def next_pair(self) -> tuple[str, Pair]:
        """The least-voted item (ties drawn at random), with the student on a random side."""
        fewest = min(self.counts.values())
        item = self.random.choice([i for i, n in self.counts.items() if n == fewest])
        pair = Pair(item, self.random.choice(("left", "right")))
        pair_id = secrets.token_urlsafe(16)
        self.open[pair_id] = pair
        while len(self.open) > MAX_OPEN_PAIRS:
            self.open.popitem(last=False)
        return pair_id, pair

    def image_bytes(self, pair: Pair, side: str) -> bytes:
        digest = pair.item.student_image if side == pair.student_side else pair.item.teacher_image
        if not re.fullmatch(HASH, digest):  # never build a path from anything but a hash
            raise HTTPException(404, "no such image")
        data = (self.images / digest[:2] / f"{digest}.png").read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise HTTPException(500, "an image in the store does not match its hash")
        return data

    def vote(self, pair_id: str, choice: str) -> int:
        pair = self.open.pop(pair_id, None)
        if pair is None:
            raise HTTPException(404, "unknown or already answered pair")
        preferred = "tie" if choice == "tie" else ("student" if choice == pair.student_side else "teacher")
        item = pair.item
        self.store.add_vote(
            prompt=item.prompt, domain=item.domain, teacher=item.teacher, student_image=item.student_image,
            teacher_image=item.teacher_image, student_side=pair.student_side, preferred=preferred,
        )
        self.counts[item] += 1
        self.total += 1
        return self.total


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before more of it is read.

    A declared Content-Length is checked first; a chunked body is counted as it arrives (the
    HTTPException raised mid-read passes through FastAPI's body parsing to its 413 answer).
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self.refusal)
            return message

        await self.app(scope, counted_receive, send)

    @property
    def refusal(self) -> str:
        return f"request body over {self.limit} bytes"

    async def _refuse(self, scope, receive, send):
        await JSONResponse({"detail": self.refusal}, status_code=413)(scope, receive, send)


def create_app(run_dir: Path, token: str) -> FastAPI:
    run_dir = Path(run_dir)
    if len(token) < 16:
        raise AbError("the A/B token must be at least 16 characters")
    items = load_items(run_dir)
    expected = token.encode()
    holder: dict[str, AbState] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # SQLite connections belong to the thread that opens them: the event loop's, which also
        # runs every (async) endpoint below.
        store = Store(run_dir / "evolve.db")
        state = holder["state"] = AbState(run_dir, items, store)
        votes_at_start = state.total
        try:
            yield
        finally:
            try:
                if state.total != votes_at_start:  # fold the new votes into the report
                    from evolvedirector.evaluation.report import write_report

                    write_report(store, run_dir)
            finally:
                store.close()

    app = FastAPI(title="EvolveDirector blind A/B", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def refused(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input back; name the field and the rule only.
        detail = [{"loc": list(item.get("loc", ())), "msg": item.get("msg", "")} for item in error.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/api/"):
            given = request.headers.get(TOKEN_HEADER, "")
            if not secrets.compare_digest(given.encode(), expected):
                return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the page's address holds the token
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        # The page holds no data, so it needs no token; its script sends the token on every call.
        response = FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_TYPES:  # a fixed list: nothing else on disk is reachable
            raise HTTPException(404, "not found")
        return Response((STATIC / name).read_bytes(), media_type=STATIC_TYPES[name])

    @app.get("/api/next", response_model=PairOut)
    async def next_pair():
        state = holder["state"]
        pair_id, pair = state.next_pair()
        return PairOut(pair_id=pair_id, prompt=pair.item.prompt, left=f"/api/image/{pair_id}/left",
                       right=f"/api/image/{pair_id}/right", votes=state.total)

    @app.get("/api/image/{pair_id}/{side}")
    async def image(
        pair_id: Annotated[str, PathParam(pattern=PAIR_ID)], side: Literal["left", "right"],
    ) -> Response:
        state = holder["state"]
        pair = state.open.get(pair_id)
        if pair is None:
            raise HTTPException(404, "unknown pair")
        return Response(state.image_bytes(pair, side), media_type="image/png")

    @app.post("/api/vote", response_model=VoteOut)
    async def vote(body: VoteIn):
        return VoteOut(stored=True, votes=holder["state"].vote(body.pair_id, body.choice))

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use is a clear error and port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise AbError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(app: FastAPI):
    """A uvicorn server without access log (the first request's address carries the token)."""
    import uvicorn

    config = uvicorn.Config(app, access_log=False, log_level="warning", lifespan="on")
    return uvicorn.Server(config)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def wait_started(server, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not server.started:
        if time.time() > deadline:
            raise AbError("the A/B server did not start")
        time.sleep(0.02)
