"""What every teacher is: a named image source with a price per image.

A teacher turns `ImageRequest`s into images. It knows nothing of budgets or caching: every call
goes through the `Ledger`, which decides whether a call is needed and affordable.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    seed: int
    size: int


@dataclass
class ImageResult:
    request: ImageRequest
    image: np.ndarray | None = None
    error: str | None = None


def idempotency_key(teacher: str, request: ImageRequest) -> str:
    """One key per (teacher, prompt, seed, size): the same key is never bought twice."""
    text = "\x1f".join([teacher, request.prompt, str(request.seed), str(request.size)])
    return hashlib.sha256(text.encode()).hexdigest()


class Teacher(ABC):
    name: str
    cost_per_image: float

    @abstractmethod
    async def generate(self, requests: list[ImageRequest]) -> list[ImageResult]:
        """One result per request, in order; a failure is a result with `error` set."""
