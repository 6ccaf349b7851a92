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
from evolvedirector.loop import heldout


@dataclass(frozen=True)
class Measured:
    step_seconds: float  # one optimizer step at the run's batch size
    render_seconds: float  # one denoising step for one prompt (guided: both halves)
    low_res_step_seconds: float | None = None  # one step at train.low_res_side, when some are left to train
    first_step: int = 0  # the optimizer steps trained before the plan's first round


def measure(trainer, student, prompts: int, repeats: int = 3) -> Measured:
    """Time forward+backward passes of one batch (the median of `repeats` or more, for at least a
    second, after one warm-up), at full size and, while low-resolution steps are left, at
    train.low_res_side, and one denoising step over `prompts` prompts. The optimizer's own step
    is left out: next to forward and backward it is a few percent."""
    low_res_steps = trainer.config.low_res_steps
    with torch.random.fork_rng(devices=[]):
        step_seconds = trainer.time_step(repeats, at_least=1.0, step=max(trainer.step, low_res_steps))
        low = trainer.time_step(repeats, at_least=1.0) if trainer.step < low_res_steps else None
        started = time.perf_counter()
        student.generate([""] * max(1, prompts), seed=0, steps=1)
        render_seconds = (time.perf_counter() - started) / max(1, prompts)
    return Measured(step_seconds, render_seconds, low, trainer.step)


def training_seconds(config: RunConfig, measured: Measured, first_step: int, steps: int) -> float:
    """Steps first_step .. first_step + steps - 1: those before train.low_res_steps at the low-resolution step's time."""
    low = 0
    if measured.low_res_step_seconds is not None:
        low = max(0, min(first_step + steps, config.train.low_res_steps) - first_step)
    return low * (measured.low_res_step_seconds or 0.0) + (steps - low) * measured.step_seconds


def round_seconds(config: RunConfig, measured: Measured, set_size: int, heldout: int, rounds_before: int = 0) -> float:
    """One round's training, the student's renders for the director and its held-out evaluation;
    teacher and director calls are not counted (local shapes teachers take a fraction of it).
    `rounds_before`: rounds the plan runs before this one (they place its steps after low_res_steps or not)."""
    evolve = config.evolve
    judged = math.ceil(evolve.select_ratio * set_size)
    renders = judged * evolve.render_steps
    if evolve.evaluate_every_round:
        renders += heldout * config.student.sample_steps
    steps = config.train.steps_per_round
    first_step = measured.first_step + rounds_before * steps
    return training_seconds(config, measured, first_step, steps) + renders * measured.render_seconds


def round_estimates(config: RunConfig, first_round: int, measured: Measured, set_size: int, heldout: int) -> list[float]:
    """round_seconds of each round from max(first_round, 1) to budget.max_rounds ([] without a round limit)."""
    last = config.budget.max_rounds
    rounds = 0 if last is None else max(0, last - max(first_round, 1) + 1)
    return [round_seconds(config, measured, set_size, heldout, before) for before in range(rounds)]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def plan_line(config: RunConfig, first_round: int, measured: Measured, set_size: int, heldout: int) -> str:
    """'plan: rounds 1-8 after the seed round, each 250 training steps at batch 32, then ... (2000
    steps in all): about 4.1 min on this machine (measured: ...)'."""
    train = config.train
    judges = f"the director judges {100 * config.evolve.select_ratio:g}% of the set"
    low = measured.low_res_step_seconds
    batch = f"at batch {train.batch_size}"
    if low is not None:
        batch += f" (the first {train.low_res_steps - measured.first_step} at {train.low_res_side} px)"
    if config.evolve.overlap == "async":  # the trainer trains on while a round is judged
        what = f"each {train.steps_per_round} training steps or more {batch}, while {judges}"
    else:
        what = f"each {train.steps_per_round} training steps {batch}, then {judges}"
    low_part = "" if low is None else f" ({low:.3f} s at {train.low_res_side} px)"
    measuredly = (f"measured: {measured.step_seconds:.3f} s per training step{low_part}, "
                  f"{1000 * measured.render_seconds:.1f} ms per image per denoising step")
    last = config.budget.max_rounds
    if last is None:
        return (f"plan: rounds from {max(first_round, 1)} until the budget is spent, {what}: about "
                f"{minutes(round_seconds(config, measured, set_size, heldout))} per round on this machine "
                f"({measuredly})")
    rounds = last - max(first_round, 1) + 1
    if rounds <= 0:
        return "plan: no rounds left to run"
    span = f"round {last}" if rounds == 1 else f"rounds {max(first_round, 1)}-{last}"
    seed = " after the seed round" if first_round == 0 else ""
    more = " or more" if config.evolve.overlap == "async" else ""
    total = sum(round_estimates(config, first_round, measured, set_size, heldout))
    return (f"plan: {span}{seed}, {what} ({rounds * train.steps_per_round} steps{more} in all): about "
            f"{minutes(total)} on this machine ({measuredly})")


