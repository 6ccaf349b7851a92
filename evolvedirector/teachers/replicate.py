"""Replicate's predictions API (`https://api.replicate.com/v1`): flux-schnell, or any model it hosts.

```
POST /models/{owner}/{name}/predictions  {input}           an official model (owner/name)
POST /predictions                        {version, input}  any other (owner/name:version)
     Authorization: Bearer TOKEN, Prefer: wait=N            -> the prediction object
GET  /predictions/{id}                   until status is succeeded, failed, canceled or aborted
GET  output (a URL, or a list of them)   the image, on replicate.delivery (never sent the token)
```

`Prefer: wait=N` makes the create call hold its answer up to N seconds (at most 60), so a fast
model answers finished and no poll is needed; a slower one answers `starting`/`processing` and is
polled by its id. Either way the id goes to the ledger (`context.on_submitted`) before anything
else is asked, so after a crash the prediction is collected by its id, never created again.
Outputs of API predictions are deleted after an hour: the image is downloaded at once. The input
is `input` from the config plus the prompt, the seed and the aspect ratio (from `aspect_ratios`:
1:1 for a square request, the nearest ratio for a bucket).

Limits and errors: 600 creates a minute (`rate_limit_rpm`); a 429 says `{"detail": "Request was
throttled. Your rate limit resets in ~30s."}`, and that wait (or Retry-After) is honoured. Errors
are problem-details bodies `{title, detail, status}`: 401 a missing or wrong token, 402
"Insufficient credit" (out_of_credits), 422 an invalid input or version (client_error).

Billing: official models bill each output image, others their run time. A create that fails
bills nothing. A prediction that fails is free to the ledger: a safety failure ("NSFW content",
"flagged as sensitive (E005)") is `refused`, any other a `job_failed` (a time-billed model may
still charge its seconds). A succeeded prediction is billed: if its image never arrives intact
(downloads are retried, the prediction never; collected after its hour, its output is gone) it is
a billed failure. When polling gives up on transient faults or `job_timeout_s`, the call stays
pending and is collected later by its id.
Replicate documents no idempotency key, so a create whose answer is lost (a timeout) is made
again and may bill twice: `timeout_s` must exceed `wait_s` (the config checks it).

Preflight (`probe`): GET /account, which names the token's account; it runs no model, so it
costs nothing, and it fails with 401 on a bad token.

Documentation read 2026-12-07: https://replicate.com/docs/reference/http,
https://replicate.com/docs/topics/predictions/create-a-prediction,
https://replicate.com/docs/topics/predictions/rate-limits,
https://replicate.com/docs/topics/predictions/data-retention,
https://replicate.com/docs/topics/predictions, https://replicate.com/docs/reference/error-codes,
https://replicate.com/changelog/2025-08-05-run-all-models-with-the-same-api-endpoint,
https://replicate.com/changelog/2025-10-16-prediction-deadlines, https://replicate.com/docs/topics/billing,
https://replicate.com/black-forest-labs/flux-schnell/api (input schema).
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import quote

import httpx

from evolvedirector.http import parse_retry_after
from evolvedirector.teachers.aspect import closest_ratio
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult
from evolvedirector.teachers.faults import (
    BAD_RESPONSE, JOB_FAILED, OUT_OF_CREDITS, RATE_LIMITED, REFUSED, TIMEOUT, Fault, check_response, is_refusal,
)
from evolvedirector.teachers.http_client import IDEMPOTENCY_HEADER, HttpTeacher

RUNNING = ("starting", "processing")
FAILED = ("failed", "canceled", "aborted")  # aborted: a deadline passed before it ran
# "Your rate limit resets in ~30s.", "... in 1 second": the documented 429 detail.
_RESETS_IN = re.compile(r"\bin ~?(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def is_safety_failure(text: str) -> bool:
    """The faults module's refusal words, plus Replicate's E005 ("flagged as sensitive")."""
    return is_refusal(text) or "flagged as sensitive" in text.lower() or "(E005)" in text


class ReplicateTeacher(HttpTeacher):
    def __init__(self, config):
        super().__init__(config)
        self.model = config.model
        self.aspect_ratios = list(config.aspect_ratios)
        self.wait_s = config.wait_s
        self.input = dict(config.input)
        self.poll_interval_s = config.poll_interval_s
        self.job_timeout_s = config.job_timeout_s

    def create_request(self, request: ImageRequest) -> tuple[str, dict]:
        """The create call's path and body: an official model by name, any other by version."""
        model_input = {**self.input, "prompt": request.prompt, "seed": request.seed,
                       "aspect_ratio": closest_ratio(self.aspect_ratios, request.bucket)}
        name, _, version = self.model.partition(":")
        if version:
            return "/predictions", {"version": version, "input": model_input}
        owner, model = name.split("/")
        return f"/models/{owner}/{model}/predictions", {"input": model_input}

    def check_response(self, response: httpx.Response) -> None:
        """Read Replicate's problem-details bodies for a throttle's wait, a lack of credit, a
        refusal; anything else as `faults.check_response` does."""
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            body = body if isinstance(body, dict) else {}
            title, detail = str(body.get("title") or ""), str(body.get("detail") or "")
            text = " ".join(f"HTTP {response.status_code} {title} {detail}".split())[:300]
            if response.status_code == 429:
                wait = parse_retry_after(response.headers.get("retry-after"))
                if wait is None and (match := _RESETS_IN.search(detail)):
                    wait = float(match.group(1))
                raise Fault(RATE_LIMITED, text, retry_after=wait)
            if "insufficient credit" in f"{title} {detail}".lower():
                raise Fault(OUT_OF_CREDITS, text)
            if response.status_code in (400, 403, 422) and is_safety_failure(f"{title} {detail}"):
                raise Fault(REFUSED, text)
        check_response(response)

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        async with self.session() as client:
            prediction, prediction_id = None, context.request_id
            if prediction_id is None:
                try:
                    prediction = await self.retrying(lambda: self._create(client, request, context), context)
                except Fault as fault:
                    return self.failed(request, fault)  # no prediction was made: nothing to pay
                prediction_id = prediction["id"]
                await context.on_submitted(prediction_id)  # on disk before any poll or download
            # From here on the prediction is Replicate's: it is collected, never created again.
            return await self.collect(request, context,
                                      lambda: self._wait(client, prediction_id, prediction, context),
                                      lambda url: self.fetch_image(client, url))

    async def _create(self, client, request: ImageRequest, context: CallContext) -> dict:
        self.go_on(context)
        await self.limiter.acquire()
        self.go_on(context)  # the limiter may have waited long
        path, body = self.create_request(request)
        headers = {"Prefer": f"wait={self.wait_s}", IDEMPOTENCY_HEADER: context.key}
        prediction = self.json_body(await self.request(client, "POST", self.url(path), json=body, headers=headers))
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str) or not prediction_id or len(prediction_id) > 256:
            # A prediction may exist that we cannot name; creating another could pay twice.
            raise Fault(BAD_RESPONSE, "the created prediction has no usable id", retryable=False)
        return prediction

    async def _wait(self, client, prediction_id: str, answer: dict | None, context: CallContext) -> str:
        """The prediction's image URL, once it succeeded: from the create's answer, else by polling."""
        deadline = time.monotonic() + self.job_timeout_s
        # The id is the API's data: quoted, so it can only ever name one path segment.
        url = self.url(f"/predictions/{quote(prediction_id, safe='')}")

        async def poll_once() -> str | None:
            return self.outcome(prediction_id, self.json_body(await self.request(client, "GET", url)))

        image_url = None
        if answer is not None:
            try:
                image_url = self.outcome(prediction_id, answer)
            except Fault as fault:
                self.reporter(context)(fault)  # counted as a polled answer's fault would be
                raise
        polled = answer is not None
        while image_url is None:
            if polled:  # between answers; a resumed call polls at once
                if time.monotonic() > deadline:
                    context.on_fault(TIMEOUT)
                    raise Fault(TIMEOUT, f"prediction {prediction_id} not finished after {self.job_timeout_s:g} s")
                await asyncio.sleep(self.poll_interval_s)
            image_url = await self.retrying(poll_once, context)
            polled = True
        return image_url

    @staticmethod
    def outcome(prediction_id: str, prediction: dict) -> str | None:
        """A prediction's image URL when it succeeded, None while it runs; a Fault when it failed."""
        status = prediction.get("status")
        if status in RUNNING:
            return None
        if status in FAILED:
            reason = " ".join(str(prediction.get("error") or status).split())[:300]
            kind = REFUSED if is_safety_failure(reason) else JOB_FAILED
            raise Fault(kind, f"prediction {prediction_id} {status}: {reason}")
        if status != "succeeded":
            raise Fault(BAD_RESPONSE, f"prediction {prediction_id}: unknown status {str(status)[:40]!r}")
        output = prediction.get("output")
        first = output[0] if isinstance(output, list) and output else output
        if not isinstance(first, str) or not first:
            # Succeeded, so billed; asking again would not bring the image back.
            raise Fault(BAD_RESPONSE, f"prediction {prediction_id} succeeded without an output URL",
                        retryable=False)
        return first

    async def probe(self) -> str:
        """GET /account: the token's account, no model run, so free; 401 on a bad token."""
        account = self.json_body(await self.probe_get(self.url("/account")))
        return f"GET /account: {account.get('type', 'account')} {str(account.get('username', '?'))[:64]}"
