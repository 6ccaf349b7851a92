"""One round of the loop, written out: read `run_round` (serial) or `overlapped_round`
(asynchronous: the trainer trains on in its own thread meanwhile) top to bottom.

```
train the student K steps on D_r
S = a random select_ratio of D_r (and those left unjudged last round), rendered by the student
per prompt in S: the director compares student and teacher (random order)
    teacher wins -> expand: extend_num similar prompts (they inherit the parent's category)
    student wins -> delete; with p = mutation_ratio, mutate: one unrelated prompt
    no usable verdict -> nothing (counted by kind; judged again next round)
every proposal goes through the world: accepted, or refused with a reason (kept in the store)
buy teacher images for the new prompts (several teachers: the director picks the best)
    every teacher failed every call and nothing was bought -> stop; the round is not committed
(each stage's director calls and every purchase are in flight at once)
commit D_{r+1}, every verdict, refusal and its lineage, in one transaction
```

`seed_round` is round 0: the world's seed prompts, bought from every teacher.
The collaborators come from `Evolution` (loop/evolve.py): the world, the store and its images,
the ledger and teachers, the student and its trainer, the director, the run folder.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from evolvedirector.director import Discrimination, discriminate
from evolvedirector.director.failures import Tally
from evolvedirector.loop.acquire import Proposal, buy_and_select
from evolvedirector.loop.console import RoundSummary, progress_bar
from evolvedirector.store import RefusalRecord, RoundRecord, Sample, VerdictRecord
from evolvedirector.worlds.base import OTHER, Refused

if TYPE_CHECKING:
    from evolvedirector.loop.background import BackgroundTrainer
    from evolvedirector.loop.evolve import Evolution

# An expansion whose reply held no prompt at all (after the director's own retries): nothing
# reached the world, but it is counted beside the world's refusals.
NO_PROMPT = "no prompt in the reply"


async def seed_round(run: Evolution) -> RoundSummary:
    started = time.time()
    rng = random.Random(run.config.seed)
    prompts = run.world.seed_prompts(run.config.evolve.seed_prompts, rng)
    proposals = [Proposal(p, "seed", run.world.category(p), list(run.teachers), bucket=run.world.bucket(rng))
                 for p in prompts]
    new_samples = await _buy(run, proposals, round=0, rng=rng)
    director = _round_tally(Tally(), run.director.take_tally())
    validation = run.render_validation()
    accuracy = run.evaluate(*validation)
    run.store.commit_round(RoundRecord(round=0, started_at=started, new_samples=new_samples,
                                       director_failures=dict(director.failures),
                                       metrics=run.metrics(accuracy, loss=None)))
    run.tracking.log_round(run.store.rounds()[-1], refused=0, validation=validation)
    return run.summary(0, started, accuracy=accuracy, director=director)


async def run_round(run: Evolution, round: int) -> RoundSummary:
    """The serial round (`evolve.overlap: serial`): train, then render, judge, buy and commit."""
    started = time.time()
    rng = random.Random(run.config.seed * 1_000_003 + round)
    active = run.store.active_samples()
    run.director.take_tally()  # from here on, this round's calls only

    # 1. Train on the current version of the set.
    step, seconds = run.trainer.step, run.trainer.train_seconds
    loss = run.train_on_set(active, run.config.train.steps_per_round, label=f"round {round}")

    # 2-4. The director judges a share of the set, rendered by the student; buy for the new prompts.
    edits = await direct(run, round, rng, active, run.student)

    # 5. Evaluate, checkpoint, and commit the new version of the set in one transaction.
    validation = run.render_validation(run.student)
    checkpoint = run.folder.save_checkpoint(run.trainer, round)
    return commit(run, round, started, edits, validation, checkpoint=checkpoint, train_step=run.trainer.step,
                  loss=loss, steps=run.trainer.step - step, train_seconds=run.trainer.train_seconds - seconds)


async def overlapped_round(run: Evolution, round: int, training: BackgroundTrainer) -> RoundSummary:
    """The asynchronous round (`evolve.overlap: async`): the trainer trains on in its own thread
    throughout (loop/background.py), on the newest committed version, while this renders from a
    snapshot of the student, judges, buys and commits; the trainer switches to the committed
    version at its next step boundary.

    Round r's snapshot is taken at the first step boundary at which round r-1 is committed and
    steps_per_round steps have passed since round r-1's snapshot: the student a round judges has
    trained steps_per_round steps more than the previous round's, more when judging and buying
    took longer than those steps. Its checkpoint, held-out accuracy and `train_step` are the
    trainer's state when the round is ready to commit (the steps trained meanwhile are kept).

    A resume after kill -9 reproduces exactly the committed rounds (set versions, verdicts,
    refusals, metrics), the ledger (nothing paid twice) and the student of the last committed
    checkpoint; the steps trained after it are trained again, on the newest committed version,
    and the later snapshot and switch steps follow the timing of the resumed run, so the rounds
    after the resume are not those the killed run would have committed.
    """
    started = time.time()
    rng = random.Random(run.config.seed * 1_000_003 + round)
    active = run.store.active_samples()
    run.director.take_tally()

    # 1. The student after steps_per_round more steps; the trainer goes on.
    snapshot = await training.snapshot()

    # 2-4. The director judges a share of the set, rendered by the snapshot; buy for the new prompts.
    edits = await direct(run, round, rng, active, snapshot)

    # 5. The trainer's state now is the round's checkpoint: evaluate it, commit, hand the version over.
    captured = await training.capture()
    validation = run.render_validation(captured.student)
    checkpoint = run.folder.save_checkpoint(run.trainer, round, state=captured.state)
    summary = commit(run, round, started, edits, validation, checkpoint=checkpoint, train_step=captured.step,
                     loss=captured.loss, steps=captured.steps, train_seconds=captured.train_seconds)
    training.hand_over(round, run.store.active_samples())
    return summary


@dataclass
class Edits:
    """What the director decided in a round, and the samples bought for it."""

    verdicts: list[VerdictRecord] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)
    unjudged: list[tuple[int, str]] = field(default_factory=list)  # (sample id, why): no usable verdict
    new_samples: list = field(default_factory=list)
    director: Tally = field(default_factory=Tally)


async def direct(run: Evolution, round: int, rng: random.Random, active: list[Sample], student) -> Edits:
    """Steps 2-4 of a round: `student` renders a random share of the set (and those left unjudged
    last round); the director judges them, then proposes; the world accepts or refuses each
    proposal; teacher images are bought for the accepted ones. Every director call of a stage is
    in flight at once (the director bounds its own concurrency); what is committed keeps the
    order of the judged samples, so a seeded run gives the same set whatever answers first."""
    evolve = run.config.evolve
    judged = rng.sample(active, max(1, math.ceil(evolve.select_ratio * len(active))))
    again = run.store.unjudged(round - 1)
    judged = [s for s in active if s.id in again and s not in judged] + judged
    guidance = evolve.render_guidance if evolve.render_guidance is not None else run.config.student.guidance
    renders = student.generate([s.prompt for s in judged], seed=round, steps=evolve.render_steps, guidance=guidance)
    teacher_images = [run.images.get(s.image_hash) for s in judged]
    run.folder.save_round_grid(round, judged, renders, teacher_images)

    edits = Edits()
    asks: list[tuple[Sample, str, list[str]]] = []  # (parent, expand or mutate, its teachers)
    favourites = ({category: max(wins, key=wins.get) for category, wins in run.store.selection_wins().items()}
                  if evolve.expand_with == "best" else {})
    with progress_bar(run.console) as progress:
        task = progress.add_task(f"round {round}: director", total=len(judged), info="")

        async def judge(sample: Sample, render: np.ndarray, teacher_image: np.ndarray) -> Discrimination:
            if evolve.discrimination == "director":
                outcome = await discriminate(run.director, sample.prompt, render, teacher_image, rng)
            else:  # ablation: the same operations, driven by a coin instead of the director
                won = rng.random() < evolve.random_student_win_rate
                outcome = Discrimination("student" if won else "teacher", student_shown_first=True)
            progress.update(task, advance=1)
            return outcome

        outcomes = await asyncio.gather(*(judge(*item) for item in zip(judged, renders, teacher_images)))
        judging = run.director.take_tally()

        # 3. Delete, or expand, or mutate: decided per sample in order (the mutation's coin too) ...
        for sample, render, outcome in zip(judged, renders, outcomes):
            if outcome.winner is None:  # no usable verdict: no action; the sample stays, judged next round
                edits.unjudged.append((sample.id, outcome.failure))
                continue
            if outcome.winner == "student":
                action = "delete" if evolve.deletion else "keep"
                if evolve.deletion:
                    edits.deleted.append(sample.id)
                if rng.random() < evolve.mutation_ratio:
                    asks.append((sample, "mutate", list(run.teachers)))
            else:
                action = "expand" if evolve.expansion else "keep"
                if evolve.expansion:
                    asks.append((sample, "expand", run.expansion_teachers(sample, favourites)))
            edits.verdicts.append(VerdictRecord(
                sample_id=sample.id, student_image=run.images.put(render), teacher_image=sample.image_hash,
                student_shown_first=outcome.student_shown_first, winner=outcome.winner, action=action,
            ))

        # ... then every expansion and mutation asked at once.
        wins = sum(o.winner == "teacher" for o in outcomes)
        task = progress.add_task(f"round {round}: expand / mutate", total=len(asks), info=f"teacher wins {wins}")

        async def ask(parent: Sample, operation: str) -> list[object]:
            if operation == "mutate":
                replies = [await run.director.mutate(parent.prompt)]
            else:
                replies = await run.director.expand(parent.prompt, evolve.extend_num)
            progress.update(task, advance=1)
            return replies

        replies = await asyncio.gather(*(ask(parent, operation) for parent, operation, _ in asks))

    # The world accepts or refuses each proposal, in the judged samples' order.
    proposals: list[Proposal] = []
    taken = {run.world.key(s.prompt) for s in active}
    for (parent, operation, teachers), texts in zip(asks, replies):
        if operation == "expand" and not texts and evolve.extend_num:  # a refusal, or a reply with no prompt in it
            edits.refusals.append(RefusalRecord(parent.id, "expand", NO_PROMPT, ""))
        for text in texts:
            outcome = run.world.accept(text, taken)
            if isinstance(outcome, Refused):
                edits.refusals.append(RefusalRecord(parent.id, operation, outcome.reason, outcome.detail))
                continue
            taken.add(run.world.key(outcome.prompt))
            # A free-text prompt the world cannot place: an expansion takes its parent's category.
            category = outcome.category
            if category is None and operation == "expand":
                category = parent.domain
            proposals.append(Proposal(outcome.prompt, operation, category, teachers, parent.id, run.world.bucket(rng)))
    # A free-text mutation's category is asked of the director, all at once.
    unplaced = [p for p in proposals if p.category is None]
    placed = await asyncio.gather(*(run.director.categorize(p.prompt, run.world.categories) for p in unplaced))
    for proposal, category in zip(unplaced, placed):
        proposal.category = category or OTHER

    # 4. Buy teacher images for the new prompts; pick the best where several teachers drew one.
    edits.new_samples = await _buy(run, proposals, round=round, rng=rng)
    edits.director = _round_tally(judging, run.director.take_tally())
    return edits


def commit(run: Evolution, round: int, started: float, edits: Edits, validation, *, checkpoint: str,
           train_step: int, loss: float | None, steps: int, train_seconds: float) -> RoundSummary:
    """Step 5: grade the validation renders, commit the round in one transaction, point `latest`
    at its checkpoint, log it."""
    accuracy = run.evaluate(*validation)
    run.store.commit_round(RoundRecord(
        round=round, started_at=started, new_samples=edits.new_samples, deleted_ids=edits.deleted,
        verdicts=edits.verdicts, refusals=edits.refusals, director_failures=dict(edits.director.failures),
        unjudged=edits.unjudged, train_step=train_step, checkpoint=checkpoint, metrics=run.metrics(accuracy, loss),
    ))
    run.folder.point_latest_at(checkpoint)
    run.tracking.log_round(run.store.rounds()[-1], refused=len(edits.refusals), validation=validation)
    return run.summary(round, started, accuracy=accuracy, loss=loss, refused=len(edits.refusals),
                       director=edits.director, steps=steps, train_seconds=train_seconds)


def _round_tally(judging: Tally, after: Tally) -> Tally:
    """The round's director calls in one tally, its comparisons named for what they decided:
    `judge` (student against teacher) while judging, `select` (the best teacher image) after."""
    tally = Tally(last_failure=after.last_failure or judging.last_failure)
    for part, compare in ((judging, "judge"), (after, "select")):
        for operation, count in part.calls.items():
            tally.calls[compare if operation == "compare" else operation] += count
        for (operation, kind), count in part.failures.items():
            tally.failures[compare if operation == "compare" else operation, kind] += count
    return tally


async def _buy(run: Evolution, proposals: list[Proposal], *, round: int, rng: random.Random):
    """Step 4's purchases; raises TeachersFailed, before anything of the round is committed, when
    no teacher answered (Evolution.check_teachers)."""
    new_samples = await buy_and_select(proposals, round=round, rng=rng, size=run.world.image_size, ledger=run.ledger,
                                       teachers=run.teachers, images=run.images, director=run.director,
                                       console=run.console)
    await run.check_teachers(round, new_samples)
    return new_samples