def judging_line(config: RunConfig, prompts: int, references_needed: int, measured: Measured) -> str:
    """What the director's held-out measure (loop/heldout.py) costs: its calls each round, the
    teacher images still to buy for it (once), and the student's renders for it."""
    render = prompts * config.student.sample_steps * measured.render_seconds
    if heldout.measure_of(config) == heldout.P_YES:
        calls = f"{prompts} director calls a round"
    else:
        teachers = config.teachers
        dollars = references_needed * sum(t.cost_per_image for t in teachers)
        selections = f" and {references_needed * (len(teachers) - 1)} director selections" if len(teachers) > 1 else ""
        calls = (f"{prompts} director calls a round; the best teacher image of each is bought once: "
                 f"{references_needed * len(teachers)} teacher calls (${dollars:.2f}){selections} still to make")
    return (f"held-out: the director judges {prompts} held-out prompts each round ({heldout.measure_of(config)}; "
            f"evolve.heldout_judged {config.evolve.heldout_judged} per category, 0 turns it off): {calls}, "
            f"and {minutes(render)} of the student's renders a round plus the director's time")


def first_line(config: RunConfig, round: int, world, store, trainer, student) -> tuple[str, list[float]]:
    """The plan line of a run whose next round is `round` (and, where the director measures the
    held-out prompts, a line saying what that costs), and its round_estimates (for time_left)."""
    judged = heldout.judged_prompts(config, world)
    per_category, capped = heldout.judged_per_category(config, world)
    heldout_renders = len(world.heldout) if world.graded else len(judged)
    set_size = len(store.active_samples()) or config.evolve.seed_prompts
    measured = measure(trainer, student, prompts=max(heldout_renders, 1))
    estimates = round_estimates(config, round, measured, set_size, heldout_renders)
    line = plan_line(config, round, measured, set_size, heldout_renders)
    if judged:
        known = store.heldout_references()
        line += "\n" + judging_line(config, len(judged), sum(p not in known for p in judged), measured)
        if capped:
            line += f" ({per_category} per category: {capped})"
    elif capped:
        line += (f"\nheld-out: the director judges no held-out prompts ({capped}: not one prompt per category "
                 "fits; raise the budget or set evolve.heldout_judged 0 to say so)")
    return line, estimates


def time_left(config: RunConfig, round: int, durations: list[float], estimates: list[float] | None = None) -> str:
    """', about 2.5 min left' after `round`; '' when the run has no round limit or none timed.
    Without `estimates`: the mean of the rounds timed so far times the rounds left. With the plan's
    `estimates` of every round run here (round_estimates): those of the rounds left, each plus what
    the rounds so far took beyond their estimates on average (teachers, director, checkpoint and
    report are not in the estimate). Rounds at low resolution are shorter than the others, so
    their mean alone would promise too early an end."""
    last = config.budget.max_rounds
    if last is None or not durations or round >= last:
        return ""
    if estimates and len(estimates) >= len(durations):
        beyond = (sum(durations) - sum(estimates[: len(durations)])) / len(durations)
        left = estimates[len(durations):]
        return f", about {minutes(max(0.0, sum(left) + beyond * len(left)))} left"
    return f", about {minutes((last - round) * sum(durations) / len(durations))} left"
