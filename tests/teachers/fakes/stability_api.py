"""A fake of Stability AI's Stable Image API (v2beta generate, v1 balance), from its API reference.

```
POST /v2beta/stable-image/generate/{core|ultra|sd3}   multipart/form-data, Authorization: Bearer KEY
     Accept: image/* (default) -> the image bytes, headers finish-reason and seed
     Accept: application/json  -> {"image": base64, "finish_reason", "seed"}
GET  /v1/user/balance                                  -> {"credits": number}
```

Errors are the documented JSON bodies `{"id", "name", "errors": [...]}`: 400 bad parameters, 401
a missing or wrong key, 402 out of credits (`payment_required`), 403 `content_moderation` for a
prompt holding `moderated_word` (not billed), 429 the rate limit (`rate_limited()`), 500. A prompt
holding `filtered_word` is generated and billed, but blurred: finish-reason CONTENT_FILTERED.

Books: `billed` images, `credits` left, the aspect ratios asked, each call's form fields.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import uuid

from tests.teachers.fakes.server import Call, FakeServer, Reply, png

MODELS = {"core": 3.0, "ultra": 8.0, "sd3": 6.5}  # credits per image, as documented (sd3: SD 3.5 Large)
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
UNIT = 8  # the fake's image is the ratio times this, in pixels: 1:1 is 8x8, 16:9 is 128x72


def error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"id": uuid.uuid4().hex, "name": name, "errors": [message]}, headers=headers or {})


def rate_limited(retry_after: float | None = None) -> Reply:
    """The documented 429: over 150 requests in 10 s; the key is timed out for 60 s."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return error(429, "rate_limit_exceeded", "You have made more than 150 requests in 10 seconds; "
                 "you are timed out for 60 seconds.", headers)


def parse_form(call: Call) -> dict[str, str] | None:
    """The fields of a multipart/form-data body, or None when the body is not one."""
    content_type = call.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + call.body)
    if not message.is_multipart():
        return None
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
            for part in message.iter_parts()}


class FakeStabilityAPI(FakeServer):
    name = "stability"

    def __init__(self, key: str = "sk-test-key", credits: float = 1000.0,
                 moderated_word: str = "forbidden", filtered_word: str = "blurry"):
        super().__init__()
        self.key = key
        self.credits = credits
        self.moderated_word = moderated_word
        self.filtered_word = filtered_word
        self.aspect_ratios: list[str] = []  # asked, in order, by calls that were billed
        self.forms: list[dict[str, str]] = []  # every generate call's fields

    def route(self, call: Call) -> str:
        if call.method == "POST" and call.path.startswith("/v2beta/stable-image/generate/"):
            return "generate"
        if call.method == "GET" and call.path == "/v1/user/balance":
            return "balance"
        return "unknown"

    def handle(self, route: str, call: Call) -> Reply:
        if route == "unknown":
            return error(404, "not_found", f"{call.method} {call.path} is not a route")
        if call.headers.get("authorization") != f"Bearer {self.key}":
            if route == "balance":  # v1's documented 401 says `message`, not `errors`
                return Reply(401, {"id": uuid.uuid4().hex, "name": "unauthorized", "message": "invalid api key"})
            return error(401, "unauthorized", "authorization: invalid or missing header value")
        if route == "balance":
            with self.lock:
                return Reply(200, {"credits": self.credits})
        return self.generate(call)

    def generate(self, call: Call) -> Reply:
        model = call.path.rsplit("/", 1)[-1]
        form = parse_form(call)
        if model not in MODELS:
            return error(404, "not_found", f"no endpoint {model!r}")
        if form is None:
            return error(400, "bad_request", "content-type: must be multipart/form-data")
        with self.lock:
            self.forms.append(form)
        prompt, ratio = form.get("prompt", ""), form.get("aspect_ratio", "1:1")
        output_format = form.get("output_format", "png")
        if not 1 <= len(prompt) <= 10000:
            return error(400, "bad_request", "prompt: is required")
        if ratio not in ASPECT_RATIOS:
            return error(400, "bad_request", f"aspect_ratio: must be one of {', '.join(ASPECT_RATIOS)}")
        if output_format not in OUTPUT_FORMATS:
            return error(400, "bad_request", "output_format: must be one of png, jpeg, webp")
        if not form.get("seed", "0").isdigit() or int(form.get("seed", "0")) > 4294967294:
            return error(400, "bad_request", "seed: must be a number from 0 to 4294967294")
        if call.headers.get("accept", "image/*") not in ("image/*", "application/json"):
            return error(400, "bad_request", "accept: must be image/* or application/json")
        if self.moderated_word in prompt:  # refused before any work: not charged
            return error(403, "content_moderation", "Your request was flagged by our content moderation system.")
        with self.lock:
            if self.credits < MODELS[model]:
                return error(402, "payment_required", "You lack sufficient credits to make this request.")
            self.credits -= MODELS[model]
            self.billed += 1  # a successful generation, filtered or not, is charged
            self.aspect_ratios.append(ratio)
        seed = int(form.get("seed", "0")) or 42  # 0 asks for a random seed
        width, height = (int(side) * UNIT for side in ratio.split(":"))
        image = png(prompt, width, height, seed)  # always PNG: the client decodes any format
        verdict = "CONTENT_FILTERED" if self.filtered_word in prompt else "SUCCESS"
        if call.headers.get("accept") == "application/json":
            return Reply(200, {"image": base64.b64encode(image).decode(), "finish_reason": verdict, "seed": seed},
                         headers={"content-type": f"application/json; type=image/{output_format}"})
        return Reply(200, content=image, headers={"content-type": f"image/{output_format}",
                                                  "finish-reason": verdict, "seed": str(seed)})
