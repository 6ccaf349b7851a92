"""The synthetic director's discrimination: the exact rules, made imperfect on purpose.

It prefers the image with the higher partial-credit score (a correct image always scores 1.0,
so it beats any incorrect one), then flips its verdict with probability 1 - judge_accuracy, the
way a real vision-language model is sometimes wrong.
"""

from __future__ import annotations

import random

import numpy as np

from evolvedirector.worlds.shapes.rules import check


def judge_pair(
    prompt: str, image_a: np.ndarray, image_b: np.ndarray, rng: random.Random, judge_accuracy: float = 0.9
) -> str:
    """"A" or "B": the image that better shows the prompt, as an imperfect judge sees it."""
    score_a, score_b = check(prompt, image_a).score, check(prompt, image_b).score
    if score_a == score_b:
        verdict = rng.choice("AB")
    else:
        verdict = "A" if score_a > score_b else "B"
    # Drawn every time, so that how much of rng a call uses does not depend on the images.
    if rng.random() >= judge_accuracy:
        verdict = "B" if verdict == "A" else "A"
    return verdict
