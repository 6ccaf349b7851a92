"""How many CPU threads train the student, chosen again before each round's training.

Threads that share a core with another busy program make every parallel step wait for the slowest
of them: on 2 cores beside one busy process, the demo student's step took 0.25 s with 2 threads
and 0.19 s with 1 (0.12 s and 0.19 s on an idle machine). So when `threads` is not set, each round
times a step with each candidate count and trains with the fastest; a busy machine costs at most
what the other program takes. The count changes no number the run computes (torch's CPU kernels
give the same results with 1 or 2 threads here: tests/test_threads.py checks it).
"""

from __future__ import annotations

import torch


def candidates(available: int) -> list[int]:
    """All threads, half of them, one."""
    return sorted({available, max(1, available // 2), 1}, reverse=True)


def choose_threads(trainer, available: int, repeats: int = 2, at_least: float = 0.4) -> tuple[int, dict[int, float]]:
    """Set torch to the fastest thread count for a training step now; returns it and the timings
    (each the median of `repeats` or more steps, for at least `at_least` seconds)."""
    timings = {}
    for threads in candidates(available):
        torch.set_num_threads(threads)
        timings[threads] = trainer.time_step(repeats, at_least)
    fastest = min(timings, key=timings.get)
    torch.set_num_threads(fastest)
    return fastest, timings


def describe(threads: int, timings: dict[int, float]) -> str:
    others = ", ".join(f"{timings[t]:.3f} s with {t}" for t in timings if t != threads)
    return f"threads: {threads} (a training step took {timings[threads]:.3f} s, against {others})"
