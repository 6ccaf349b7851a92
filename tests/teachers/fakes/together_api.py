"""A fake of Together's images API, from its public documentation (docs.together.ai: Create image
reference, image generation parameters, List all models reference, error codes; read 2026-12-07).

```
POST /v1/images/generations   Bearer  {model, prompt, width, height, steps, n, seed, response_format}
     -> {id, model, object: "list", data: [{index, b64_json | url, type}]}
GET  /v1/models               Bearer  -> a JSON array of {id, object, type, display_name, ...} (free)
GET  /v1/files/{id}.png       no key: a `url` result, on another host (localhost)
```

Errors are `{"error": {"message", "type", "param", "code"}}`: a missing or invalid key is a 401
(`invalid_api_key`), an account at its spending limit or out of credits a 402, too many requests
a 429, a misconfigured request a 400 (a width or height off the multiples of 8 the parameters
page asks for, an unknown response_format, a model not in `models`). `response_format` is
`base64` or `url`. Each image costs `price` dollars of `credits` and counts in `billed`. Images
are drawn at an eighth of their size (the same protocol, quicker tests).
"""

from __future__ import annotations

import base64
import itertools

from tests.teachers.fakes.server import Call, FakeServer, Reply, png


def error(status: int, message: str, type_: str, code: str | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})


UNAUTHORIZED = error(401, "Invalid API key provided. You can find your API key at "
                     "https://api.together.ai/settings/api-keys.", "invalid_request_error", "invalid_api_key")
MODELS = ("black-forest-labs/FLUX.1-schnell", "black-forest-labs/FLUX.1-schnell-Free", "black-forest-labs/FLUX.1.1-pro")


class FakeTogether(FakeServer):
    name = "together"

    def __init__(self, key: str = "together-test-key", *, credits: float = 1.0, price: float = 0.003):
        super().__init__()
        self.key = key
        self.credits, self.price = credits, price
        self.generations: list[dict] = []  # the bodies of generations that made an image
        self.files: dict[str, tuple[str, int, int, int]] = {}  # id -> (prompt, width, height, seed)
        self._ids = itertools.count(1)

    def route(self, call: Call) -> str:
        if call.path.startswith("/v1/files/"):
            return "file"
        return {("POST", "/v1/images/generations"): "generate",
                ("GET", "/v1/models"): "models"}.get((call.method, call.path), "unknown")

    def handle(self, route: str, call: Call) -> Reply:
        if route == "file":  # the image CDN: a link, no key
            found = self.files.get(call.path.removeprefix("/v1/files/").removesuffix(".png"))
            if found is None:
                return Reply(404, content=b"Not Found", headers={"content-type": "text/plain"})
            prompt, width, height, seed = found
            return Reply(content=png(prompt, width // 8, height // 8, seed), headers={"content-type": "image/png"})
        if call.headers.get("authorization") != f"Bearer {self.key}":
            return UNAUTHORIZED
        if route == "models":
            return Reply(json=[{"id": model, "object": "model", "created": 1727000000, "type": "image",
                                "display_name": model.split("/")[1], "organization": "Black Forest Labs"}
                               for model in MODELS])
        if route == "generate":
            return self._generate(call)
        return error(404, "Not found", "invalid_request_error", "not_found")

    def _generate(self, call: Call) -> Reply:
        body = call.json if isinstance(call.json, dict) else {}
        width, height = body.get("width", 1024), body.get("height", 1024)
        if not isinstance(body.get("prompt"), str) or body.get("model") not in MODELS:
            return error(400, "prompt and a valid model are required", "invalid_request_error")
        if not all(type(side) is int and side > 0 and side % 8 == 0 for side in (width, height)):
            return error(400, "width and height must be positive multiples of 8", "invalid_request_error")
        if body.get("response_format", "url") not in ("base64", "url"):
            return error(400, "response_format must be one of base64, url", "invalid_request_error")
        seed = body.get("seed") if type(body.get("seed")) is int else 0
        with self.lock:
            if self.credits < self.price:
                return error(402, "Credit limit exceeded: add credits or raise your spending limit to continue.",
                             "credit_limit", "payment_required")
            self.credits -= self.price
            self.billed += 1
            self.generations.append(body)
            image_id = f"img-{next(self._ids)}"
            self.files[image_id] = (body["prompt"], width, height, seed)
        if body.get("response_format") == "base64":
            data = base64.b64encode(png(body["prompt"], width // 8, height // 8, seed)).decode()
            item = {"index": 0, "b64_json": data, "type": "b64_json"}
        else:
            port = self.url.rsplit(":", 1)[1]
            item = {"index": 0, "url": f"http://localhost:{port}/v1/files/{image_id}.png", "type": "url"}
        return Reply(json={"id": f"gen-{image_id}", "model": body["model"], "object": "list", "data": [item]})
