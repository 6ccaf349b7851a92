"""The stages of a round, in the order a round runs them (loop/round.py writes that order out).

Each stage is given what it works on and the collaborators it needs, and returns what the next
one reads. Every random draw comes from the round's `rng`, in this order: the share of the set
chosen, each judged pair's order, each mutation's coin, each accepted proposal's bucket, then each
selection among teacher images (loop/acquire.py). A stage's director calls are all in flight at
once (the director bounds its own concurrency), and each is started in the chosen samples' order,
so a seeded run gives the same set whatever answers first.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rich.progress import Progress

from evolvedirector.config import EvolveConfig, RunConfig
from evolvedirector.director import Director, Discrimination, discriminate
from evolvedirector.director.failures import Tally
from evolvedirector.loop import tracking
from evolvedirector.loop.acquire import Proposal
from evolvedirector.loop.console import RoundSummary
from evolvedirector.loop.heldout import Judged
from evolvedirector.loop.run_folder import RunFolder
from evolvedirector.loop.training import Trained
from evolvedirector.store import ImageStore, RefusalRecord, RoundRecord, Sample, Store, VerdictRecord
from evolvedirector.teachers.seeding import TEACHER_SEED
from evolvedirector.worlds import World
from evolvedirector.worlds.base import OTHER, Refused

# An expansion whose reply held no prompt at all (after the director's own retries): nothing
# reached the world, but it is counted beside the world's refusals.
NO_PROMPT = "no prompt in the reply"


def seed_proposals(world: World, count: int, teachers: list[str], rng: random.Random) -> list[Proposal]:
    """Round 0's prompts: the world's seed prompts, each to be bought from every teacher."""
    return [Proposal(p, "seed", world.category(p), list(teachers), bucket=world.bucket(rng))
            for p in world.seed_prompts(count, rng)]


# -- choose ----------------------------------------------------------------------------------


@dataclass
class Chosen:
    """The samples the director judges this round, drawn by the student, beside their teacher images."""

    samples: list[Sample]
    renders: list[np.ndarray]
    teacher_images: list[np.ndarray]


def choose(rng: random.Random, round: int, active: list[Sample], again: set[int], evolve: EvolveConfig,
           guidance: float, student, images: ImageStore, folder: RunFolder) -> Chosen:
    """A random select_ratio of the set, after those left unjudged last round (`again`), drawn by
    `student`; the grid of what the director sees goes into the run folder."""
    picked = rng.sample(active, max(1, math.ceil(evolve.select_ratio * len(active))))
    samples = [s for s in active if s.id in again and s not in picked] + picked
    renders = student.generate([s.prompt for s in samples], seed=round, steps=evolve.render_steps, guidance=guidance)
    teacher_images = [images.get(s.image_hash) for s in samples]
    folder.save_round_grid(round, samples, renders, teacher_images)
    return Chosen(samples, renders, teacher_images)


# -- judge -----------------------------------------------------------------------------------


async def judge(director: Director, chosen: Chosen, rng: random.Random, evolve: EvolveConfig,
                progress: Progress, round: int) -> list[Discrimination]:
    """Student against teacher for every chosen sample, in random order (`evolve.discrimination:
    random`, an ablation: a coin in place of the director)."""
    task = progress.add_task(f"round {round}: director", total=len(chosen.samples), info="")

    async def one(sample: Sample, render: np.ndarray, teacher_image: np.ndarray) -> Discrimination:
        if evolve.discrimination == "director":
            outcome = await discriminate(director, sample.prompt, render, teacher_image, rng)
        else:  # ablation: the same operations, driven by a coin instead of the director
            won = rng.random() < evolve.random_student_win_rate
            outcome = Discrimination("student" if won else "teacher", student_shown_first=True)
        progress.update(task, advance=1)
        return outcome

    return list(await asyncio.gather(*(one(*item) for item in zip(chosen.samples, chosen.renders,
                                                                   chosen.teacher_images))))


# -- decide ----------------------------------------------------------------------------------


@dataclass
class Ask:
    """A new prompt to ask the director for: `operation` expand or mutate, drawn by `teachers`."""

    parent: Sample
    operation: str
    teachers: list[str]


@dataclass
class Decided:
    verdicts: list[VerdictRecord] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    unjudged: list[tuple[int, str]] = field(default_factory=list)  # (sample id, why): no usable verdict
    asks: list[Ask] = field(default_factory=list)
    teacher_wins: int = 0


def favourite_teachers(store: Store, expand_with: str) -> dict[str, str]:
    """Per category, the teacher the director has selected most often (read for `expand_with: best`)."""
    if expand_with != "best":
        return {}
    return {category: max(wins, key=wins.get) for category, wins in store.selection_wins().items()}


def expansion_teachers(expand_with: str, teachers: list[str], parent: Sample, favourites: dict[str, str]) -> list[str]:
    """Who draws the prompts expanded from `parent` (`evolve.expand_with`)."""
    if expand_with == "all":
        return list(teachers)
    if expand_with == "best" and parent.domain in favourites:
        # The parent's own teacher may have been chosen on a tie-break between two correct
        # images; the category's most selected teacher is the better guess for new prompts.
        return [favourites[parent.domain]]
    return [parent.teacher]


def decide(chosen: Chosen, outcomes: list[Discrimination], rng: random.Random, evolve: EvolveConfig,
           teachers: list[str], favourites: dict[str, str], images: ImageStore) -> Decided:
    """Delete, or expand, or mutate: decided per sample in the chosen order (the mutation's coin
    too). A sample without a usable verdict is left alone, to be judged again next round."""
    decided = Decided(teacher_wins=sum(o.winner == "teacher" for o in outcomes))
    for sample, render, outcome in zip(chosen.samples, chosen.renders, outcomes):
        if outcome.winner is None:
            decided.unjudged.append((sample.id, outcome.failure))
            continue
        if outcome.winner == "student":
            action = "delete" if evolve.deletion else "keep"
            if evolve.deletion:
                decided.deleted.append(sample.id)
            if rng.random() < evolve.mutation_ratio:
                decided.asks.append(Ask(sample, "mutate", list(teachers)))
        else:
            action = "expand" if evolve.expansion else "keep"
            if evolve.expansion:
                decided.asks.append(Ask(sample, "expand",
                                        expansion_teachers(evolve.expand_with, teachers, sample, favourites)))
        decided.verdicts.append(VerdictRecord(
            sample_id=sample.id, student_image=images.put(render), teacher_image=sample.image_hash,
            student_shown_first=outcome.student_shown_first, winner=outcome.winner, action=action,
        ))
    return decided


# -- propose ---------------------------------------------------------------------------------


async def propose(director: Director, decided: Decided, extend_num: int, progress: Progress,
                  round: int) -> list[list[str]]:
    """The director's new prompts for every expansion and mutation asked, all asked at once."""
    task = progress.add_task(f"round {round}: expand / mutate", total=len(decided.asks),
                             info=f"teacher wins {decided.teacher_wins}")

    async def one(ask: Ask) -> list[str]:
        if ask.operation == "mutate":
            replies = [await director.mutate(ask.parent.prompt)]
        else:
            replies = await director.expand(ask.parent.prompt, extend_num)
        progress.update(task, advance=1)
        return replies

    return list(await asyncio.gather(*(one(ask) for ask in decided.asks)))


