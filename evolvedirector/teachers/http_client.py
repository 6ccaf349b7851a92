"""What every HTTP teacher shares: connections, the API key, rate limit, retries, redaction.

The API key is read from the environment variable the config names, once (`evolvedirector.http`,
as the director reads its own), and lives only in this object: it is sent in a header to the
API's own origin (never to the hosts results are downloaded from), and scrubbed from every
message a fault produces, so it reaches no log, no ledger row and no config file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx
import numpy as np

from evolvedirector.http import GaveUp, RetryPolicy, read_api_key, with_retries
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult, Teacher, idempotency_key
from evolvedirector.teachers.faults import (
    BAD_RESPONSE, JOB_FAILED, NOT_TRIED, REFUSED, Fault, check_response, transport_fault,
)
from evolvedirector.teachers.image_bytes import decode_base64_image, decode_image, fit_to_request
from evolvedirector.teachers.ratelimit import RateLimiter, window_wait

log = logging.getLogger(__name__)

CONNECTIONS_PER_CLIENT = 16
# Sent with the ledger's key on every request that makes an image; a provider that deduplicates
# by it bills a call made again (after a crash, or a retry) once. Others ignore it.
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A host that drops packets (a wrong address, a firewall) would otherwise hold each attempt for the
# whole timeout_s (120 s by default, sized for slow generations); an API's server accepts a
# connection in well under a second.
CONNECT_TIMEOUT_S = 10.0


class MadeNothing(Fault):
    """A fault inside a success answer that says no image was made, so none is billed (a refusal
    in a 200, an answer with text only)."""


class HttpTeacher(Teacher):
    auth_header = "Authorization"
    auth_prefix = "Bearer "

    def __init__(self, config):
        self.name = config.name
        self.cost_per_image = config.cost_per_image
        self.concurrency = config.concurrency
        self.base_url = config.base_url
        self.timeout = httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, CONNECT_TIMEOUT_S))
        self.retry_policy = RetryPolicy(config.retry.max_attempts, config.retry.backoff_s, config.retry.max_backoff_s)
        self.limiter = RateLimiter(config.rate_limit_rpm)
        self._api_key = read_api_key(f"teachers.{config.name}.api_key_env", config.api_key_env)
        self._origin = httpx.URL(self.base_url).copy_with(path="/", query=None, fragment=None)
        self._clients: list[httpx.AsyncClient] | None = None  # open while calls are in flight
        self._users = 0
        self._turn = 0

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    # -- the connection pool --------------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client for one call, from a set shared by the calls in flight and closed after the last.

        Overlapping calls reuse connections; nothing outlives the event loop that made it. httpx
        scans its whole pool at every request, so the connections are split over several small
        clients (calls take them in turn) rather than held by one large one.
        """
        if self._clients is None:
            shards = max(1, math.ceil((self.concurrency or 1) / CONNECTIONS_PER_CLIENT))
            # Keep-alive for every call in flight: a new connection per call costs more than the
            # call's own work. Connections are not capped: the ledger bounds the calls in flight.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=2 * CONNECTIONS_PER_CLIENT)
            self._clients = [
                httpx.AsyncClient(timeout=self.timeout, limits=limits, follow_redirects=True) for _ in range(shards)
            ]
        clients = self._clients
        client = clients[self._turn % len(clients)]
        self._turn += 1
        self._users += 1
        try:
            yield client
        finally:
            self._users -= 1
            if self._users == 0 and self._clients is clients:
                self._clients = None
                for each in clients:
                    await each.aclose()

    # -- requests -------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "[REDACTED]") if self._api_key else text

    def _is_ours(self, url: str) -> bool:
        """Does `url` belong to the API itself (so it may see the key)?"""
        target = httpx.URL(url)
        return (target.scheme, target.host, target.port) == (self._origin.scheme, self._origin.host, self._origin.port)

    async def request(self, client: httpx.AsyncClient, method: str, url: str, **kwargs) -> httpx.Response:
        """One HTTP request; any error becomes a Fault whose message cannot hold the key."""
        headers = dict(kwargs.pop("headers", None) or {})
        try:
            if self._api_key and self._is_ours(url):
                headers[self.auth_header] = self.auth_prefix + self._api_key
            response = await client.request(method, url, headers=headers, **kwargs)
            if (wait := window_wait(response.headers)) is not None:
                self.limiter.pause(min(wait, self.retry_policy.max_backoff_s))  # the window is the teacher's
            self.check_response(response)
        except httpx.TransportError as error:
            fault = transport_fault(error)
            raise Fault(fault.kind, self.redact(fault.message)) from None
        except (httpx.RequestError, httpx.InvalidURL) as error:  # a bad URL from the API, endless redirects
            raise Fault(BAD_RESPONSE, type(error).__name__, retryable=False) from None
        except Fault as fault:
            if fault.retry_after is not None:
                # The limit is the teacher's, not this call's; a day's quota waits no longer than a retry would.
                self.limiter.pause(min(fault.retry_after, self.retry_policy.max_backoff_s))
            raise Fault(fault.kind, self.redact(fault.message), retry_after=fault.retry_after) from None
        return response

    def check_response(self, response: httpx.Response) -> None:
        """Raise the Fault an answer means (`faults.check_response`). A backend whose provider says
        more in its error bodies (out of credits behind a 400, a refusal, a wait in the body rather
        than in Retry-After) reads them first, then falls back on this."""
        check_response(response)

    @staticmethod
    def json_body(response: httpx.Response) -> dict:
        try:
            payload = response.json()
        except ValueError:
            raise Fault(BAD_RESPONSE, f"HTTP {response.status_code} body is not JSON") from None
        if not isinstance(payload, dict):
            raise Fault(BAD_RESPONSE, f"expected a JSON object, got {type(payload).__name__}")
        return payload

    async def fetch_image(self, client: httpx.AsyncClient, ref: str) -> np.ndarray:
        """An image given as an http(s) URL (absolute or relative to the API), a data: URI, or base64."""
        if ref.startswith("data:"):
            header, _, data = ref.partition(",")
            if ";base64" not in header:
                raise Fault(BAD_RESPONSE, "data: URI is not base64")
            return await asyncio.to_thread(decode_base64_image, data)
        if ref.startswith("/") or re.match(r"^https?://", ref):
            url = str(self._origin).rstrip("/") + ref if ref.startswith("/") else ref  # "/x": on the API's host
            response = await self.request(client, "GET", url)
            # Decoding a large image takes milliseconds: off the event loop, which serves every call.
            return await asyncio.to_thread(decode_image, response.content)
        if "://" in ref:  # file://, ftp://: an API has no business pointing there
            raise Fault(BAD_RESPONSE, f"image reference has an unsupported scheme: {ref.split('://')[0]!r}")
        return await asyncio.to_thread(decode_base64_image, ref)

    async def probe_get(self, url: str) -> httpx.Response:
        """One GET of `url` with the key, no retries: a preflight's free call (`Teacher.probe`)."""
        async with self.session() as client:
            return await self.request(client, "GET", url)

    # -- calls ----------------------------------------------------------------------------------

    def reporter(self, context: CallContext):
        """The retry loop's fault callback: count the kind in the ledger, note it in the log."""
        def report(fault: Fault) -> None:
            if fault.kind == NOT_TRIED:  # no request was made: nothing the teacher did
                return
            context.on_fault(fault.kind)
            log.info("teacher %s: %s", self.name, self.redact(str(fault)))
        return report

    def failed(self, request: ImageRequest, fault: Fault, *, billed: bool = False,
               retry_later: bool = False) -> ImageResult:
        return ImageResult(request, error=self.redact(str(fault)), billed=billed, retry_later=retry_later,
                           kind=fault.kind)

    @staticmethod
    def go_on(context: CallContext) -> None:
        """Called first in each attempt that starts new work: a teacher given up on this round
        (teachers/health.py) is not asked again, whatever retries the call had left."""
        if (reason := context.given_up()) is not None:
            raise Fault(NOT_TRIED, reason, retryable=False)

    async def retrying(self, attempt, context: CallContext):
        """`attempt` under the retry policy; every fault is counted, the last one raised."""
        try:
            return await with_retries(attempt, self.retry_policy, self.reporter(context))
        except GaveUp as out:
            last = out.last
            raise Fault(last.kind, f"{last.message} (gave up after {out.attempts} attempts)") from last

    async def generate_once(self, context: CallContext, send, read):
        """One synchronous generation (APIs whose answer is the image, or its URL): `send()` makes
        the request, and is asked again on faults until an answer arrives; `read(response)` turns
        the answer into what the call goes on with. Once an answer arrived, the provider made (and
        billed) an image, so a fault in reading it is final, another attempt would buy a second,
        and billed, unless `read` raises `MadeNothing` (a refusal inside a success answer).
        Returns (what read returned, None, True) or (None, the fault, billed)."""
        answered = False

        async def attempt():
            nonlocal answered
            self.go_on(context)
            await self.limiter.acquire()
            self.go_on(context)  # the limiter may have waited long
            response = await send()
            answered = True
            try:
                return await read(response)
            except Fault as fault:  # final: the next attempt would be a second purchase
                raise (MadeNothing if isinstance(fault, MadeNothing) else Fault)(
                    fault.kind, fault.message, retryable=False) from None

        try:
            return await self.retrying(attempt, context), None, True
        except MadeNothing as fault:
            return None, fault, False
        except Fault as fault:
            return None, fault, answered

    async def collect(self, request: ImageRequest, context: CallContext, wait, download) -> ImageResult:
        """A job the provider accepted, to its image: `wait()` polls until the job names its image,
        `download(ref)` fetches it (retried: free). Billing: a job the API reports refused or failed
        made nothing; one polling gave up on (out of retries or time) may still finish, so the call
        stays pending, collected later by its id; one the API no longer knows, or whose image is
        lost, is billed; so is a refusal the fault says was billed (`billed`: made, then withheld)."""
        try:
            ref = await wait()
        except Fault as fault:
            if getattr(fault, "billed", False):
                return self.failed(request, fault, billed=True)
            if fault.kind in (REFUSED, JOB_FAILED):
                return self.failed(request, fault)
            if fault.retryable:
                return self.failed(request, fault, retry_later=True)
            return self.failed(request, fault, billed=True)
        try:
            image = await self.retrying(lambda: download(ref), context)
        except Fault as fault:
            return self.failed(request, fault, billed=True)
        return ImageResult(request, image=await asyncio.to_thread(fit_to_request, image, request))

    async def generate(self, requests: list[ImageRequest]) -> list[ImageResult]:
        """Direct use, outside a ledger: at most `concurrency` calls at once, nothing recorded."""
        slots = asyncio.Semaphore(self.concurrency or 1)

        async def one(request: ImageRequest) -> ImageResult:
            async with slots:
                return await self.call(request, CallContext(idempotency_key(self.name, request)))

        return list(await asyncio.gather(*(one(r) for r in requests)))
