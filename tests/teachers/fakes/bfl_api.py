"""A fake of Black Forest Labs' FLUX API, from its public documentation (docs.bfl.ai, read 2026-12-07).

```
POST /v1/{model}          x-key  {prompt, width, height, seed, ...}  -> {id, polling_url}
GET  /v1/get_result?id=   x-key  -> {id, status, result}: Pending (`pending_polls` times), then Ready
GET  /delivery/{id}.png   no key: the signed result.sample URL, on another host (localhost)
GET  /v1/credits          x-key  -> {"credits": ...}
```

A missing or wrong key is a 403 `{"detail": ...}` (FastAPI's shape, which the API's OpenAPI
schema shows); width or height off the documented grid (multiples of `multiple`, 256..1440) is a
422 `{"detail": [{loc, msg, type}]}`; no credits left is a 402; more than `max_active` tasks not
yet finished is a 429 whose body holds `retry_after`. A prompt in `outcome` ends with that status
instead of Ready ("Request Moderated", "Content Moderated", "Error"); an id it never issued is
"Task not found". A Ready task costs `price` credits and counts in `billed`.
"""

from __future__ import annotations

import itertools

from tests.teachers.fakes.server import Call, FakeServer, Reply, png

FORBIDDEN = Reply(403, {"detail": "Not authenticated"})


class FakeBFL(FakeServer):
    name = "bfl"

    def __init__(self, key: str = "bfl-test-key", *, credits: float = 100.0, price: float = 4.0,
                 pending_polls: int = 1, max_active: int = 24, multiple: int = 32):
        super().__init__()
        self.key = key
        self.credits, self.price = credits, price
        self.pending_polls, self.max_active, self.multiple = pending_polls, max_active, multiple
        self.outcome: dict[str, str] = {}  # prompt -> final status other than Ready
        self.polling_host: str | None = None  # answer polling URLs on this host instead of our own
        self.tasks: dict[str, dict] = {}  # id -> {body, polls, status}
        self.submits: list[dict] = []  # the bodies of accepted submits
        self._ids = itertools.count(1)

    def route(self, call: Call) -> str:
        if call.path == "/v1/get_result":
            return "poll"
        if call.path == "/v1/credits":
            return "credits"
        if call.path.startswith("/delivery/"):
            return "delivery"
        return "submit" if call.method == "POST" and call.path.startswith("/v1/") else "unknown"

    def handle(self, route: str, call: Call) -> Reply:
        if route == "delivery":  # a signed URL: the signature is its credential, no key is asked
            task = self.tasks.get(call.path.removeprefix("/delivery/").removesuffix(".png"))
            if task is None or call.query.get("sig") != "signed":
                return Reply(403, content=b"<Error>AuthenticationFailed</Error>", headers={"content-type": "text/xml"})
            body = task["body"]
            return Reply(content=png(body["prompt"], body["width"], body["height"], body.get("seed") or 0),
                         headers={"content-type": "image/png"})
        if call.headers.get("x-key") != self.key:
            return FORBIDDEN
        if route == "credits":
            return Reply(json={"credits": self.credits})
        if route == "submit":
            return self._submit(call)
        if route == "poll":
            return self._poll(call.query.get("id", ""))
        return Reply(404, {"detail": "Not Found"})

    def _submit(self, call: Call) -> Reply:
        body = call.json if isinstance(call.json, dict) else {}
        errors = [{"loc": ["body", side], "msg": f"must be a multiple of {self.multiple} in 256..1440",
                   "type": "value_error"}
                  for side in ("width", "height")
                  if not (isinstance(body.get(side), int) and 256 <= body[side] <= 1440
                          and body[side] % self.multiple == 0)]
        if not isinstance(body.get("prompt"), str):
            errors.append({"loc": ["body", "prompt"], "msg": "field required", "type": "missing"})
        if errors:
            return Reply(422, {"detail": errors})
        with self.lock:
            if self.credits < self.price:
                return Reply(402, {"detail": "Insufficient credits. Add credits at https://dashboard.bfl.ai"})
            if sum(task["status"] == "Pending" for task in self.tasks.values()) >= self.max_active:
                return Reply(429, {"detail": "Too many active tasks", "retry_after": 1})
            task_id = f"task-{next(self._ids)}"
            self.tasks[task_id] = {"body": body, "polls": 0, "status": "Pending"}
            self.submits.append(body)
        host = self.polling_host or self.url.split("//", 1)[1]
        return Reply(json={"id": task_id, "polling_url": f"http://{host}/v1/get_result?id={task_id}"})

    def _poll(self, task_id: str) -> Reply:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return Reply(json={"id": task_id, "status": "Task not found", "result": None})
            task["polls"] += 1
            if task["status"] == "Pending" and task["polls"] > self.pending_polls:
                task["status"] = self.outcome.get(task["body"]["prompt"], "Ready")
                if task["status"] == "Ready":  # only an image made is charged
                    self.credits -= self.price
                    self.billed += 1
            status = task["status"]
        if status != "Ready":
            return Reply(json={"id": task_id, "status": status, "result": None})
        port = self.url.rsplit(":", 1)[1]
        sample = f"http://localhost:{port}/delivery/{task_id}.png?se=2026-12-07T10%3A10%3A00Z&sig=signed"
        return Reply(json={"id": task_id, "status": "Ready",
                           "result": {"sample": sample, "prompt": task["body"]["prompt"]}})
