"""What every teacher is: a named image source with a price per image.

A teacher turns `ImageRequest`s into images. It knows nothing of budgets or caching: every call
goes through the `Ledger`, which decides whether a call is needed and affordable, and hands the
teacher a `CallContext` through which it reports what the ledger must remember (a queue API's
request id, each fault met on the way).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from evolvedirector.store.db import bucket_text


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    seed: int
    size: int  # the student's image side: a square image of it, unless `bucket` says otherwise
    # (height, width) at the multi-aspect stage: the image's shape, in pixels at the student's
    # scale (one of `buckets_at(size)`); each backend asks its API for the nearest shape it draws.
    bucket: tuple[int, int] | None = None


@dataclass
class ImageResult:
    request: ImageRequest
    image: np.ndarray | None = None
    error: str | None = None
    # For a failure: did the provider bill it anyway (it accepted the work, the image was lost)?
    billed: bool = False
    # For a failure: the provider still holds the job (polling gave up for now); the ledger keeps
    # the call pending so that a later buy or `settle_pending` collects it instead of paying again.
    retry_later: bool = False
    kind: str | None = None  # for a failure: the fault kind of `error` (teachers/faults.py)


def _ignore(_: str) -> None:
    pass


def _never() -> str | None:
    return None


async def _ignore_async(_: str) -> None:
    pass


@dataclass
class CallContext:
    """What the ledger tells a teacher about one call, and how the teacher reports back."""

    key: str  # the idempotency key; APIs that accept one get it, so a retried submit is deduplicated
    request_id: str | None = None  # a queue API's id for this call, stored before a crash: poll, never resubmit
    on_submitted: Callable[[str], Awaitable[None]] = field(default=_ignore_async)  # awaited: stored before polling
    on_fault: Callable[[str], None] = field(default=_ignore)  # count one fault of this kind
    # Asked before each attempt that would start new work (a generation, a submit): a reason when
    # the teacher kept failing this round and is asked no more (teachers/health.py); else None.
    given_up: Callable[[], str | None] = field(default=_never)


def idempotency_key(teacher: str, request: ImageRequest) -> str:
    """One key per (teacher, prompt, seed, size, bucket): the same key is never bought twice.
    A square request's key leaves the bucket out, as keys did before there were buckets."""
    parts = [teacher, request.prompt, str(request.seed), str(request.size)]
    if request.bucket is not None:
        parts.append(bucket_text(request.bucket))
    text = "\x1f".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()


class Teacher(ABC):
    name: str
    cost_per_image: float
    concurrency: int | None = None  # calls in flight at once; None: the ledger's default

    @abstractmethod
    async def generate(self, requests: list[ImageRequest]) -> list[ImageResult]:
        """One result per request, in order; a failure is a result with `error` set."""

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        """One call on behalf of the ledger. Backends with request ids or faults override this."""
        [result] = await self.generate([request])
        return result

    async def probe(self) -> str | None:
        """The preflight of `evolvedirector check` (and of `run` as it starts): reach the teacher and
        prove its credentials by the cheapest call that costs nothing (each backend documents which).
        Returns what was checked, in a few words; None where the teacher has no such call; raises
        `teachers.faults.Fault` when the check fails."""
        return None
