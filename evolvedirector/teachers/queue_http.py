"""Queue-style image APIs (fal, Replicate, and the like): submit, poll, fetch, download.

```
POST base_url + submit_path           {prompt, seed, size, ...body}  -> request id
GET  base_url + status_path           until status is done or failed   (every poll_interval_s)
GET  base_url + result_path           the finished job (or the status answer holds it)
GET  the image URL it names           (or a data: URI / base64 in the result itself)
```

The request id goes to the ledger (`context.on_submitted`) before the first poll, so after a
crash the job is collected by polling its id, never submitted again. Every submit carries the
ledger's key in a header (`idempotency_header`, else Idempotency-Key); where the API is known to
deduplicate submits by it (`idempotency_header` set), a submit whose answer was lost is retried,
and a crash between the submit and the id being stored does not pay twice.

Billing: a job that was never accepted (submit faults) or that the API reports failed or refused
costs nothing; a finished job whose result says the image was withheld (`refusal_field`, fal's
safety checker) is a billed refusal. A job that finished but whose image never arrives intact, or that the API stops
knowing (a 4xx on its status), is a billed failure: it may have run. When polling gives up on
transient faults (the API unreachable, or `job_timeout_s` passed), the job may still finish: the
call stays pending and is collected later by its id.
"""

from __future__ import annotations

import asyncio
import copy
import time
from urllib.parse import quote

from evolvedirector.teachers.aspect import scale_to_area
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult
from evolvedirector.teachers.faults import BAD_RESPONSE, JOB_FAILED, REFUSED, TIMEOUT, Fault, is_refusal
from evolvedirector.teachers.http_client import IDEMPOTENCY_HEADER, HttpTeacher
from evolvedirector.teachers.image_bytes import parse_size

_MISSING = object()


class Withheld(Fault):
    """A finished job whose image the provider's safety checker replaced (`refusal_field`)."""

    billed = True  # it was made


def dotted_get(data, path: str):
    """`images.0.url` -> data["images"][0]["url"], or _MISSING."""
    for part in path.split(".") if path else []:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def dotted_set(data: dict, path: str, value) -> None:
    """`input.prompt` = value, creating the nested objects on the way."""
    *parents, last = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def size_area(value) -> int | None:
    """Pixels of a configured size value, where it names a size: 'WxH', {width, height}, or one side.
    Named sizes (fal's square_hd, Replicate's 1:1) give None: their area is the API's secret."""
    if isinstance(value, str):
        try:
            width, height = parse_size(value)
        except ValueError:
            return None
        return width * height
    if isinstance(value, dict) and all(type(value.get(k)) is int for k in ("width", "height")):
        return value["width"] * value["height"]
    if type(value) is int:  # not bool, which is an int too
        return value * value
    return None


class QueueTeacher(HttpTeacher):
    def __init__(self, config):
        super().__init__(config)
        self.auth_header = config.auth_header
        self.auth_prefix = config.auth_prefix
        self.config = config

    def body(self, request: ImageRequest) -> dict:
        config = self.config
        body = copy.deepcopy(config.body)
        dotted_set(body, config.prompt_field, request.prompt)
        if config.seed_field:
            dotted_set(body, config.seed_field, request.seed)
        size = config.sizes.get(request.size, config.default_size)
        if request.bucket is not None and config.aspect_size_format != "none":
            bucket_height, bucket_width = request.bucket
            width, height = scale_to_area(request.bucket, size_area(size) or bucket_height * bucket_width)
            size = {"width": width, "height": height} if config.aspect_size_format == "object" else f"{width}x{height}"
        if config.size_field and size is not None:
            dotted_set(body, config.size_field, size)
        return body

    def job_url(self, template: str, request_id: str) -> str:
        # The id is the API's data: quoted, so it can only ever name one path segment.
        return self.url(template.replace("{request_id}", quote(request_id, safe="")))

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        async with self.session() as client:
            request_id = context.request_id
            if request_id is None:
                try:
                    request_id = await self.retrying(lambda: self._submit(client, request, context), context)
                except Fault as fault:
                    return self.failed(request, fault)  # no job was accepted: nothing to pay
                await context.on_submitted(request_id)  # on disk before the first poll
            # From here on the job is the provider's: it is collected, never submitted again.
            return await self.collect(request, context, lambda: self._wait(client, request_id, context),
                                      lambda ref: self.fetch_image(client, ref))

    async def _submit(self, client, request: ImageRequest, context: CallContext) -> str:
        # Only submits are given up on: a job already accepted is the provider's, polled as ever.
        self.go_on(context)
        await self.limiter.acquire()
        self.go_on(context)
        headers = {self.config.idempotency_header or IDEMPOTENCY_HEADER: context.key}
        response = await self.request(client, "POST", self.url(self.config.submit_path), json=self.body(request),
                                      headers=headers)
        request_id = dotted_get(self.json_body(response), self.config.request_id_field)
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool) or not str(request_id) \
                or len(str(request_id)) > 256:
            # The API may have queued a job we cannot name; submitting again could pay twice,
            # unless the API deduplicates submits by our key.
            raise Fault(BAD_RESPONSE, f"no usable request id at {self.config.request_id_field!r}",
                        retryable=self.config.idempotency_header is not None)
        return str(request_id)

    async def _wait(self, client, request_id: str, context: CallContext) -> str:
        """Poll until the job is done; return the reference to its image."""
        config = self.config
        deadline = time.monotonic() + config.job_timeout_s

        async def poll_once() -> dict | None:
            payload = self.json_body(await self.request(client, "GET", self.job_url(config.status_path, request_id)))
            status = dotted_get(payload, config.status_field)
            if status in config.failed_statuses:
                error = dotted_get(payload, config.error_field)
                reason = str(status if error in (_MISSING, None) else error)[:300]
                raise Fault(REFUSED if is_refusal(reason) else JOB_FAILED, f"job {request_id}: {reason}")
            return payload if status in config.done_statuses else None

        while (finished := await self.retrying(poll_once, context)) is None:
            if time.monotonic() > deadline:
                context.on_fault(TIMEOUT)
                raise Fault(TIMEOUT, f"job {request_id} not finished after {config.job_timeout_s:g} s")
            await asyncio.sleep(config.poll_interval_s)

        async def fetch_result() -> str:
            payload = finished
            if config.result_path is not None:
                payload = self.json_body(await self.request(client, "GET", self.job_url(config.result_path, request_id)))
            if config.refusal_field is not None and dotted_get(payload, config.refusal_field) is True:
                raise Withheld(REFUSED, f"job {request_id}: the provider's safety checker withheld the image "
                                        f"({config.refusal_field})", retryable=False)
            ref = dotted_get(payload, config.image_field)
            if not isinstance(ref, str) or not ref:
                raise Fault(BAD_RESPONSE, f"job {request_id}: no image at {config.image_field!r}")
            return ref

        return await self.retrying(fetch_result, context)
