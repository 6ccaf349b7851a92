"""What the Gemini API's two image backends share: `gemini.py` (Gemini image models, through
generateContent) and `imagen.py` (Imagen, through :predict).

```
POST base_url/models/{model}:{method}     JSON body          x-goog-api-key: KEY
     -> 200: the image inline, base64, in the JSON answer (each backend reads its own shape)
GET  base_url/models/{model}              (models.get)       -> the model: name, supportedGenerationMethods
```

Both methods are synchronous: one request makes one image and answers with it; there is no
request id to store and nothing to download. Models are asked for an aspect ratio from a list,
never pixels: a square request asks for 1:1, a bucket for the nearest ratio, and the image is
then fitted to the request.

The key goes in the documented `x-goog-api-key` header (never in the `?key=` query the API
also takes, since URLs reach logs).

Errors come as `{"error": {"code", "message", "status", "details": [...]}}` (google.rpc.Status),
and the status code alone does not say enough:
- 400 INVALID_ARGUMENT with an ErrorInfo reason API_KEY_INVALID is a bad key: `auth`, as is
  403 PERMISSION_DENIED (a missing key, a key without access, the API not enabled).
- 400 FAILED_PRECONDITION "free tier is not available in your country, enable billing": the
  account cannot pay, `out_of_credits`; so is 402 (depleted prepay credits; this used to come
  as a 429 "Your prepayment credits are depleted"), and a 429 whose violated quota is 0
  ("limit: 0", a QuotaFailure with quotaValue "0"): a free-tier project asking for a paid-only
  model, which waiting never fixes.
- 429 RESOURCE_EXHAUSTED otherwise is a rate limit (RPM, RPD, images per minute, spend); its
  RetryInfo `retryDelay` ("30s") is the wait, honoured and applied to every call of the teacher.
- 404 NOT_FOUND is an unknown model; 500 INTERNAL, 503 UNAVAILABLE and 504 are retried.
- A 400 whose message names the safety filters or the policies (Imagen refuses a prompt so) is a
  refusal, free and final.

Billing: a 200 that holds an image is billed (image output tokens, or Imagen's price per image)
and is never asked again, even when its bytes do not decode (a 200 whose body does not parse
counts as billed too: it may have held one). Every error status is free. A 200
without an image (a blocked prompt, a filtered image, a text-only answer) costs its text tokens
at most, a fraction of a cent, not the image price: a free, final `refused` result, never a
training image.

Preflight (`probe`): models.get of the configured model, with the key. It reads metadata only,
makes nothing and costs nothing; it fails with `auth` on a bad key and `not_found` on a model
the API does not serve (or that cannot be called with this backend's method).

Documentation read 2026-12-07:
- https://ai.google.dev/api (REST reference: endpoints, x-goog-api-key)
- https://ai.google.dev/api/models (models.get, Model.supportedGenerationMethods)
- https://ai.google.dev/gemini-api/docs/troubleshooting (error codes and statuses)
- https://ai.google.dev/gemini-api/docs/rate-limits (per project and tier; 429 RESOURCE_EXHAUSTED)
- https://ai.google.dev/gemini-api/docs/billing (tiers, prepay)
- https://discuss.ai.google.dev/t/api-update-depleted-prepay-credits-now-return-http-402-instead-of-429/183654
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

import httpx
import numpy as np

from evolvedirector.http import parse_retry_after
from evolvedirector.teachers.aspect import closest_ratio
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult
from evolvedirector.teachers.faults import (
    AUTH, BAD_RESPONSE, NOT_FOUND, OUT_OF_CREDITS, RATE_LIMITED, REFUSED, Fault, check_response,
)
from evolvedirector.teachers.http_client import HttpTeacher, MadeNothing
from evolvedirector.teachers.image_bytes import decode_base64_image, fit_to_request

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")  # google.protobuf.Duration as JSON: "30s", "1.5s"
_ZERO_QUOTA = re.compile(r"\blimit: 0\b|doesn't have a free quota tier")
# How a 400 says the prompt broke the content rules (Imagen: "Your current safety filter threshold
# prohibited one or more words", "The response is blocked, as it may violate our policies").
_REFUSAL = re.compile(r"safety filter|violate our policies|responsible ai|prohibited", re.IGNORECASE)


def duration_s(text) -> float | None:
    match = _DURATION.match(text) if isinstance(text, str) else None
    return float(match.group(1)) if match else None


def google_fault(response: httpx.Response) -> Fault | None:
    """The Fault a Google error body means, where it says more than its status code; else None."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    code, status = response.status_code, str(error.get("status", ""))
    message = " ".join(str(error.get("message", "")).split())
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo")}
    quotas = [str(v.get("quotaValue")) for d in details for v in d.get("violations") or [] if isinstance(v, dict)]
    retry_delays = [duration_s(d.get("retryDelay")) for d in details if "retryDelay" in d]
    text = f"HTTP {code} {status}: {message}"[:300]
    if any(reason.startswith("API_KEY_") for reason in reasons):  # API_KEY_INVALID, ..._EXPIRED, ...
        return Fault(AUTH, text)
    if code == 402 or "prepayment credits are depleted" in message.lower():
        return Fault(OUT_OF_CREDITS, text)
    if status == "FAILED_PRECONDITION" and re.search(r"billing|free tier", message, re.IGNORECASE):
        return Fault(OUT_OF_CREDITS, text)
    if code == 429:
        if "0" in quotas or _ZERO_QUOTA.search(message):
            return Fault(OUT_OF_CREDITS, f"{text} (a quota of 0: the model needs billing enabled)")
        wait = next((d for d in retry_delays if d is not None), None)
        return Fault(RATE_LIMITED, text, retry_after=wait if wait is not None
                     else parse_retry_after(response.headers.get("retry-after")))
    if code == 403:
        return Fault(AUTH, text)  # Google never answers a prompt with 403
    if code == 400 and _REFUSAL.search(message):
        return Fault(REFUSED, text)
    return None


