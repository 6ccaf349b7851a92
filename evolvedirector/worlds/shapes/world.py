"""The shapes world behind the loop's `World` contract (WORLD.md is its specification).

Its prompts are the grammar's 1272; a proposal counts only if it is one of them (case, outer
spaces and a final period forgiven), a prompt's category is its domain, and held-out accuracy
is exact (the world's rules).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import numpy as np

from evolvedirector.worlds.base import OTHER, Accepted, Refused, World
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.heldout import accuracy, heldout_prompts
from evolvedirector.worlds.shapes.profiles import TEACHER_PROFILES, own_outcomes

# No two prompts of the grammar differ only in case, so a lower-cased look-up is exact.
CANONICAL_PROMPTS = {p.lower(): p for p in grammar.all_prompts()}
MAX_PROPOSAL_CHARS = 200  # the grammar's longest prompt has 56 characters


class ShapesWorld(World):
    name = "shapes"
    categories = grammar.DOMAINS
    graded = True

    def __init__(self, image_size: int = 32, heldout_per_domain: int = 10, heldout_seed: int = 1234,
                 buckets: tuple[tuple[int, int], ...] = ()):
        self.image_size = image_size
        self.buckets = tuple(buckets)
        self._heldout = heldout_prompts(heldout_per_domain, heldout_seed)
        self._heldout_set = frozenset(self._heldout)

    @classmethod
    def from_config(cls, config, buckets=(), text_encoder=None) -> ShapesWorld:
        """The world of a RunConfig (its prompts are the grammar's: no token limit applies)."""
        world = config.world
        return cls(world.image_size, world.heldout_per_domain, world.heldout_seed, buckets)

    @property
    def heldout(self) -> list[str]:
        return list(self._heldout)

    def seed_prompts(self, n: int, rng: random.Random) -> list[str]:
        exclude = set(self._heldout)
        prompts: list[str] = []
        # A larger seed set than the prompts outside the held-out ones cannot exist.
        wanted = min(n, len(CANONICAL_PROMPTS) - len(exclude))
        while len(prompts) < wanted:
            prompt = grammar.random_prompt(rng, exclude=exclude)
            exclude.add(prompt)
            prompts.append(prompt)
        return prompts

    def key(self, prompt: str) -> str:
        return prompt  # the grammar's prompts are already canonical

    def accept(self, proposal: object, taken: Collection[str]) -> Accepted | Refused:
        if not isinstance(proposal, str) or len(proposal) > MAX_PROPOSAL_CHARS:
            return Refused("not a prompt of the world", repr(proposal)[:MAX_PROPOSAL_CHARS])
        prompt = CANONICAL_PROMPTS.get(" ".join(proposal.strip().rstrip(".").split()).lower())
        if prompt is None:
            return Refused("not a prompt of the world", proposal)
        if prompt in self._heldout_set:
            return Refused("held out", prompt)
        if prompt in taken:
            return Refused("already in the set", prompt)
        return Accepted(prompt, grammar.parse(prompt).domain)

    def category(self, prompt: str) -> str:
        try:
            return grammar.parse(prompt).domain
        except ValueError:  # a prompt from elsewhere (an `eval --prompts FILE`, say)
            return OTHER

    def grade(self, prompts: Sequence[str], images: Sequence[np.ndarray]) -> dict[str, float]:
        return accuracy(prompts, images)

    def teachers_own(self, teachers: Sequence, draws: int = 10) -> dict[str, dict[str, float]]:
        """The world's own teachers (backend shapes), each graded on `draws` of its images per
        held-out prompt (`profiles.own_outcomes`)."""
        own = {}
        for teacher in teachers:
            profile = TEACHER_PROFILES.get(teacher.name)
            if teacher.backend != "shapes" or profile is None:
                continue
            shares = own_outcomes(profile, self.heldout, draws, self.image_size)
            rates = {domain: sum(values) / len(values) for domain, values in shares.items()}
            own[teacher.name] = {**rates, "mean": sum(rates.values()) / len(rates)}
        return own
