"""The student judged by the director on held-out prompts each round, where the world has no exact rules.

The open world's counterpart of the shapes world's exact grades: on a user's own prompts this is
what shows, round by round, whether the student improves.

- The prompts: up to `evolve.heldout_judged` held-out prompts per category, drawn once from the
  run's seed, the same every round. None are ever trained on or proposed (worlds/base.py).
- The measure: with `director.mode: pointwise` (a server that returns log-probabilities), the
  mean P("Yes") that the student's image shows its prompt. With any other director, the student's
  win rate against the best teacher's image of the prompt: every teacher draws each prompt once,
  through the ledger (in the budget, never paid twice), the director picks the best (selection, as
  for the set), and the choice is committed with the round (`heldout_references`), so later rounds
  judge against the same image at no cost.
- The figure: per category, the mean over its prompts with a 95% percentile bootstrap interval
  (evaluation/stats.py), and the categories' mean. A prompt without a usable answer, or without a
  reference image (the budget spent, every teacher failing), is left out and the count says so;
  the director's calls and failures are counted in the round under `heldout`.

Its random draws come from generators of their own, so turning it on, off or resizing it changes
nothing else a round does.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from rich.console import Console

from evolvedirector.config import RunConfig
from evolvedirector.director import Director, discriminate
from evolvedirector.director.failures import Tally
from evolvedirector.evaluation.stats import accuracy_intervals
from evolvedirector.loop.acquire import Proposal, buy_and_select
from evolvedirector.seeds import seed_for
from evolvedirector.store import ImageStore, Store
from evolvedirector.teachers import Ledger, Teacher
from evolvedirector.worlds import World

# The most of budget.max_teacher_calls (or max_dollars) the win rate's reference images may take:
# with a small budget, 8 prompts per category from every teacher could otherwise spend it all in
# round 0 and stop the run before the student had trained.
REFERENCE_SHARE = 0.25
P_YES = "P(yes)"
WIN_RATE = "win rate against the best teacher"
OPERATION = "heldout"  # the round's director calls for this measure, as the store counts them


def judged_prompts(config: RunConfig, world: World) -> list[str]:
    """The held-out prompts the director judges each round, grouped by category; none where the
    world grades exactly or the measure is off."""
    per_category, _why = judged_per_category(config, world)
    if per_category == 0:
        return []
    rng = random.Random(seed_for(config.seed, "heldout sample"))
    by_category: dict[str, list[str]] = {}
    for prompt in world.heldout:
        by_category.setdefault(world.category(prompt), []).append(prompt)
    chosen: list[str] = []
    for prompts in by_category.values():  # in file order within each category
        picked = sorted(rng.sample(range(len(prompts)), min(per_category, len(prompts))))
        chosen += [prompts[i] for i in picked]
    return chosen


def judged_per_category(config: RunConfig, world: World) -> tuple[int, str | None]:
    """evolve.heldout_judged, or fewer where every teacher's image of that many prompts per category
    would take more than REFERENCE_SHARE of the call or dollar budget, with the reason when capped;
    0 where the world grades exactly or the measure is off. A pointwise director buys nothing for
    the measure: never capped."""
    evolve = config.evolve
    if world.graded or not evolve.evaluate_every_round or evolve.heldout_judged == 0:
        return 0, None
    wanted = evolve.heldout_judged
    categories = len({world.category(prompt) for prompt in world.heldout})
    if measure_of(config) == P_YES or categories == 0:
        return wanted, None
    budget, teachers = config.budget, config.teachers
    limits = []
    if budget.max_teacher_calls is not None:
        limits.append((int(REFERENCE_SHARE * budget.max_teacher_calls) // len(teachers), "budget.max_teacher_calls",
                       f"{budget.max_teacher_calls}"))
    price = sum(t.cost_per_image for t in teachers)
    if budget.max_dollars is not None and price > 0:
        limits.append((int(REFERENCE_SHARE * budget.max_dollars / price), "budget.max_dollars",
                       f"${budget.max_dollars:g}"))
    capped = [(prompts // categories, field, value) for prompts, field, value in limits if prompts // categories < wanted]
    if not capped:
        return wanted, None
    per_category, field, value = min(capped)
    return per_category, (f"capped from evolve.heldout_judged {wanted} so that their teacher images take at most "
                          f"{REFERENCE_SHARE:.0%} of {field} ({value})")


def measure_of(config: RunConfig) -> str:
    return P_YES if getattr(config.director, "mode", None) == "pointwise" else WIN_RATE


@dataclass
class Judged:
    """One round's figures: `metrics` as the round stores them, the references chosen this round."""

    metrics: dict
    references: list[tuple[str, str, str]] = field(default_factory=list)  # (prompt, teacher, image hash)
    tally: Tally = field(default_factory=Tally)


async def judge_heldout(prompts: list[str], student, round: int, *, config: RunConfig, world: World,
                        director: Director, store: Store, ledger: Ledger, teachers: dict[str, Teacher],
                        images: ImageStore, console: Console) -> Judged | None:
    """The student's images of `prompts` judged by the director; None when there are none to judge.
    Call it after the round's other director calls are tallied: it takes the director's tally."""
    if not prompts:
        return None
    started = time.perf_counter()
    rng = random.Random(seed_for(config.seed, "heldout judging", round))
    renders = student.generate(prompts, seed=config.seed)
    measure = measure_of(config)
    new_references: list[tuple[str, str, str]] = []
    if measure == P_YES:
        values = await asyncio.gather(*(director.score(p, image) for p, image in zip(prompts, renders)))
    else:
        references = await _references(prompts, round, rng, new_references, config=config, world=world,
                                       director=director, store=store, ledger=ledger, teachers=teachers,
                                       images=images, console=console)

        async def one(prompt, render) -> float | None:
            if prompt not in references:
                return None
            outcome = await discriminate(director, prompt, render, images.get(references[prompt]), rng)
            return None if outcome.winner is None else float(outcome.winner == "student")

        values = await asyncio.gather(*(one(p, image) for p, image in zip(prompts, renders)))
    tally = Tally()
    tally.add(director.take_tally(), rename=lambda _operation: OPERATION)
    by_category: dict[str, list[float]] = {}
    for prompt, value in zip(prompts, values):
        if value is not None:
            by_category.setdefault(world.category(prompt), []).append(value)
    usable = sum(v is not None for v in values)
    figures = accuracy_intervals(by_category, seed=round) if by_category else {}
    for category, cell in figures.items():
        cell["n"] = usable if category == "mean" else len(by_category[category])
    metrics = {"measure": measure, "categories": figures, "prompts": len(prompts), "usable": usable,
               "seconds": time.perf_counter() - started}
    return Judged(metrics, new_references, tally)


async def _references(prompts: list[str], round: int, rng: random.Random, chosen_now: list, *, config, world,
                      director, store, ledger, teachers, images, console) -> dict[str, str]:
    """held-out prompt -> the image hash of its best teacher image: those chosen before, then the
    prompts still without one bought from every teacher and selected (appended to `chosen_now`)."""
    known = {p: image_hash for p, (_teacher, image_hash) in store.heldout_references().items() if image_hash in images}
    missing = [Proposal(p, OPERATION, world.category(p), list(teachers)) for p in prompts if p not in known]
    bought = await buy_and_select(missing, round=round, rng=rng, size=world.image_size, ledger=ledger,
                                  teachers=teachers, images=images, director=director, console=console)
    for sample in bought:
        known[sample.prompt] = sample.image_hash
        chosen_now.append((sample.prompt, sample.teacher, sample.image_hash))
    return known
