"""One round of the loop as named stages, written out in the order it runs them: read `run_round`
(serial), `overlapped_round` (asynchronous: the trainer trains on in its own thread meanwhile) or
`seed_round` top to bottom; `direct` is the director's part, which both kinds share. The stages
are in loop/stages.py, the training in loop/training.py and loop/background.py.

```
train    the student K steps on D_r
choose   S = a random select_ratio of D_r (and those left unjudged last round), rendered by the student
judge    per prompt in S: the director compares student and teacher (random order)
decide       teacher wins -> expand: extend_num similar prompts (they inherit the parent's category)
             student wins -> delete; with p = mutation_ratio, mutate: one unrelated prompt
             no usable verdict -> nothing (counted by kind; judged again next round)
propose  the director writes the expansions and mutations
place    every proposal goes through the world: accepted, or refused with a reason (kept in the store);
             with evolve.redraw, an expansion naming a prompt in the set buys another image of it
buy      teacher images for the new prompts (several teachers: the director picks the best)
             every teacher failed every call and nothing was bought -> stop; the round is not committed
measure  the student draws the held-out prompts, graded where the world grades exactly; where it
             does not, the director judges a fixed sample of them (loop/heldout.py)
commit   D_{r+1}, every verdict, refusal and its lineage, the checkpoint and metrics, in one transaction
(each stage's director calls and every purchase are in flight at once)
```

`seed_round` is round 0: the world's seed prompts, bought from every teacher. The collaborators
come in a `RoundContext`, wired by `Evolution` (loop/evolve.py).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console

from evolvedirector.config import RunConfig
from evolvedirector.director import Director
from evolvedirector.director.failures import Tally
from evolvedirector.loop import heldout, stages, tracking
from evolvedirector.loop.acquire import Proposal, buy_and_select
from evolvedirector.loop.background import BackgroundTrainer
from evolvedirector.loop.console import RoundSummary, progress_bar
from evolvedirector.loop.run_folder import RunFolder
from evolvedirector.loop.stages import Edits
from evolvedirector.loop.teacher_check import check_teachers
from evolvedirector.loop.training import Trained, TrainingThreads, train
from evolvedirector.seeds import seed_for
from evolvedirector.store import ImageStore, Sample, Store
from evolvedirector.teachers import Ledger, Teacher
from evolvedirector.worlds import World

if TYPE_CHECKING:
    from evolvedirector.student import Student
    from evolvedirector.trainer import Trainer


@dataclass
class RoundContext:
    """What a round works with: the run's collaborators, as `Evolution` built them."""

    config: RunConfig
    console: Console
    folder: RunFolder
    store: Store
    images: ImageStore
    ledger: Ledger
    teachers: dict[str, Teacher]
    student: Student
    trainer: Trainer
    threads: TrainingThreads
    world: World
    director: Director
    tracking: tracking.Tracking


async def seed_round(ctx: RoundContext) -> RoundSummary:
    started = time.time()
    rng = random.Random(ctx.config.seed)
    proposals = stages.seed_proposals(ctx.world, ctx.config.evolve.seed_prompts, list(ctx.teachers), rng)
    new_samples = await _buy(ctx, proposals, round=0, rng=rng)
    edits = Edits(new_samples=new_samples, director=stages.round_tally(Tally(), ctx.director.take_tally()))
    validation = stages.measure(ctx.student, ctx.world, ctx.config, ctx.tracking.on)
    validation.judged = await _judge_heldout(ctx, ctx.student, 0)
    return stages.commit(ctx.store, ctx.folder, ctx.tracking, 0, started, edits, validation, None, Trained())


async def run_round(ctx: RoundContext, round: int) -> RoundSummary:
    """The serial round (`evolve.overlap: serial`): train, then choose, judge, decide, propose,
    place, buy, measure and commit."""
    started = time.time()
    rng = random.Random(seed_for(ctx.config.seed, "round", round))
    active = ctx.store.active_samples()
    ctx.director.take_tally()  # from here on, this round's calls only

    trained = train(ctx.trainer, ctx.threads, ctx.console, active, ctx.config.train.steps_per_round,
                    label=f"round {round}", version=ctx.store.last_round())
    edits = await direct(ctx, round, rng, active, ctx.student)
    validation = stages.measure(ctx.student, ctx.world, ctx.config, ctx.tracking.on)
    validation.judged = await _judge_heldout(ctx, ctx.student, round)
    checkpoint = ctx.folder.save_checkpoint(ctx.trainer, round)
    return stages.commit(ctx.store, ctx.folder, ctx.tracking, round, started, edits, validation, checkpoint, trained)


