"""What the loop is given about the prompts it works on: a world.

A world answers six questions and nothing else, so the loop never needs to know which world it
runs in:
- `seed_prompts(n, rng)`: the prompts of the initial set;
- `accept(proposal, taken)`: a director's proposal in, the prompt to add (with its category,
  where the world can tell it) or the reason it is refused out; `taken` holds the `key` of every
  prompt already in the set, the key under which two prompts count as the same one;
- `category(prompt)`: the category a prompt of the world belongs to (the shapes world's domains,
  a prompt file's categories), for balancing, selection and reports;
- `heldout`: prompts that are never trained on and never proposed;
- `bucket(rng)`: the image shape (height, width) a new prompt's teacher images are asked for,
  or None for the square `image_size`;
- `grade(prompts, images)`: exact accuracy per category where the world has rules for it
  (the shapes world), None where it has none (a user's prompts).
Where the world also knows its teachers (the shapes world's are its own renderers),
`teachers_own(teachers)` grades each teacher on the held-out prompts, so that a run can show its
student beside them.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

OTHER = "other"  # the category of a prompt the world cannot place


@dataclass(frozen=True)
class Accepted:
    prompt: str  # the prompt as the set will hold it (normalised by the world)
    category: str | None = None  # None: the world cannot tell; the loop decides (inherit or ask)


@dataclass(frozen=True)
class Refused:
    reason: str  # a short, stable label: counted, stored and reported as it is
    detail: str = ""  # the proposal (or what is wrong with it), shown in the report


class World(ABC):
    name: str
    categories: tuple[str, ...]  # the known categories, in the order reports list them
    image_size: int
    graded: bool = False  # whether `grade` has exact rules (held-out accuracy every round)
    # (height, width) shapes new prompts are drawn at: PixArt's aspect buckets at the multi-aspect
    # stage, none at the single-scale stage (every image a square of image_size).
    buckets: tuple[tuple[int, int], ...] = ()

    @classmethod
    @abstractmethod
    def from_config(cls, config, buckets: tuple[tuple[int, int], ...] = (), text_encoder=None) -> World:
        """The world a RunConfig describes; `text_encoder` is the student's (its token limit)."""

    @property
    @abstractmethod
    def heldout(self) -> list[str]:
        """Evaluation prompts, grouped by category: never trained on, never accepted as proposals."""

    @abstractmethod
    def seed_prompts(self, n: int, rng: random.Random) -> list[str]:
        """Up to n distinct prompts for the initial set, none of them held out."""

    @abstractmethod
    def key(self, prompt: str) -> str:
        """The identity of a prompt: two prompts with the same key are duplicates."""

    @abstractmethod
    def accept(self, proposal: object, taken: Collection[str]) -> Accepted | Refused:
        """A director's proposal (untrusted data) checked against the world, its held-out prompts
        and `taken`: the keys of the prompts in the set and of those this round already accepted."""

    @abstractmethod
    def category(self, prompt: str) -> str:
        """The category of a prompt of the world; OTHER for one it cannot place."""

    def bucket(self, rng: random.Random) -> tuple[int, int] | None:
        """(height, width) to ask teachers for a new prompt: a random bucket, as the paper's code
        draws one for each expansion; None at the single-scale stage (the square image_size)."""
        return rng.choice(self.buckets) if self.buckets else None

    def grade(self, prompts: Sequence[str], images: Sequence[np.ndarray]) -> dict[str, float] | None:
        """Exact accuracy per category and its "mean"; None where the world has no rules."""
        return None

    def teachers_own(self, teachers: Sequence) -> dict[str, dict[str, float]]:
        """teacher name -> its own held-out accuracy per category and "mean", for the teachers (config
        entries) the world can grade; empty where it can grade none."""
        return {}