class GoogleTeacher(HttpTeacher):
    """One synchronous generation per call; subclasses say `method`, `body()` and `image_data()`."""

    auth_header = "x-goog-api-key"
    auth_prefix = ""
    method = ""  # generateContent, predict

    def __init__(self, config):
        super().__init__(config)
        self.model = config.model.removeprefix("models/")
        self.aspect_ratios = list(config.aspect_ratios)

    def ratio(self, request: ImageRequest) -> str:
        return closest_ratio(self.aspect_ratios, request.bucket)

    def body(self, request: ImageRequest) -> dict:
        raise NotImplementedError

    def image_data(self, answer: dict) -> str:
        """The base64 image of a 200 answer; a Fault (refused, bad_response) where it holds none."""
        raise NotImplementedError

    def model_url(self, suffix: str = "") -> str:
        return self.url(f"/models/{quote(self.model, safe='')}{suffix}")

    def check_response(self, response: httpx.Response) -> None:
        """Google's error bodies first; the shared rules (faults.check_response) for the rest."""
        if response.status_code >= 400 and (fault := google_fault(response)) is not None:
            raise fault
        check_response(response)

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        async with self.session() as client:
            async def send():
                return await self.request(client, "POST", self.model_url(f":{self.method}"), json=self.body(request))

            image, fault, billed = await self.generate_once(context, send, self._image)
        if fault is not None:
            return self.failed(request, fault, billed=billed)
        return ImageResult(request, image=await asyncio.to_thread(fit_to_request, image, request))

    async def _image(self, response) -> np.ndarray:
        answer = self.json_body(response)  # a 200 whose body was lost may have held (and billed) an image
        try:
            data = self.image_data(answer)
        except Fault as fault:  # an answer without an image (a refusal, text only): nothing made or billed
            raise MadeNothing(fault.kind, fault.message) from None
        return await asyncio.to_thread(decode_base64_image, data)

    async def probe(self) -> str:
        """models.get: the key works and the model is served, callable with this backend's method."""
        model = self.json_body(await self.probe_get(self.model_url()))
        methods = model.get("supportedGenerationMethods")
        if isinstance(methods, list) and methods and self.method not in methods:
            raise Fault(NOT_FOUND, f"model {self.model} does not support {self.method} (it supports "
                        f"{', '.join(map(str, methods))[:200]})")
        if not isinstance(model.get("name"), str):
            raise Fault(BAD_RESPONSE, f"GET /models/{self.model}: no model name in the answer")
        return f"GET /models/{self.model}: {model.get('displayName') or model['name']}, {self.method}"
