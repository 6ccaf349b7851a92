"""The shapes world's teachers: renderers that are right with a per-domain probability.

Each is the renderer plus a coin: with probability accuracy[domain] it draws the prompt
correctly (jittered), otherwise with one plausible mistake of that domain. Their strengths
differ by domain, so no one teacher is best everywhere (WORLD.md, "Teachers").
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np

from evolvedirector.worlds.shapes.grammar import parse
from evolvedirector.worlds.shapes.render import render, render_mistake


@dataclass(frozen=True)
class TeacherProfile:
    name: str
    accuracy: dict[str, float]  # domain -> probability that an image is correct
    cost_per_image: float  # dollars the ledger charges per image


TEACHER_PROFILES: dict[str, TeacherProfile] = {
    "atlas": TeacherProfile("atlas", {"object": 0.98, "relation": 0.90, "count": 0.50, "text": 0.20}, 0.040),
    "quill": TeacherProfile("quill", {"object": 0.90, "relation": 0.45, "count": 0.55, "text": 0.97}, 0.060),
    "tally": TeacherProfile("tally", {"object": 0.92, "relation": 0.55, "count": 0.97, "text": 0.30}, 0.030),
}


def teacher_image(profile: TeacherProfile, prompt: str, seed: int, size: int) -> np.ndarray:
    """The teacher's image for (prompt, seed, size); the same arguments always give the same image."""
    domain = parse(prompt).domain
    # A stable hash (Python's hash() of a str changes between runs) seeds all of this image's chances.
    key = "\x1f".join((profile.name, prompt, str(seed), str(size))).encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    if rng.random() < profile.accuracy[domain]:
        return render(prompt, size, rng)
    return render_mistake(prompt, size, rng)


def own_outcomes(profile: TeacherProfile, prompts: list[str], draws: int, size: int) -> dict[str, list[float]]:
    """The teacher graded on its own images: domain -> each prompt's share of `draws` images (seeds
    index x draws + draw) that the rules call correct, prompts in the order given. A teacher is
    right by a coin per image, so one draw a prompt would be as noisy as the prompts."""
    from evolvedirector.worlds.shapes.rules import is_correct

    shares: dict[str, list[float]] = {}
    for index, prompt in enumerate(prompts):
        correct = sum(is_correct(prompt, teacher_image(profile, prompt, index * draws + draw, size))
                      for draw in range(draws))
        shares.setdefault(parse(prompt).domain, []).append(correct / draws)
    return shares
