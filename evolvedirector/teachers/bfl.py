"""Black Forest Labs' FLUX API (flux-pro-1.1, flux-dev, ...): submit a task, poll it, download it.

```
POST base_url/v1/{model}   x-key: KEY  {prompt, width, height, seed, ...body}  -> {id, polling_url}
GET  polling_url           x-key: KEY  -> {id, status, result}: Pending ... until Ready
GET  result.sample         no key: a signed delivery URL, valid for 10 minutes  -> the image
GET  base_url/v1/credits   x-key: KEY  -> {"credits": 12.5}                     (the preflight)
```

The task is stored (`context.on_submitted`) as a small JSON record, `{"id", "polling_url"}`,
before the first poll; a call resumed after a crash, or left pending, polls the stored URL and is
never submitted again. The polling URL names the region that took the task (api.us1.bfl.ai, say)
and is polled as given; one the key may not go to, or none, falls back on the documented
`GET base_url/v1/get_result?id=`. Width and height are multiples of `size_multiple` within the
model's range: a square request asks for the side's configured size, a bucket for its aspect at
that area (shrunk whole when a side would pass `max_side`); the image is then fitted to the request.

The key goes in `x-key` to base_url's own origin and, when that is one of BFL's hosts, to the
https hosts under the same domain (the regional polling hosts); never to the delivery host of
`result.sample`, whose signature is its credential, and never anywhere else.

Limits: 24 tasks in flight per account (`concurrency`); past it a submit answers 429, with its
wait in Retry-After or in the body's `retry_after`, which pauses every call of the teacher.
Errors: 402 is out of credits; 401/403 a bad key; 422 (FastAPI's `{"detail": [...]}`) a bad
parameter, final; 500 and 503 are retried. Poll statuses: Ready, Pending, Request Moderated,
Content Moderated, Error, Task not found.

Billing: a task is billed once it made an image. Submit faults (429, 5xx, 4xx, connections) cost
nothing; a 200 whose task cannot be named is counted billed (it was accepted). Request Moderated
and Content Moderated are not charged: a `refused` result, free and final. Error is a free
`job_failed`. Task not found for a task the API accepted, and a Ready image that never downloads
intact, are billed failures; a download is retried (free), the task never submitted again. When
polling gives up on transient faults or `job_timeout_s`, the call stays pending and is collected
later by its stored task. A timed-out submit is retried, though the API may have taken it: keep
`timeout_s` well above a submit's answer time (well under a second).

Preflight (`probe`): GET base_url/v1/credits reads the account's balance with the key; it makes
no image and costs nothing. A bad key fails with `auth`, an empty balance with `out_of_credits`.

Documentation read 2026-12-07:
- https://docs.bfl.ai/flux_models/flux_1_1_pro (POST /v1/flux-pro-1.1, x-key, polling_url, result.sample)
- https://docs.bfl.ml/api-reference/tasks/generate-an-image-with-flux1-[pro] (width/height: 256-1440,
  multiples of 32; the {id, polling_url} answer)
- https://docs.bfl.ml/api-reference/utility/get-result.md (GET /v1/get_result?id=, ResultResponse)
- https://docs.bfl.ml/api-reference/get-the-users-credits.md (GET /v1/credits, x-key)
- https://docs.bfl.ai/api_integration/errors (HTTP errors, poll statuses, moderation responses)
- https://docs.bfl.ai/api_integration/integration_guidelines (global/regional hosts, delivery.*.bfl.ai)
- https://help.bfl.ai/articles/2916279050-why-did-my-request-fail (429: concurrency; moderated: not charged)
- https://help.bfl.ai/articles/9532536301-which-api-endpoint-should-i-use (poll the exact polling_url)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from urllib.parse import quote

import httpx
import numpy as np

from evolvedirector.http import parse_retry_after
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult
from evolvedirector.teachers.faults import (
    AUTH, BAD_RESPONSE, CLIENT_ERROR, JOB_FAILED, NOT_FOUND, OUT_OF_CREDITS, RATE_LIMITED, REFUSED, TIMEOUT, Fault,
    check_response,
)
from evolvedirector.teachers.http_client import HttpTeacher
from evolvedirector.teachers.image_bytes import parse_size

# The domains BFL's API hosts live under: api.bfl.ai, api.eu.bfl.ai, api.us1.bfl.ai (bfl.ml: the old name).
PROVIDER_DOMAINS = ("bfl.ai", "bfl.ml")
MODERATED = frozenset({"Request Moderated", "Content Moderated"})  # not charged
FAILED = frozenset({"Error", "Failed"})
TASK_NOT_FOUND = "Task not found"
MAX_ID_CHARS, MAX_URL_CHARS = 256, 2048  # what an id or a polling URL from the API may be


def key_may_go(base_url: str, url: str) -> bool:
    """May a request to `url` carry the key of the API at `base_url`? Its own origin may; when it is
    one of BFL's hosts, so may any https host under the same domain; nothing else."""
    try:
        base, target = httpx.URL(base_url), httpx.URL(url)
    except httpx.InvalidURL:
        return False
    if (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port):
        return True
    domain = next((d for d in PROVIDER_DOMAINS if base.host == d or base.host.endswith("." + d)), None)
    return domain is not None and target.scheme == "https" and target.host.endswith("." + domain)


