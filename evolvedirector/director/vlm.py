"""The director's three questions answered by a vision-language model, whatever serves it.

A backend (an OpenAI-compatible server, or a local transformers model) supplies three one-shot
primitives: pick (A) or (B) on a side-by-side canvas, give P("Yes") that an image shows a prompt,
and write free text. This class turns them into `compare`, `expand` and `mutate`:

- pairwise: the two images on one canvas, in random order (or in both orders, which cancels a
  preference for one side: when the two orders disagree the verdict is a coin flip);
- pointwise: P("Yes") for each image, the higher wins (VQAScore);
- expansion and mutation: the templates' questions, answered with JSON lists.

A reply that cannot be read is retried (up to `retries` more times, sampling on retries so the
model can answer differently), then the item is skipped: a verdict is unusable (`Verdict.failure`
says why; it is never a coin flip), an expansion adds nothing, a mutation proposes nothing. A
call the server failed (director/failures.py) is skipped the same way. Every such event is
counted in `stats` and, by operation and kind, in the `Tally` the loop takes each round; nothing
a model says can stop the loop.
"""

from __future__ import annotations

import asyncio
import random
from abc import abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

import numpy as np
from PIL import Image

from evolvedirector.director.base import Director, Verdict
from evolvedirector.director.canvas import fit, side_by_side
from evolvedirector.director.failures import (  # noqa: F401  (DirectorError: imported from here too)
    UNPARSEABLE, DirectorCallFailed, DirectorError, Tally, Unanswered,
)
from evolvedirector.director.parsing import parse_category, parse_prompt_list, parse_single_prompt
from evolvedirector.director.templates import fill

T = TypeVar("T")

CHOICES = ("A", "B")


