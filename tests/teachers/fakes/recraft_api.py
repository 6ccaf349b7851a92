"""A fake of Recraft's API (external.api.recraft.ai), from its public documentation
(recraft.ai/docs/api-reference: getting started, appendix, errors; its Swagger/OpenAPI schema;
read 2026-12-07).

```
POST /v1/images/generations   Bearer  {prompt, model, size, response_format, ...}
     -> {created, credits, data: [{image_id, b64_json | url}]}   (credits: what the call cost)
GET  /v1/users/me             Bearer  -> {id, email, name, credits}   (free: the account)
GET  /images/{id}.png         no key: a `url` result, on another host (localhost), public and signed
```

A missing or wrong token is a 401 with the plain-text body `request unauthorized`, an unknown
path a 404 `404 page not found` (the documented known errors). `size` must be one of the
schema's `ImageSize` values for recraftv2/recraftv3, or an aspect `w:h` of the appendix;
`response_format` is `url` (the default) or `b64_json`. Requests the API cannot process fail with
an error status and a JSON `{code, message}` body; the documents name no status for an account
whose API units ran out, so `no_credits` holds that reply (by default a 400 with code
`not_enough_credits`; a test may make it a 402). Each image costs `price` units and counts in
`billed`. Images are drawn at an eighth of their size (the same protocol, quicker tests).
"""

from __future__ import annotations

import base64
import itertools
import time

from tests.teachers.fakes.server import Call, FakeServer, Reply, png

UNAUTHORIZED = Reply(401, content=b"request unauthorized", headers={"content-type": "text/plain"})
NOT_FOUND = Reply(404, content=b"404 page not found", headers={"content-type": "text/plain"})
# The schema's ImageSize enum (recraftv2, recraftv3), and the aspects of the appendix's table.
SIZES = ("1024x1024", "1365x1024", "1024x1365", "1536x1024", "1024x1536", "1820x1024", "1024x1820", "1024x2048",
         "2048x1024", "1434x1024", "1024x1434", "1024x1280", "1280x1024", "1024x1707", "1707x1024")
ASPECTS = {"1:1": "1024x1024", "2:1": "2048x1024", "1:2": "1024x2048", "3:2": "1536x1024", "2:3": "1024x1536",
           "4:3": "1365x1024", "3:4": "1024x1365", "5:4": "1280x1024", "4:5": "1024x1280", "6:10": "1024x1707",
           "14:10": "1434x1024", "10:14": "1024x1434", "16:9": "1820x1024", "9:16": "1024x1820"}
MODELS = ("recraftv3", "recraftv2")


class FakeRecraft(FakeServer):
    name = "recraft"

    def __init__(self, key: str = "recraft-test-token", *, credits: int = 1000, price: int = 40):
        super().__init__()
        self.key = key
        self.credits, self.price = credits, price
        self.no_credits = Reply(400, {"code": "not_enough_credits", "message": "Not enough credits"})
        self.generations: list[dict] = []  # the bodies of generations that made an image
        self.images: dict[str, tuple[str, int, int]] = {}  # image id -> (prompt, width, height)
        self._ids = itertools.count(1)

    def route(self, call: Call) -> str:
        if call.path.startswith("/images/"):
            return "image"
        return {("POST", "/v1/images/generations"): "generate",
                ("GET", "/v1/users/me"): "me"}.get((call.method, call.path), "unknown")

    def handle(self, route: str, call: Call) -> Reply:
        if route == "image":  # a signed public link: no token
            found = self.images.get(call.path.removeprefix("/images/").removesuffix(".png"))
            if found is None or call.query.get("sig") != "signed":
                return Reply(403, content=b"AccessDenied", headers={"content-type": "text/plain"})
            prompt, width, height = found
            return Reply(content=png(prompt, width // 8, height // 8), headers={"content-type": "image/png"})
        if call.headers.get("authorization") != f"Bearer {self.key}":
            return UNAUTHORIZED
        if route == "me":
            return Reply(json={"id": "6f1c2a4e-0000-4000-8000-000000000001", "email": "designer@example.com",
                               "name": "Designer", "credits": self.credits})
        if route == "generate":
            return self._generate(call)
        return NOT_FOUND

    def _generate(self, call: Call) -> Reply:
        body = call.json if isinstance(call.json, dict) else {}
        size = body.get("size", "1024x1024")
        size = ASPECTS.get(size, size)
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return Reply(400, {"code": "invalid_prompt", "message": "prompt is required"})
        if body.get("model", "recraftv3") not in MODELS:
            return Reply(400, {"code": "invalid_model", "message": f"unknown model {body.get('model')!r}"})
        if size not in SIZES:
            return Reply(400, {"code": "invalid_size", "message": f"size {body.get('size')!r} is not supported"})
        if body.get("response_format", "url") not in ("url", "b64_json"):
            return Reply(400, {"code": "invalid_response_format", "message": "response_format: url or b64_json"})
        with self.lock:
            if self.credits < self.price:
                return self.no_credits
            self.credits -= self.price
            self.billed += 1
            self.generations.append(body)
            image_id = f"img-{next(self._ids)}"
            width, height = (int(side) for side in size.split("x"))
            self.images[image_id] = (body["prompt"], width, height)
        if body.get("response_format") == "b64_json":
            item = {"image_id": image_id, "b64_json": base64.b64encode(png(body["prompt"], width // 8,
                                                                           height // 8)).decode()}
        else:
            port = self.url.rsplit(":", 1)[1]
            item = {"image_id": image_id, "url": f"http://localhost:{port}/images/{image_id}.png?sig=signed"}
        return Reply(json={"created": int(time.time()), "credits": self.price, "data": [item]})