async def overlapped_round(ctx: RoundContext, round: int, training: BackgroundTrainer) -> RoundSummary:
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
    rng = random.Random(seed_for(ctx.config.seed, "round", round))
    active = ctx.store.active_samples()
    ctx.director.take_tally()

    snapshot = await training.snapshot()  # the student after steps_per_round more steps; training goes on
    edits = await direct(ctx, round, rng, active, snapshot)
    captured = await training.capture()  # the trainer's state now is the round's checkpoint
    validation = stages.measure(captured.student, ctx.world, ctx.config, ctx.tracking.on)
    validation.judged = await _judge_heldout(ctx, captured.student, round)
    checkpoint = ctx.folder.save_checkpoint(ctx.trainer, round, state=captured.state)
    summary = stages.commit(ctx.store, ctx.folder, ctx.tracking, round, started, edits, validation, checkpoint,
                            captured.trained)
    training.hand_over(round, ctx.store.active_samples())
    return summary


def start_background(ctx: RoundContext) -> BackgroundTrainer:
    """The trainer in its own thread for the overlapped rounds, on the last committed version."""
    return BackgroundTrainer(ctx.trainer, ctx.student, ctx.config.train.steps_per_round, ctx.store.last_round(),
                             ctx.store.active_samples(), ctx.threads.for_background()).start()


async def direct(ctx: RoundContext, round: int, rng: random.Random, active: list[Sample], student) -> Edits:
    """The director's part of a round: choose, judge, decide, propose, place, buy, with `student`
    drawing what the director judges."""
    evolve = ctx.config.evolve
    guidance = evolve.render_guidance if evolve.render_guidance is not None else ctx.config.student.guidance
    chosen = stages.choose(rng, round, active, ctx.store.unjudged(round - 1), evolve, guidance, student,
                           ctx.images, ctx.folder)
    favourites = stages.favourite_teachers(ctx.store, evolve.expand_with)
    with progress_bar(ctx.console) as progress:  # judging and proposing share one display
        outcomes = await stages.judge(ctx.director, chosen, rng, evolve, progress, round)
        judging = ctx.director.take_tally()
        decided = stages.decide(chosen, outcomes, rng, evolve, list(ctx.teachers), favourites, ctx.images)
        replies = await stages.propose(ctx.director, decided, evolve.extend_num, progress, round)
    drawn = Counter(ctx.world.key(s.prompt) for s in ctx.store.all_samples()) if evolve.redraw else None
    placed = await stages.place(ctx.world, ctx.director, decided.asks, replies, active, rng, evolve.extend_num, drawn)
    new_samples = await _buy(ctx, placed.proposals, round=round, rng=rng)
    return Edits(verdicts=decided.verdicts, deleted=decided.deleted, refusals=placed.refusals,
                 unjudged=decided.unjudged, new_samples=new_samples,
                 director=stages.round_tally(judging, ctx.director.take_tally()))


async def _judge_heldout(ctx: RoundContext, student, round: int) -> heldout.Judged | None:
    """Where the world has no exact rules: the director's judgement of the student on held-out
    prompts (loop/heldout.py), after the round's other director calls are tallied."""
    return await heldout.judge_heldout(
        heldout.judged_prompts(ctx.config, ctx.world), student, round, config=ctx.config, world=ctx.world,
        director=ctx.director, store=ctx.store, ledger=ctx.ledger, teachers=ctx.teachers, images=ctx.images,
        console=ctx.console)


async def _buy(ctx: RoundContext, proposals: list[Proposal], *, round: int, rng: random.Random) -> list:
    """The purchases (loop/acquire.py), then the teachers' check (loop/teacher_check.py), which
    raises TeachersFailed before anything of the round is committed when no teacher answered."""
    new_samples = await buy_and_select(proposals, round=round, rng=rng, size=ctx.world.image_size, ledger=ctx.ledger,
                                       teachers=ctx.teachers, images=ctx.images, director=ctx.director,
                                       console=ctx.console)
    await check_teachers(ctx.ledger, ctx.folder.path, ctx.config.teachers, ctx.console, round, new_samples)
    return new_samples