# -- place -----------------------------------------------------------------------------------


@dataclass
class Placed:
    proposals: list[Proposal]  # accepted, each with its category and bucket
    refusals: list[RefusalRecord]


async def place(world: World, director: Director, asks: list[Ask], replies: list[list[str]], active: list[Sample],
                rng: random.Random, extend_num: int, drawn: Counter[str] | None = None) -> Placed:
    """The world accepts or refuses each proposal, in the chosen samples' order; a free-text
    mutation the world cannot place is categorized by the director, all at once.

    With `drawn` (`evolve.redraw`: how many samples of each prompt key the store holds, deleted
    ones too), an expansion naming a prompt already in the set is a redraw of it: the set's own
    prompt, asked with the next teacher seed (teachers/seeding.py), instead of a duplicate refused."""
    proposals: list[Proposal] = []
    refusals: list[RefusalRecord] = []
    taken = {world.key(s.prompt): (s.prompt, s.domain) for s in active}  # key -> (prompt, category)
    for ask, texts in zip(asks, replies):
        if ask.operation == "expand" and not texts and extend_num:  # a refusal, or a reply with no prompt in it
            refusals.append(RefusalRecord(ask.parent.id, "expand", NO_PROMPT, ""))
        redraws = drawn is not None and ask.operation == "expand"
        for text in texts:
            # The world checks everything but the set against it; the set is checked here.
            outcome = world.accept(text, () if redraws else taken)
            if isinstance(outcome, Refused):
                refusals.append(RefusalRecord(ask.parent.id, ask.operation, outcome.reason, outcome.detail))
                continue
            key = world.key(outcome.prompt)
            if redraws and key in taken:
                prompt, category = taken[key]
                proposals.append(Proposal(prompt, ask.operation, category, ask.teachers, ask.parent.id,
                                          world.bucket(rng), seed=TEACHER_SEED + drawn[key]))
                drawn[key] += 1  # counted at once: a second redraw in this round gets the next seed
                continue
            # A free-text prompt the world cannot place: an expansion takes its parent's category.
            category = outcome.category
            if category is None and ask.operation == "expand":
                category = ask.parent.domain
            taken[key] = (outcome.prompt, category)
            if drawn is not None:
                drawn[key] += 1
            proposals.append(Proposal(outcome.prompt, ask.operation, category, ask.teachers, ask.parent.id,
                                      world.bucket(rng)))
    unplaced = [p for p in proposals if p.category is None]
    categories = await asyncio.gather(*(director.categorize(p.prompt, world.categories) for p in unplaced))
    for proposal, category in zip(unplaced, categories):
        proposal.category = category or OTHER
    return Placed(proposals, refusals)


