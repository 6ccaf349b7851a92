"""The shapes-world director: an exact judge made imperfect on purpose, like a real VLM."""

from __future__ import annotations

import random
from collections.abc import Collection

import numpy as np

from evolvedirector.director.base import Director, Verdict
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.judge import judge_pair


class ShapesDirector(Director):
    name = "shapes"

    def __init__(self, judge_accuracy: float = 0.9, seed: int = 0, exclude: Collection[str] = ()):
        if not 0.0 <= judge_accuracy <= 1.0:
            raise ValueError(f"judge_accuracy must lie in [0, 1], got {judge_accuracy}")
        self.judge_accuracy = judge_accuracy
        self.rng = random.Random(seed)
        # Prompts the director must never propose (the held-out evaluation prompts).
        self.exclude = frozenset(exclude)

    @classmethod
    def from_config(cls, config, *, seed: int, exclude: Collection[str] = ()) -> ShapesDirector:
        """From a `shapes` director config, as every backend is made (evolvedirector.director)."""
        return cls(config.judge_accuracy, seed, exclude)

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)

    async def compare(self, prompt: str, image_a: np.ndarray, image_b: np.ndarray) -> Verdict:
        return Verdict(judge_pair(prompt, image_a, image_b, self.rng, self.judge_accuracy))

    async def expand(self, prompt: str, n: int) -> list[str]:
        return grammar.expand(prompt, n, self.rng, exclude=self.exclude)

    async def mutate(self, prompt: str) -> str:
        return grammar.mutate(prompt, self.rng, exclude=self.exclude)
