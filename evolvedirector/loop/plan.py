"""The first line of a run: what it will do, and about how long that takes on this machine.

The estimate comes from a short measurement on the run's own student (a few training steps'
forward and backward, one denoising step over the held-out prompts), never from a table of
machines: the same demo takes three times longer on one 2-core CPU than on another. The
measurement changes nothing a run computes: gradients are dropped, the weights, optimizer, EMA
and step counter are untouched, and every random draw comes from its own seeded generator.

After each round the line for it ends with the time left, from the rounds measured so far.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from evolvedirector.config import RunConfig


@dataclass(frozen=True)
class Measured:
    step_seconds: float  # one optimizer step at the run's batch size
    render_seconds: float  # one denoising step for one prompt (guided: both halves)


def measure(trainer, student, prompts: int, repeats: int = 3) -> Measured:
    """Time forward+backward passes of one batch (the median of `repeats` or more, for at least a
    second, after one warm-up) and one denoising step over `prompts` prompts. The optimizer's own
    step is left out: next to forward and backward it is a few percent."""
    with torch.random.fork_rng(devices=[]):
        step_seconds = trainer.time_step(repeats, at_least=1.0)
        started = time.perf_counter()
        student.generate([""] * max(1, prompts), seed=0, steps=1)
        render_seconds = (time.perf_counter() - started) / max(1, prompts)
    return Measured(step_seconds, render_seconds)


def round_seconds(config: RunConfig, measured: Measured, set_size: int, heldout: int) -> float:
    """One round's training, the student's renders for the director and its held-out evaluation;
    teacher and director calls are not counted (local shapes teachers take a fraction of it)."""
    evolve = config.evolve
    judged = math.ceil(evolve.select_ratio * set_size)
    renders = judged * evolve.render_steps
    if evolve.evaluate_every_round:
        renders += heldout * config.student.sample_steps
    return config.train.steps_per_round * measured.step_seconds + renders * measured.render_seconds


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def plan_line(config: RunConfig, first_round: int, measured: Measured, set_size: int, heldout: int) -> str:
    """'plan: rounds 1-8 after the seed round, each 250 training steps at batch 32, then ... (2000
    steps in all): about 4.1 min on this machine (measured: ...)'."""
    train = config.train
    per_round = round_seconds(config, measured, set_size, heldout)
    judges = f"the director judges {100 * config.evolve.select_ratio:g}% of the set"
    if config.evolve.overlap == "async":  # the trainer trains on while a round is judged
        what = f"each {train.steps_per_round} training steps or more at batch {train.batch_size}, while {judges}"
    else:
        what = f"each {train.steps_per_round} training steps at batch {train.batch_size}, then {judges}"
    measuredly = (f"measured: {measured.step_seconds:.3f} s per training step, "
                  f"{1000 * measured.render_seconds:.1f} ms per image per denoising step")
    last = config.budget.max_rounds
    if last is None:
        return (f"plan: rounds from {max(first_round, 1)} until the budget is spent, {what}: about "
                f"{minutes(per_round)} per round on this machine ({measuredly})")
    rounds = last - max(first_round, 1) + 1
    if rounds <= 0:
        return "plan: no rounds left to run"
    span = f"round {last}" if rounds == 1 else f"rounds {max(first_round, 1)}-{last}"
    seed = " after the seed round" if first_round == 0 else ""
    more = " or more" if config.evolve.overlap == "async" else ""
    return (f"plan: {span}{seed}, {what} ({rounds * train.steps_per_round} steps{more} in all): about "
            f"{minutes(rounds * per_round)} on this machine ({measuredly})")


def time_left(config: RunConfig, round: int, durations: list[float]) -> str:
    """', about 2.5 min left' after `round`, from the mean of the rounds timed so far; '' when the
    run has no round limit or none timed."""
    last = config.budget.max_rounds
    if last is None or not durations or round >= last:
        return ""
    return f", about {minutes((last - round) * sum(durations) / len(durations))} left"