# -- measure ---------------------------------------------------------------------------------


@dataclass
class Validation:
    """The validation prompts as the student drew them, and their held-out accuracy where graded;
    where not, the director's judgement of held-out prompts (loop/heldout.py), once made."""

    prompts: list[str]
    renders: list[np.ndarray]
    accuracy: dict[str, float]
    judged: Judged | None = None


def measure(student, world: World, config: RunConfig, tracking_on: bool) -> Validation:
    """The validation prompts drawn by `student` at the run's seed, once a round: every held-out
    prompt where the world grades them exactly (the shapes world), graded; else the first few when a
    tracker shows them; none when neither wants them."""
    if config.evolve.evaluate_every_round and world.graded:
        prompts = list(world.heldout)
        renders = student.generate(prompts, seed=config.seed)
        return Validation(prompts, renders, world.grade(prompts, renders))
    if tracking_on:
        prompts = list(world.heldout[:tracking.UNGRADED_PROMPTS])
        return Validation(prompts, student.generate(prompts, seed=config.seed), {})
    return Validation([], [], {})


# -- commit ----------------------------------------------------------------------------------


@dataclass
class Edits:
    """What the director decided in a round, and the samples bought for it."""

    verdicts: list[VerdictRecord] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)
    unjudged: list[tuple[int, str]] = field(default_factory=list)  # (sample id, why): no usable verdict
    new_samples: list = field(default_factory=list)
    director: Tally = field(default_factory=Tally)


def round_tally(judging: Tally, after: Tally) -> Tally:
    """The round's director calls in one tally, its comparisons named for what they decided:
    `judge` (student against teacher) while judging, `select` (the best teacher image) after."""
    tally = Tally()
    tally.add(judging, rename=lambda operation: "judge" if operation == "compare" else operation)
    tally.add(after, rename=lambda operation: "select" if operation == "compare" else operation)
    return tally


def commit(store: Store, folder: RunFolder, tracker: tracking.Tracking, round: int, started: float, edits: Edits,
           validation: Validation, checkpoint: str | None, trained: Trained) -> RoundSummary:
    """The round's edits, checkpoint and metrics in one transaction; then `latest` names its
    checkpoint, the trackers log it, and its summary line is made."""
    judged = validation.judged
    if judged is not None:  # its director calls are the round's too
        edits.director.add(judged.tally)
    calls, dollars = store.spend()
    metrics = {"accuracy": validation.accuracy, "loss": trained.loss, "calls": calls, "dollars": dollars}
    if judged is not None:
        metrics["director_heldout"] = judged.metrics
    store.commit_round(RoundRecord(
        round=round, started_at=started, new_samples=edits.new_samples, deleted_ids=edits.deleted,
        verdicts=edits.verdicts, refusals=edits.refusals, director_failures=dict(edits.director.failures),
        unjudged=edits.unjudged, heldout_references=[] if judged is None else judged.references,
        train_step=trained.step, checkpoint=checkpoint, metrics=metrics,
    ))
    if checkpoint is not None:
        folder.point_latest_at(checkpoint)
    row = store.rounds()[-1]
    tracker.log_round(row, refused=len(edits.refusals), validation=(validation.prompts, validation.renders))
    calls, dollars = store.spend()
    return RoundSummary(
        round=round, set_size=row["set_size"], judged=row["judged"], teacher_wins=row["teacher_wins"],
        added=row["added"], deleted=row["deleted"], mutated=row["mutated"], refused=len(edits.refusals), calls=calls,
        dollars=dollars, seconds=time.time() - started, accuracy=validation.accuracy, loss=trained.loss,
        director=edits.director, steps=trained.steps, train_seconds=trained.train_seconds,
        director_heldout=metrics.get("director_heldout", {}),
    )
