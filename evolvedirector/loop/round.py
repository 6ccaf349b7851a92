"""One round of the loop, written out: read `run_round` top to bottom.

```
train the student K steps on D_r
S = a random select_ratio of D_r (and those left unjudged last round), rendered by the student
per prompt in S: the director compares student and teacher (random order)
    teacher wins -> expand: extend_num similar prompts (they inherit the parent's category)
    student wins -> delete; with p = mutation_ratio, mutate: one unrelated prompt
    no usable verdict -> nothing (counted by kind; judged again next round)
every proposal goes through the world: accepted, or refused with a reason (kept in the store)
buy teacher images for the new prompts (several teachers: the director picks the best)
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
from typing import TYPE_CHECKING

import numpy as np

from evolvedirector.director import Discrimination, discriminate
from evolvedirector.director.failures import Tally
from evolvedirector.loop.acquire import Proposal, buy_and_select
from evolvedirector.loop.console import RoundSummary, progress_bar
from evolvedirector.store import RefusalRecord, RoundRecord, Sample, VerdictRecord
from evolvedirector.worlds.base import OTHER, Refused

if TYPE_CHECKING:
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
    started = time.time()
    evolve = run.config.evolve
    rng = random.Random(run.config.seed * 1_000_003 + round)
    active = run.store.active_samples()
    run.director.take_tally()  # from here on, this round's calls only

    # 1. Train on the current version of the set.
    loss = run.train_on_set(active, run.config.train.steps_per_round, label=f"round {round}")

    # 2. The director looks at a random share of the set, rendered by the student.
    judged = rng.sample(active, max(1, math.ceil(evolve.select_ratio * len(active))))
    # Those the director could not judge last round are judged again, on top of the random share.
    again = run.store.unjudged(round - 1)
    judged = [s for s in active if s.id in again and s not in judged] + judged
    guidance = evolve.render_guidance if evolve.render_guidance is not None else run.config.student.guidance
    renders = run.student.generate([s.prompt for s in judged], seed=round, steps=evolve.render_steps,
                                   guidance=guidance)
    teacher_images = [run.images.get(s.image_hash) for s in judged]
    run.folder.save_round_grid(round, judged, renders, teacher_images)

    # 3. Discriminate, then delete, expand or mutate; the world accepts or refuses each proposal.
    verdicts: list[VerdictRecord] = []
    deleted: list[int] = []
    proposals: list[Proposal] = []
    refusals: list[RefusalRecord] = []
    unjudged: list[tuple[int, str]] = []  # (sample id, why): no usable verdict
    taken = {run.world.key(s.prompt) for s in active}
    favourites = ({category: max(wins, key=wins.get) for category, wins in run.store.selection_wins().items()}
                  if evolve.expand_with == "best" else {})

    async def propose(text: object, operation: str, parent: Sample, teachers: list[str]) -> None:
        outcome = run.world.accept(text, taken)
        if isinstance(outcome, Refused):
            refusals.append(RefusalRecord(parent.id, operation, outcome.reason, outcome.detail))
            return
        taken.add(run.world.key(outcome.prompt))
        category = outcome.category
        if category is None:  # a free-text prompt: the world cannot place it
            category = (parent.domain if operation == "expand"
                        else await run.director.categorize(outcome.prompt, run.world.categories) or OTHER)
        proposals.append(Proposal(outcome.prompt, operation, category, teachers, parent.id, run.world.bucket(rng)))

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

        # Every verdict in flight at once, so a served director can batch them.
        outcomes = await asyncio.gather(*(judge(*item) for item in zip(judged, renders, teacher_images)))
        judging = run.director.take_tally()
        wins = sum(o.winner == "teacher" for o in outcomes)
        task = progress.add_task(f"round {round}: expand / mutate", total=len(judged), info=f"teacher wins {wins}")
        for sample, render, outcome in zip(judged, renders, outcomes):
            if outcome.winner is None:  # no usable verdict: no action; the sample stays, judged next round
                unjudged.append((sample.id, outcome.failure))
                progress.update(task, advance=1)
                continue
            if outcome.winner == "student":
                action = "delete" if evolve.deletion else "keep"
                if evolve.deletion:
                    deleted.append(sample.id)
                if rng.random() < evolve.mutation_ratio:
                    await propose(await run.director.mutate(sample.prompt), "mutate", sample, list(run.teachers))
            else:
                action = "expand" if evolve.expansion else "keep"
                teachers = run.expansion_teachers(sample, favourites)
                if evolve.expansion:
                    expanded = await run.director.expand(sample.prompt, evolve.extend_num)
                    if not expanded and evolve.extend_num:  # a refusal, or a reply with no prompt in it
                        refusals.append(RefusalRecord(sample.id, "expand", NO_PROMPT, ""))
                    for text in expanded:
                        await propose(text, "expand", sample, teachers)
            verdicts.append(VerdictRecord(
                sample_id=sample.id, student_image=run.images.put(render), teacher_image=sample.image_hash,
                student_shown_first=outcome.student_shown_first, winner=outcome.winner, action=action,
            ))
            progress.update(task, advance=1)

    # 4. Buy teacher images for the new prompts; pick the best where several teachers drew one.
    new_samples = await _buy(run, proposals, round=round, rng=rng)
    director = _round_tally(judging, run.director.take_tally())

    # 5. Evaluate, checkpoint, and commit the new version of the set in one transaction.
    validation = run.render_validation()
    accuracy = run.evaluate(*validation)
    checkpoint = run.folder.save_checkpoint(run.trainer, round)
    run.store.commit_round(RoundRecord(
        round=round, started_at=started, new_samples=new_samples, deleted_ids=deleted, verdicts=verdicts,
        refusals=refusals, director_failures=dict(director.failures), unjudged=unjudged,
        train_step=run.trainer.step, checkpoint=checkpoint, metrics=run.metrics(accuracy, loss),
    ))
    run.folder.point_latest_at(checkpoint)
    run.tracking.log_round(run.store.rounds()[-1], refused=len(refusals), validation=validation)
    return run.summary(round, started, accuracy=accuracy, loss=loss, refused=len(refusals), director=director)


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


def _buy(run: Evolution, proposals: list[Proposal], *, round: int, rng: random.Random):
    return buy_and_select(proposals, round=round, rng=rng, size=run.world.image_size, ledger=run.ledger,
                          teachers=run.teachers, images=run.images, director=run.director, console=run.console)