def list_schema(n: int) -> dict:
    """JSON schema of a reply that is a list of at most n prompts."""
    return {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": max(1, n)}


class VLMDirector(Director):
    """compare / expand / mutate on top of a backend's `_ask_choice`, `_ask_yes`, `_ask_text`."""

    def __init__(self, config, seed: int = 0, exclude: Collection[str] = ()):
        self.config = config
        self.templates = config.templates
        self.rng = random.Random(seed)
        # Prompts the director must never propose (the held-out evaluation prompts).
        self.exclude = frozenset(exclude)
        # requests, retries, parse_failures, skipped, inconsistent, ties: read by judge-bench.
        self.stats: Counter[str] = Counter()
        self.tally = Tally()

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)

    def take_tally(self) -> Tally:
        tally, self.tally = self.tally, Tally()
        return tally

    # ---- what a backend provides: one attempt each; `attempt` counts from 0 ---------------------

    @abstractmethod
    async def _ask_choice(self, text: str, canvas: Image.Image, attempt: int) -> str | None:
        """"A" or "B" for the question about the canvas, or None when the reply is unusable."""

    @abstractmethod
    async def _ask_yes(self, text: str, image: Image.Image, attempt: int) -> float | None:
        """P("Yes") for the yes/no question about the image, or None when the reply is unusable."""

    @abstractmethod
    async def _ask_text(self, text: str, schema: dict, attempt: int) -> str:
        """The model's free-text reply to a text-only question (`schema`: the JSON it should be)."""

    # ---- judging --------------------------------------------------------------------------------

    async def compare(self, prompt: str, image_a: np.ndarray, image_b: np.ndarray) -> Verdict:
        self.tally.calls["compare"] += 1
        if self.config.mode == "pointwise":
            return await self._compare_pointwise(prompt, image_a, image_b)
        if self.config.both_orders:
            return await self._compare_both_orders(prompt, image_a, image_b)
        # Draw the order before awaiting, so concurrent calls use the rng in call order.
        swap = self.config.shuffle and self.rng.random() < 0.5
        left, right = (image_b, image_a) if swap else (image_a, image_b)
        label = await self._pairwise(prompt, left, right)
        if isinstance(label, Unanswered):
            return self._unusable(label)
        winner = _other(label) if swap else label
        return Verdict(winner, f"pairwise: ({label}) on the canvas" + (" (images swapped)" if swap else ""))

    async def _compare_both_orders(self, prompt: str, image_a: np.ndarray, image_b: np.ndarray) -> Verdict:
        tie_break = self.rng.choice(CHOICES)
        first, second = await asyncio.gather(
            self._pairwise(prompt, image_a, image_b), self._pairwise(prompt, image_b, image_a)
        )
        if isinstance(first, Unanswered) and isinstance(second, Unanswered):
            return self._unusable(first)
        second = second if isinstance(second, Unanswered) else _other(second)  # back to image_a = "A"
        if isinstance(first, Unanswered) or isinstance(second, Unanswered):
            usable = second if isinstance(first, Unanswered) else first
            return Verdict(usable, "both orders asked; one answer usable")
        if first == second:
            return Verdict(first, "both orders agree")
        self.stats["inconsistent"] += 1
        return Verdict(tie_break, "the two orders disagree (position bias): coin flip")

    async def _pairwise(self, prompt: str, left: np.ndarray, right: np.ndarray) -> str | Unanswered:
        canvas = side_by_side(left, right, self.config.panel_size)
        text = fill(self.templates.compare, prompt=prompt)
        return await self._with_retries(lambda attempt: self._ask_choice(text, canvas, attempt))

    async def _compare_pointwise(self, prompt: str, image_a: np.ndarray, image_b: np.ndarray) -> Verdict:
        tie_break = self.rng.choice(CHOICES)
        score_a, score_b = await asyncio.gather(self._score(prompt, image_a), self._score(prompt, image_b))
        for score in (score_a, score_b):
            if isinstance(score, Unanswered):
                return self._unusable(score)
        if score_a == score_b:
            self.stats["ties"] += 1
            return Verdict(tie_break, f"P(yes) tie at {score_a:.3g}: coin flip")
        return Verdict("A" if score_a > score_b else "B", f"P(yes) A {score_a:.3g}, B {score_b:.3g}")

    def _unusable(self, unanswered: Unanswered) -> Verdict:
        self.tally.failed("compare", unanswered)
        return Verdict(None, f"no usable answer ({unanswered.kind}): {unanswered.detail}", failure=unanswered.kind)

    async def score(self, prompt: str, image: np.ndarray) -> float | None:
        """P("Yes") that the image shows the prompt, or None when the model gave no usable answer."""
        self.tally.calls["score"] += 1
        score = await self._score(prompt, image)
        if isinstance(score, Unanswered):
            self.tally.failed("score", score)
            return None
        return score

    async def _score(self, prompt: str, image: np.ndarray) -> float | Unanswered:
        picture = fit(image, self.config.panel_size)
        text = fill(self.templates.pointwise, prompt=prompt)
        return await self._with_retries(lambda attempt: self._ask_yes(text, picture, attempt))

    # ---- proposing prompts ----------------------------------------------------------------------

    async def expand(self, prompt: str, n: int) -> list[str]:
        if n <= 0:
            return []
        text = fill(self.templates.expand, prompt=prompt, n=n)

        async def attempt(index: int) -> list[str] | None:
            reply = await self._ask_text(text, list_schema(n), index)
            prompts = [p for p in parse_prompt_list(reply, n + 1) if p != prompt and p not in self.exclude]
            return prompts[:n] or None

        return await self._answer("expand", attempt) or []

    async def mutate(self, prompt: str) -> str:
        # One of the templates' length hints at random, as the paper does, so new prompts vary.
        text = fill(self.templates.mutate, prompt=prompt, length=self.rng.choice(self.templates.length_hints))

        async def attempt(index: int) -> str | None:
            proposal = parse_single_prompt(await self._ask_text(text, list_schema(1), index))
            return proposal if proposal and proposal != prompt and proposal not in self.exclude else None

        # An empty string is no prompt: the loop refuses it like any invalid one.
        return await self._answer("mutate", attempt) or ""

    async def categorize(self, prompt: str, categories: tuple[str, ...]) -> str | None:
        if not categories:
            return None
        text = fill(self.templates.categorize, prompt=prompt, categories=", ".join(categories))
        schema = {"type": "string", "enum": list(categories)}  # a constrained answer where the server can

        async def attempt(index: int) -> str | None:
            return parse_category(await self._ask_text(text, schema, index), categories)

        return await self._answer("categorize", attempt)

    # ---- retrying unusable replies --------------------------------------------------------------

    async def _answer(self, operation: str, ask: Callable[[int], Awaitable[T | None]]) -> T | None:
        """One call of `operation`: its answer, or None, tallied, when it got none."""
        self.tally.calls[operation] += 1
        result = await self._with_retries(ask)
        if isinstance(result, Unanswered):
            self.tally.failed(operation, result)
            return None
        return result

    async def _with_retries(self, ask: Callable[[int], Awaitable[T | None]]) -> T | Unanswered:
        for attempt in range(1 + self.config.retries):
            try:
                result = await ask(attempt)
            except DirectorCallFailed as failure:  # the server's own retries are spent already
                self.stats["skipped"] += 1
                return Unanswered(failure.kind, str(failure))
            if result is not None:
                return result
            self.stats["parse_failures"] += 1
        self.stats["skipped"] += 1
        return Unanswered(UNPARSEABLE, f"no usable answer in {1 + self.config.retries} replies")

    def temperature(self, attempt: int) -> float:
        """The first try follows the config; retries sample, or a deterministic model would only
        repeat the reply it could not use."""
        return self.config.temperature if attempt == 0 else max(self.config.temperature, self.config.retry_temperature)


def _other(label: str) -> str:
    return "B" if label == "A" else "A"
