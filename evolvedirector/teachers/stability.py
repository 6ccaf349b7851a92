"""Stability AI's Stable Image API, v2beta: Stable Image Core, Ultra and Stable Diffusion 3.5.

```
POST base_url/v2beta/stable-image/generate/{core|ultra|sd3}     multipart/form-data:
     prompt, aspect_ratio, seed, output_format, ... (`form`)     Authorization: Bearer KEY
     Accept: image/*  ->  200: the image bytes; headers finish-reason (SUCCESS | CONTENT_FILTERED), seed
GET  base_url/v1/user/balance                                    -> {"credits": 12.5}   (the preflight)
```

The API is synchronous: one request makes one image and answers with it, so there is no request
id to store and nothing to download. The form goes as multipart even without a file (httpx sends
it so through `files=`). The model is asked for an aspect ratio from a fixed list, never pixels:
a square request asks for 1:1, a bucket for the nearest ratio; the image is then fitted to the
request. `Accept: image/*` (the documented default) is asked rather than `application/json`: the
bytes come as they are, without a base64 layer a third larger, and the verdict and seed come in
documented headers; errors are JSON either way, `{"id", "name", "errors": [...]}`.

Errors: 400 and 422 (bad or rejected parameters) and 413 (over 10 MiB) are final; 403 named
`content_moderation` is a refusal, free and final (another 403 is `auth`); 401 is a bad key (not
in the v2beta reference, which the API answers as v1 documents it); 402 (`payment_required`, not in
the reference either, but what the API answers) is out of credits; 429 is the
rate limit, 150 requests in 10 s, after which the key is timed out for 60 s (`rate_limit_wait_s`,
unless a Retry-After says otherwise), which pauses every call of the teacher; 500 is retried.

Billing: credits are charged per successful generation only ("you will not be charged for failed
generations"), so every error status is free. A 200 is billed, and is never asked again: an image
that does not decode is a billed failure. CONTENT_FILTERED is, by the reference, a successful
generation whose output broke the content policy and was blurred: billed, and a `refused` result,
never a training image. A 200 whose finish-reason is missing or unknown may be blurred too: a
billed `bad_response`, never kept.
A timed-out request is retried although the API may have finished (and billed) it: keep
`timeout_s` well above the slowest generation.

Preflight (`probe`): GET /v1/user/balance reads the account's credits with the same key; it makes
no image and costs nothing. It fails with `auth` on a bad key, and with `out_of_credits` when the
balance cannot pay for one image of the endpoint.

Documentation read 2026-12-07:
- https://platform.stability.ai/docs/api-reference (v2beta: authentication, rate limiting; Generate:
  core, ultra, sd3 request fields, accept header, response statuses, credits per image)
- https://platform.stability.ai/docs/api-reference#tag/v1user (GET /v1/user/balance, the 401 body),
  as in the v1 OpenAPI spec https://github.com/Stability-AI/rest-api-support (generated/spec/merged.json)
- the v2beta OpenAPI spec, as the tryAGI/StabilityAI SDK carries it (src/libs/StabilityAI/openapi.yaml):
  the finish-reason values (CONTENT_FILTERED: "successful generation", blurred), the error bodies
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np

from evolvedirector.http import parse_retry_after
from evolvedirector.teachers.aspect import closest_ratio
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult
from evolvedirector.teachers.faults import (
    BAD_RESPONSE,
    OUT_OF_CREDITS,
    RATE_LIMITED,
    REFUSED,
    Fault,
    check_response,
)
from evolvedirector.teachers.http_client import HttpTeacher
from evolvedirector.teachers.image_bytes import decode_image, fit_to_request

# Credits one image costs on each endpoint (the reference's "Credits" sections); sd3's is its
# cheapest model (SD 3.5 Medium), so the preflight never turns away an account that can pay.
CREDITS_PER_IMAGE = {"core": 3.0, "ultra": 8.0, "sd3": 3.5}
MAX_SEED = 4294967294  # the documented range is 0..4294967294; 0 asks the API for a random seed
OUT_OF_CREDITS_NAME = "payment_required"  # the error name of a 402, kept whatever the status beside it


def form_value(value) -> str:
    """A configured form value as the text a multipart field carries."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


class StabilityTeacher(HttpTeacher):
    def __init__(self, config):
        super().__init__(config)
        self.model = config.model
        self.aspect_ratios = list(config.aspect_ratios)
        self.form = dict(config.form)
        self.rate_limit_wait_s = config.rate_limit_wait_s

    def fields(self, request: ImageRequest) -> dict[str, str]:
        fields = {name: form_value(value) for name, value in self.form.items() if value is not None}
        fields.update(prompt=request.prompt, seed=str(request.seed % (MAX_SEED + 1)),
                      aspect_ratio=closest_ratio(self.aspect_ratios, request.bucket))
        return fields

    def check_response(self, response: httpx.Response) -> None:
        """Stability's error bodies first ({id, name, errors}); the shared rules for the rest."""
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        name = str(body.get("name", "")).lower()
        errors = body.get("errors") or body.get("message") or ""
        # The body is the API's data: a short, printable message; its id is what support asks for.
        detail = " ".join(f"HTTP {response.status_code} {name}: {errors} (id {body.get('id', '?')})".split())[:300]
        if response.status_code == 429:
            wait = parse_retry_after(response.headers.get("retry-after"))
            raise Fault(RATE_LIMITED, detail, retry_after=self.rate_limit_wait_s if wait is None else wait)
        if response.status_code == 402 or name == OUT_OF_CREDITS_NAME:
            raise Fault(OUT_OF_CREDITS, detail)
        if name == "content_moderation":
            raise Fault(REFUSED, detail)
        check_response(response)  # 401 auth, other 403 auth, 404, other 4xx final, 5xx retried

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        async with self.session() as client:
            async def send():
                files = {name: (None, value) for name, value in self.fields(request).items()}
                return await self.request(client, "POST", self.url(f"/v2beta/stable-image/generate/{self.model}"),
                                          files=files, headers={"Accept": "image/*"})

            image, fault, billed = await self.generate_once(context, send, self._image)
        if fault is not None:
            return self.failed(request, fault, billed=billed)
        return ImageResult(request, image=await asyncio.to_thread(fit_to_request, image, request))

    @staticmethod
    async def _image(response) -> np.ndarray:
        """The image of a 200 answer; a CONTENT_FILTERED one came back blurred (billed, never kept)."""
        verdict = response.headers.get("finish-reason")
        if verdict == "CONTENT_FILTERED":
            raise Fault(REFUSED, "finish-reason CONTENT_FILTERED: the output broke the content policy "
                        "and came back blurred")
        if verdict != "SUCCESS":
            raise Fault(BAD_RESPONSE, f"finish-reason is {(verdict or '')[:40]!r}, not SUCCESS")
        return await asyncio.to_thread(decode_image, response.content)

    async def probe(self) -> str:
        """GET /v1/user/balance: the key works and the account can pay for one image."""
        body = self.json_body(await self.probe_get(self.url("/v1/user/balance")))
        credits = body.get("credits")
        if not isinstance(credits, (int, float)) or isinstance(credits, bool):
            raise Fault(BAD_RESPONSE, "GET /v1/user/balance: no number at 'credits'")
        if credits < CREDITS_PER_IMAGE[self.model]:
            raise Fault(OUT_OF_CREDITS, f"GET /v1/user/balance: {credits:g} credits, "
                        f"one {self.model} image takes {CREDITS_PER_IMAGE[self.model]:g}")
        return f"GET /v1/user/balance: {credits:g} credits"
