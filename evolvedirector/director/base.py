"""What every director is, and the two judgements the loop builds from its `compare`.

A director answers three questions: which of two images fits a prompt better (`compare`), which
prompts are like this one (`expand`), and which prompt is unlike it (`mutate`). Everything it
returns is data: prompts are strings checked by the loop, verdicts are "A" or "B".
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from evolvedirector.director.failures import Tally


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # "A" or "B"; None: unusable, no answer came (`failure` says why)
    explanation: str = ""
    failure: str | None = None  # a kind of director/failures.py


class Director(ABC):
    name: str

    @abstractmethod
    async def compare(self, prompt: str, image_a: np.ndarray, image_b: np.ndarray) -> Verdict:
        """Which image follows the prompt better?"""

    @abstractmethod
    async def expand(self, prompt: str, n: int) -> list[str]:
        """Up to n new prompts like this one (same kind of content, different details)."""

    @abstractmethod
    async def mutate(self, prompt: str) -> str:
        """One new prompt unrelated to this one, so the set keeps exploring."""

    async def score(self, prompt: str, image: np.ndarray) -> float | None:
        """P("Yes") that the image shows the prompt, read off a model's log-probabilities
        (`mode: pointwise`), or None when there is no usable answer; backends without such a
        model have none."""
        return None

    async def categorize(self, prompt: str, categories: tuple[str, ...]) -> str | None:
        """Which of `categories` a new prompt belongs to (a mutation's, in the open world), or
        None when the director cannot tell; backends without a language model cannot."""
        return None

    def reseed(self, seed: int) -> None:
        """Restart the director's randomness; the loop calls it each round so that a resumed run
        makes the same choices as an uninterrupted one. Backends without randomness ignore it."""

    async def aclose(self) -> None:
        """Release what the director holds (connections, say) once a run is done with it."""

    def take_tally(self) -> Tally:
        """The calls made and failed since the last take (director/failures.py). A director that
        cannot fail (no server, no model to misread) reports none."""
        return Tally()

    def where(self) -> str:
        """Where the director runs, for an error message."""
        return self.name


@dataclass(frozen=True)
class Discrimination:
    winner: str | None  # "student" or "teacher"; None: the director gave no usable verdict
    student_shown_first: bool
    failure: str | None = None  # why there is no verdict (a kind of director/failures.py)


async def discriminate(
    director: Director, prompt: str, student: np.ndarray, teacher: np.ndarray, rng: random.Random
) -> Discrimination:
    """Student against teacher, shown in random order so a position bias cannot favour either."""
    student_first = rng.random() < 0.5
    if student_first:
        verdict = await director.compare(prompt, student, teacher)
        student_won = verdict.winner == "A"
    else:
        verdict = await director.compare(prompt, teacher, student)
        student_won = verdict.winner == "B"
    if verdict.winner is None:
        return Discrimination(None, student_first, verdict.failure)
    return Discrimination("student" if student_won else "teacher", student_first)


async def select_best(director: Director, prompt: str, images: list[np.ndarray], rng: random.Random) -> int:
    """Index of the best image: a king-of-the-hill run of pairwise comparisons in random order
    (an unusable comparison keeps the image ahead)."""
    order = list(range(len(images)))
    rng.shuffle(order)
    best = order[0]
    for challenger in order[1:]:
        verdict = await director.compare(prompt, images[best], images[challenger])
        if verdict.winner == "B":
            best = challenger
    return best