def task_record(task_id: str, polling_url: str | None) -> str:
    """What the ledger stores for a task: JSON text, read back by `read_task` (data, never code)."""
    return json.dumps({"id": task_id, "polling_url": polling_url})


def read_task(text: str) -> tuple[str, str | None]:
    """(id, polling_url) of a stored record; text that is not a record is taken for a bare id."""
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict) and isinstance(record.get("id"), str):
        url = record.get("polling_url")
        return record["id"], url if isinstance(url, str) else None
    return text, None


class BFLTeacher(HttpTeacher):
    auth_header = "x-key"
    auth_prefix = ""

    def __init__(self, config):
        super().__init__(config)
        self.model = config.model
        self.sizes = dict(config.sizes)
        self.default_size = config.default_size
        self.multiple, self.min_side, self.max_side = config.size_multiple, config.min_side, config.max_side
        self.poll_interval_s = config.poll_interval_s
        self.job_timeout_s = config.job_timeout_s
        self.extra = dict(config.body)

    # -- the key --------------------------------------------------------------------------------

    def _is_ours(self, url: str) -> bool:
        # Never: the shared rule would add the key for base_url's origin on every request, downloads
        # included, and never for a regional polling host. Each request that needs it asks `keyed`.
        return False

    def keyed(self, url: str) -> dict[str, str]:
        """The x-key header for a request to `url`, where the key may go (`key_may_go`); else none."""
        if not self._api_key or not key_may_go(self.base_url, url):
            return {}
        return {self.auth_header: self._api_key}

    # -- the request ----------------------------------------------------------------------------

    def api_size(self, request: ImageRequest) -> tuple[int, int]:
        """(width, height) to ask for: the side's configured size, or the bucket's aspect at its area."""
        width, height = parse_size(self.sizes.get(request.size, self.default_size))
        if request.bucket is not None:
            bucket_height, bucket_width = request.bucket
            ratio, area = bucket_width / bucket_height, width * height
            width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)
            shrink = min(1.0, self.max_side / max(width, height))  # the whole image, so the shape stays
            width, height = width * shrink, height * shrink
        return self._side(width), self._side(height)

    def _side(self, value: float) -> int:
        lowest = -(-self.min_side // self.multiple) * self.multiple
        highest = self.max_side // self.multiple * self.multiple
        return min(highest, max(lowest, round(value / self.multiple) * self.multiple))

    def body(self, request: ImageRequest) -> dict:
        width, height = self.api_size(request)
        return {**self.extra, "prompt": request.prompt, "width": width, "height": height, "seed": request.seed}

    def check_response(self, response: httpx.Response) -> None:
        """BFL's own words first: a wait in a 429's body, a moderated request; then the shared rules."""
        status, text = response.status_code, " ".join(response.text[:300].split())
        if status == 429 and parse_retry_after(response.headers.get("retry-after")) is None:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            wait = payload.get("retry_after") if isinstance(payload, dict) else None
            if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait >= 0:
                raise Fault(RATE_LIMITED, f"HTTP 429 {text}", retry_after=float(wait))
        if status in (400, 403, 422) and "moderated" in text.lower():
            raise Fault(REFUSED, f"HTTP {status} {text}")
        check_response(response)

    # -- the call -------------------------------------------------------------------------------

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        accepted = False  # a submit answered 200: the API holds a task, which may bill

        async with self.session() as client:
            async def submit_once() -> tuple[str, str | None]:
                nonlocal accepted
                self.go_on(context)
                await self.limiter.acquire()
                self.go_on(context)  # the limiter may have waited long
                url = self.url(f"/v1/{self.model}")
                response = await self.request(client, "POST", url, json=self.body(request), headers=self.keyed(url))
                accepted = True
                try:
                    return self._read_submit(self.json_body(response))
                except Fault as fault:  # another submit would start (and pay for) a second task
                    raise Fault(fault.kind, fault.message, retryable=False) from None

            if context.request_id is None:
                try:
                    task_id, polling_url = await self.retrying(submit_once, context)
                except Fault as fault:
                    return self.failed(request, fault, billed=accepted)
                await context.on_submitted(task_record(task_id, polling_url))  # on disk before the first poll
            else:
                task_id, polling_url = read_task(context.request_id)
            # From here on the task is BFL's: it is collected, never submitted again.
            return await self.collect(request, context, lambda: self._wait(client, task_id, polling_url, context),
                                      lambda sample: self._download(client, sample))

    @staticmethod
    def _read_submit(payload: dict) -> tuple[str, str | None]:
        task_id, polling_url = payload.get("id"), payload.get("polling_url")
        if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_ID_CHARS:
            raise Fault(BAD_RESPONSE, "the submit answer has no usable task id")
        if not isinstance(polling_url, str) or len(polling_url) > MAX_URL_CHARS:
            polling_url = None
        return task_id, polling_url

    def poll_url(self, task_id: str, polling_url: str | None) -> str:
        """The polling URL the API gave, where the key may go; else GET base_url/v1/get_result?id=."""
        if polling_url and re.match(r"^https?://", polling_url) and key_may_go(self.base_url, polling_url):
            return polling_url
        return self.url("/v1/get_result?id=" + quote(task_id, safe=""))

    async def _wait(self, client, task_id: str, polling_url: str | None, context: CallContext) -> str:
        """Poll the task until it is Ready; return its result.sample URL."""
        url = self.poll_url(task_id, polling_url)
        deadline = time.monotonic() + self.job_timeout_s

        async def poll_once() -> str | None:
            payload = self.json_body(await self.request(client, "GET", url, headers=self.keyed(url)))
            status = str(payload.get("status"))[:100]
            if status == "Ready":
                result = payload.get("result")
                sample = result.get("sample") if isinstance(result, dict) else None
                if not isinstance(sample, str) or not sample:
                    raise Fault(BAD_RESPONSE, f"task {task_id}: Ready without result.sample")
                return sample
            if status in MODERATED:
                raise Fault(REFUSED, f"task {task_id}: {status}")
            if status in FAILED:
                details = payload.get("details") or payload.get("result")
                raise Fault(JOB_FAILED, f"task {task_id}: {status} {json.dumps(details)[:200]}")
            if status == TASK_NOT_FOUND:
                raise Fault(NOT_FOUND, f"task {task_id}: {status}")
            return None  # Pending, or another status on the way

        while (sample := await self.retrying(poll_once, context)) is None:
            if time.monotonic() > deadline:
                context.on_fault(TIMEOUT)
                raise Fault(TIMEOUT, f"task {task_id} not ready after {self.job_timeout_s:g} s")
            await asyncio.sleep(self.poll_interval_s)
        return sample

    async def _download(self, client, sample: str) -> np.ndarray:
        """The image at result.sample, fetched without the key (`_is_ours`)."""
        try:
            return await self.fetch_image(client, sample)
        except Fault as fault:
            if fault.kind in (AUTH, OUT_OF_CREDITS, NOT_FOUND, CLIENT_ERROR):
                # An expired or refused signed URL says nothing of the key or the account.
                raise Fault(BAD_RESPONSE, f"result.sample: {fault.message}", retryable=False) from None
            raise

    async def probe(self) -> str:
        """GET base_url/v1/credits: the balance, read with the key; free, and no image is made."""
        url = self.url("/v1/credits")
        async with self.session() as client:
            response = await self.request(client, "GET", url, headers=self.keyed(url))
        credits = self.json_body(response).get("credits")
        if not isinstance(credits, (int, float)) or isinstance(credits, bool):
            raise Fault(BAD_RESPONSE, "GET /v1/credits: no credits in the answer", retryable=False)
        if credits <= 0:
            raise Fault(OUT_OF_CREDITS, f"GET /v1/credits: {credits:g} credits")
        return f"GET /v1/credits: {credits:g} credits"
