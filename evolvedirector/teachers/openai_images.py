"""The OpenAI images API (`POST {base_url}/images/generations`): gpt-image-1, dall-e-3, or any
server that speaks the same protocol; Recraft and Together are presets of it (`presets.py`).

One call is one HTTP request that returns the image, as base64 (gpt-image-1, and dall-e-3 with
`response_format: b64_json`) or as a URL to download (dall-e-3's default). OpenAI's API has no
seed: the request's seed only tells apart images the ledger may buy for the same prompt (an API
that takes one names its field in `seed_field`).

Billing: the provider bills a generation that answered 200, so no retry may follow one. Every
generation carries the ledger's key in an Idempotency-Key header, for providers that honour it. A call
whose image is lost after a 200 (a malformed answer, undecodable base64, or a URL that never
downloads) is a billed failure; a URL is downloaded again on faults (free), but the image is
never generated again. Refusals, other 4xx, 429, 5xx and connection faults are failures without
cost, and all but refusals and 4xx are retried. A timed-out call is retried too, though the
provider may have finished (and billed) it: keep `timeout_s` well above the API's slowest image,
so that a timeout means a dead connection. Timeouts are counted per teacher, so such cases show.
"""

from __future__ import annotations

import asyncio

import numpy as np

from evolvedirector.teachers.aspect import closest_by_aspect, scale_to_area
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult
from evolvedirector.teachers.faults import BAD_RESPONSE, OUT_OF_CREDITS, Fault
from evolvedirector.teachers.http_client import IDEMPOTENCY_HEADER, HttpTeacher
from evolvedirector.teachers.image_bytes import decode_base64_image, fit_to_request, parse_size


# Error codes by which an API says the account cannot pay, behind a status other than 402
# (Recraft answers {"code": ..., "message": ...}, its documents naming no status for it; OpenAI
# answers a spent quota with 429 {"error": {"code": "insufficient_quota"}}, which no wait fixes).
OUT_OF_CREDITS_CODES = frozenset({"not_enough_credits", "insufficient_credits", "insufficient_quota"})


class OpenAIImagesTeacher(HttpTeacher):
    def __init__(self, config):
        super().__init__(config)
        self.model = config.model
        self.sizes = dict(config.sizes)
        self.default_size = config.default_size
        self.aspect_sizes = [parse_size(size) for size in config.aspect_sizes]
        self.response_format = config.response_format
        self.quality = config.quality
        self.size_fields = config.size_fields
        self.seed_field = config.seed_field
        self.probe_path = config.probe_path
        self.extra = dict(config.extra)

    def api_size(self, request: ImageRequest) -> str:
        """The size asked for: for a bucket, the accepted size closest to its aspect (the API
        takes a few sizes only); else the one configured for the side."""
        if request.bucket is None:
            return self.sizes.get(request.size, self.default_size)
        return "{}x{}".format(*closest_by_aspect(self.aspect_sizes, request.bucket))

    def width_height(self, request: ImageRequest) -> tuple[int, int]:
        """An API that takes any width and height: the side's configured size, or a bucket's aspect
        at that size's area."""
        width, height = parse_size(self.sizes.get(request.size, self.default_size))
        if request.bucket is None:
            return width, height
        return scale_to_area(request.bucket, width * height)

    def body(self, request: ImageRequest) -> dict:
        body = {**self.extra, "model": self.model, "prompt": request.prompt, "n": 1}
        if self.size_fields == "width_height":
            body["width"], body["height"] = self.width_height(request)
        else:
            body["size"] = self.api_size(request)
        if self.seed_field is not None:
            body[self.seed_field] = request.seed
        if self.response_format is not None:
            body["response_format"] = self.response_format
        if self.quality is not None:
            body["quality"] = self.quality
        return body

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        async with self.session() as client:
            async def send():
                return await self.request(client, "POST", self.url("/images/generations"), json=self.body(request),
                                          headers={IDEMPOTENCY_HEADER: context.key})

            image, fault, billed = await self.generate_once(context, send, self._image_or_url)
            if fault is not None:
                return self.failed(request, fault, billed=billed)
            if isinstance(image, str):
                url = image
                try:  # a download is retried; the generation never is
                    image = await self.retrying(lambda: self.fetch_image(client, url), context)
                except Fault as fault:
                    return self.failed(request, fault, billed=True)
        return ImageResult(request, image=await asyncio.to_thread(fit_to_request, image, request))

    async def probe(self) -> str | None:
        """GET base_url + probe_path (the model list; Recraft's account): free, and it needs the key."""
        if self.probe_path is None:
            return None
        response = await self.probe_get(self.url(self.probe_path))
        # A server that answers, but not this API, says so here. OpenAI's model list and Recraft's
        # account are JSON objects; Together's model list is a bare JSON array.
        try:
            payload = response.json()
        except ValueError:
            raise Fault(BAD_RESPONSE, f"GET {self.probe_path}: HTTP {response.status_code} body is not JSON") from None
        if not isinstance(payload, (dict, list)):
            raise Fault(BAD_RESPONSE, f"GET {self.probe_path}: expected JSON, got {type(payload).__name__}")
        credits = payload.get("credits") if isinstance(payload, dict) else None
        if type(credits) in (int, float):  # Recraft's account says what is left
            return f"GET {self.probe_path}: {credits:g} credits"
        return f"GET {self.probe_path}: HTTP {response.status_code}"

    def check_response(self, response) -> None:
        """A 4xx whose JSON body names an out-of-credits code (Recraft's {code, message}, an
        OpenAI-style {error: {code}}) is out_of_credits whatever its status; the rest as usual."""
        if 400 <= response.status_code < 500 and response.status_code != 402:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            error = payload.get("error") if isinstance(payload, dict) else None
            codes = [payload.get("code") if isinstance(payload, dict) else None,
                     error.get("code") if isinstance(error, dict) else None]
            if any(isinstance(code, str) and code in OUT_OF_CREDITS_CODES for code in codes):
                snippet = " ".join(response.text[:300].split())
                raise Fault(OUT_OF_CREDITS, f"HTTP {response.status_code} {snippet}")
        super().check_response(response)

    async def _image_or_url(self, response) -> np.ndarray | str:
        """The decoded image of a 200 answer (base64), or the URL to download it from."""
        data = self.json_body(response).get("data")
        item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
        if item is None:
            raise Fault(BAD_RESPONSE, "no data[0] in the response")
        if isinstance(item.get("b64_json"), str):
            return await asyncio.to_thread(decode_base64_image, item["b64_json"])
        if isinstance(item.get("url"), str):
            return item["url"]
        raise Fault(BAD_RESPONSE, "data[0] has neither b64_json nor url")
