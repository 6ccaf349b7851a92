"""Held-out accuracy: the student draws each held-out prompt and the world's rules grade it."""

from __future__ import annotations

from evolvedirector.student import Student
from evolvedirector.world.heldout import accuracy


def evaluate_student(student: Student, prompts: list[str], *, seed: int = 0) -> dict[str, float]:
    """Share of held-out prompts drawn correctly, per domain and as the mean over domains."""
    images = student.generate(prompts, seed=seed)
    return accuracy(prompts, images)
