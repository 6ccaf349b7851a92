"""The held-out benchmark: a fixed sample of prompts per domain, and accuracy on it."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from evolvedirector.worlds.shapes.grammar import DOMAINS, all_prompts, parse
from evolvedirector.worlds.shapes.rules import is_correct


def heldout_prompts(per_domain: int = 10, seed: int = 1234) -> list[str]:
    """`per_domain` distinct prompts from each domain, drawn with `seed`, grouped in DOMAINS order."""
    rng = random.Random(seed)
    prompts: list[str] = []
    for domain in DOMAINS:
        pool = all_prompts(domain)
        if not 0 <= per_domain <= len(pool):
            raise ValueError(f"per_domain must lie in [0, {len(pool)}] ({domain} has {len(pool)} prompts)")
        prompts.extend(rng.sample(pool, per_domain))
    return prompts


def accuracy(prompts: Sequence[str], images: Sequence[np.ndarray]) -> dict[str, float]:
    """Share of images correct for their prompts, per domain present and as "mean" over those domains.

    The mean weighs domains equally, not prompts, as WORLD.md's held-out accuracy does.
    """
    if len(prompts) != len(images):
        raise ValueError(f"got {len(prompts)} prompts but {len(images)} images")
    if not prompts:
        raise ValueError("accuracy of no prompts is undefined")
    outcomes: dict[str, list[bool]] = {}
    for prompt, image in zip(prompts, images):
        outcomes.setdefault(parse(prompt).domain, []).append(is_correct(prompt, image))
    result = {domain: sum(o) / len(o) for domain in DOMAINS if (o := outcomes.get(domain))}
    result["mean"] = sum(result.values()) / len(result)
    return result
