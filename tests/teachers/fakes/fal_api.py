"""A fake of fal's queue (queue.fal.run), from its public documentation (docs.fal.ai: model APIs,
queue; model errors; request errors; the FLUX.1 [dev] API page; read 2026-12-07).

```
POST /{model_id}[/{subpath}]                     Key auth  {prompt, image_size, seed, ...}
     -> {request_id, status, status_url, response_url, cancel_url, queue_position}
GET  /{model_id}/requests/{id}/status            -> 202 {status: IN_QUEUE | IN_PROGRESS}, then 200 COMPLETED
GET  /{model_id}/requests/{id}                   -> the result: {images: [{url, width, height,
                                                    content_type}], seed, has_nsfw_concepts: [bool], ...}
GET  /files/{id}.png                             no key: the result's media URL, on another host (localhost)
```

`model_id` is the app (namespace/name): a subpath (`/dev` of fal-ai/flux/dev) is used to submit,
"but not when getting request status or results"; status or result asked under any other path is
a 404. The key goes in `Authorization: Key <FAL_KEY>`; a missing or wrong one is a 401
`{"detail": ...}`. `image_size` is one of the documented enum names or `{width, height}`;
anything else finishes as a 422 `{"detail": [{loc, msg, type}]}` model error (fal's error
structure), as does a prompt in `policy_violations` (type `content_policy_violation`); both cost
nothing. A prompt in `nsfw` is drawn, billed, and withheld by the safety checker: its image is
black and `has_nsfw_concepts` is `[true]`. Images are drawn at an eighth of the asked size (the
protocol is the same; the tests stay fast).
"""

from __future__ import annotations

import io
import itertools

import numpy as np
from PIL import Image

from tests.teachers.fakes.server import Call, FakeServer, Reply, png

UNAUTHORIZED = Reply(401, {"detail": "Authentication is required to access this application."})
IMAGE_SIZES = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
               "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
DEFAULT_SIZE = "landscape_4_3"  # FLUX.1 [dev]'s default image_size


def app_id(path: str) -> str:
    """/fal-ai/flux/dev -> fal-ai/flux: the namespace and the app, without the subpath."""
    return "/".join(path.strip("/").split("/")[:2])


def black_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def asked_size(value) -> tuple[int, int] | None:
    """(width, height) of an image_size value: an enum name or {width, height}; None if neither."""
    if isinstance(value, str):
        return IMAGE_SIZES.get(value)
    sides = [value.get(side) for side in ("width", "height")] if isinstance(value, dict) else []
    if len(sides) == 2 and all(type(side) is int and side > 0 for side in sides):
        return sides[0], sides[1]
    return None


class FakeFal(FakeServer):
    name = "fal"

    def __init__(self, key: str = "fal-test-key", *, pending_polls: int = 1):
        super().__init__()
        self.key = key
        self.pending_polls = pending_polls
        self.nsfw: set[str] = set()  # prompts the safety checker flags after drawing them (billed)
        self.policy_violations: set[str] = set()  # prompts the content checker refuses (free)
        self.jobs: dict[str, dict] = {}  # request id -> {app, body, polls, status}
        self.submits: list[tuple[str, dict]] = []  # (submit path, body) of every accepted submit
        self._ids = itertools.count(1)

    def route(self, call: Call) -> str:
        if call.path.startswith("/files/"):
            return "media"
        if call.method == "POST" and "/requests/" not in call.path:
            return "submit"
        if call.method == "GET" and "/requests/" in call.path:
            return "status" if call.path.endswith("/status") else "result"
        return "unknown"

    def handle(self, route: str, call: Call) -> Reply:
        if route == "media":  # fal's CDN: public, no key
            job = self.jobs.get(call.path.removeprefix("/files/").removesuffix(".png"))
            if job is None:
                return Reply(404, content=b"Not Found", headers={"content-type": "text/plain"})
            width, height = asked_size(job["body"].get("image_size", DEFAULT_SIZE))
            if job["body"]["prompt"] in self.nsfw:  # what the safety checker sends instead
                image = black_png(width // 8, height // 8)
            else:
                image = png(job["body"]["prompt"], width // 8, height // 8, job["seed"])
            return Reply(content=image, headers={"content-type": "image/png"})
        if call.headers.get("authorization") != f"Key {self.key}":
            return UNAUTHORIZED
        if route == "submit":
            return self._submit(call)
        if route in ("status", "result"):
            prefix, _, rest = call.path.strip("/").partition("/requests/")
            job = self.jobs.get(rest.removesuffix("/status"))
            if job is None or prefix != job["app"]:
                return Reply(404, {"detail": "Request not found"})
            request_id = rest.removesuffix("/status")
            return self._status(request_id, job) if route == "status" else self._result(request_id, job)
        return Reply(404, {"detail": "Not Found"})

    def _submit(self, call: Call) -> Reply:
        body = call.json if isinstance(call.json, dict) else {}
        with self.lock:
            request_id = f"req-{next(self._ids)}"
            self.jobs[request_id] = {"app": app_id(call.path), "body": body, "polls": 0, "status": "IN_QUEUE",
                                     "seed": body.get("seed") if type(body.get("seed")) is int else 42}
            self.submits.append((call.path, body))
        base = f"{self.url}/{app_id(call.path)}/requests/{request_id}"
        return Reply(json={"request_id": request_id, "status": "IN_QUEUE", "queue_position": 0,
                           "status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"})

    def _status(self, request_id: str, job: dict) -> Reply:
        with self.lock:
            job["polls"] += 1
            if job["status"] != "COMPLETED" and job["polls"] > self.pending_polls:
                job["status"] = "COMPLETED"
                if self._error(job) is None:  # an image was drawn: billed, even if then withheld
                    self.billed += 1
            status = job["status"]
        base = f"{self.url}/{job['app']}/requests/{request_id}"
        if status != "COMPLETED":
            return Reply(202, {"status": status, "request_id": request_id, "queue_position": 0, "response_url": base})
        return Reply(json={"status": "COMPLETED", "request_id": request_id, "response_url": base, "logs": None,
                           "metrics": {"inference_time": 0.8}})

    def _result(self, request_id: str, job: dict) -> Reply:
        if job["status"] != "COMPLETED":
            return Reply(400, {"detail": "Request is still in progress"})
        if (error := self._error(job)) is not None:
            return Reply(422, {"detail": [error]}, headers={"x-fal-retryable": "false"})
        body = job["body"]
        width, height = asked_size(body.get("image_size", DEFAULT_SIZE))
        port = self.url.rsplit(":", 1)[1]
        flagged = body["prompt"] in self.nsfw
        return Reply(json={
            "images": [{"url": f"http://localhost:{port}/files/{request_id}.png", "width": width, "height": height,
                        "content_type": "image/png"}],
            "timings": {"inference": 0.8}, "seed": job["seed"], "has_nsfw_concepts": [flagged],
            "prompt": body["prompt"],
        })

    def _error(self, job: dict) -> dict | None:
        """The model error a finished job answers instead of a result, if any."""
        body = job["body"]
        if not isinstance(body.get("prompt"), str):
            return {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}
        if body["prompt"] in self.policy_violations:
            return {"loc": ["body", "prompt"], "msg": "The content was flagged by a content checker.",
                    "type": "content_policy_violation", "input": body["prompt"]}
        if asked_size(body.get("image_size", DEFAULT_SIZE)) is None:
            return {"loc": ["body", "image_size"], "msg": "Input should be a valid image size", "type": "value_error"}
        return None
