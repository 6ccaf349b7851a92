"""The evolution loop: train, judge, edit the set, commit. Read `run_round` top to bottom.

```
seed prompts --teachers--> D_0
repeat until a budget is spent:
  train the student K steps on D_r
  S = a random select_ratio of D_r, rendered by the student
  per prompt in S: director compares student and teacher (random order)
      teacher wins -> expand: extend_num similar prompts
      student wins -> delete; with p = mutation_ratio, mutate: one unrelated prompt
  buy teacher images for the new prompts (several teachers: the director picks the best)
  commit D_{r+1}, every verdict and its lineage, in one transaction
```

Crash safety: teacher calls are recorded in the ledger as they happen (never paid twice); the
round's edits, its checkpoint and its metrics become visible together when its row commits. A
run restarted on the same folder resumes after the last committed round.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evolvedirector.config import RunConfig, dump_config
from evolvedirector.director import Discrimination, build_director, discriminate, select_best
from evolvedirector.evaluation.heldout import evaluate_student
from evolvedirector.evaluation.report import write_report
from evolvedirector.store import ImageStore, NewSample, RoundRecord, Sample, Store, VerdictRecord, write_atomic
from evolvedirector.store.images import png_bytes
from evolvedirector.student import Student
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher
from evolvedirector.trainer import Trainer
from evolvedirector.world import grammar
from evolvedirector.world.heldout import heldout_prompts

TEACHER_SEED = 0  # one teacher image per (teacher, prompt): a prompt seen again is never re-bought
CANONICAL_PROMPTS = {p.lower(): p for p in grammar.all_prompts()}  # no two prompts differ only in case


@dataclass
class Proposal:
    """A prompt the round wants to add, before its teacher images are bought."""

    prompt: str
    operation: str
    teacher_names: list[str]
    parent_id: int | None = None


@dataclass
class RoundSummary:
    round: int
    set_size: int
    judged: int = 0
    teacher_wins: int = 0
    added: int = 0
    deleted: int = 0
    mutated: int = 0
    calls: int = 0
    dollars: float = 0.0
    seconds: float = 0.0
    accuracy: dict = field(default_factory=dict)
    loss: float | None = None


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"), console=console, transient=True,
        disable=not console.is_terminal,  # a log file gets the round lines, not bar redraws
    )


class Evolution:
    def __init__(self, config: RunConfig, console: Console | None = None):
        self.config = config
        self.console = console or Console()
        self.run_dir = Path(config.out)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.run_dir / "config.yaml", dump_config(config).encode())
        self.store = Store(self.run_dir / "evolve.db")
        self.images = ImageStore(self.run_dir / "images")
        self.teachers = {t.name: build_teacher(t) for t in config.teachers}
        self.heldout = heldout_prompts(config.world.heldout_per_domain, config.world.heldout_seed)
        self.ledger = Ledger(
            self.store, self.images, max_calls=config.budget.max_teacher_calls, max_dollars=config.budget.max_dollars
        )
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # the same seed gives the same initial student
        self.student = Student(config.student, config.world.image_size)
        # Text features (and VAE latents at full scale) are cached on disk beside the run.
        self.trainer = Trainer(self.student, config.train, seed=config.seed, device=config.device,
                               cache_dir=self.run_dir / "features", images=self.images)
        self.director = build_director(config.director, seed=config.seed, exclude=self.heldout)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> list[RoundSummary]:
        return asyncio.run(self._run())

    async def _run(self) -> list[RoundSummary]:
        last = self.store.last_round()
        if last is not None:
            await self._resume(last)
        summaries = []
        round = 0 if last is None else last + 1
        while (reason := self._stop_reason(round)) is None:
            self.director.reseed(self.config.seed * 7919 + round)
            summary = await (self.seed_round() if round == 0 else self.run_round(round))
            summaries.append(summary)
            self._print_round(summary)
            write_report(self.store, self.run_dir)
            round += 1
        await self.director.aclose()
        self.console.print(f"[bold]stopped[/bold]: {reason}. Run folder: {self.run_dir}", soft_wrap=True)
        return summaries

    def _stop_reason(self, round: int) -> str | None:
        budget = self.config.budget
        if round == 0:
            return None
        if budget.max_rounds is not None and round > budget.max_rounds:
            return f"max_rounds={budget.max_rounds} reached"
        if self.ledger.exhausted:
            return "teacher budget spent"
        if not self.store.active_samples():
            return "the student has learned the whole set"
        rounds = self.store.rounds()
        if budget.max_minutes is not None and len(rounds) > 1:
            durations = [r["committed_at"] - r["started_at"] for r in rounds]
            # Start another round only if one as long as the last still fits.
            if sum(durations) + durations[-1] > budget.max_minutes * 60:
                return f"max_minutes={budget.max_minutes:g} would be passed by another round"
        return None

    async def _resume(self, last: int) -> None:
        rounds = self.store.rounds()
        checkpoint = rounds[-1]["checkpoint"]
        if checkpoint is not None:
            self.trainer.load(self.run_dir / checkpoint)
        settled = await self.ledger.settle_pending(self.teachers)
        if settled:
            self.console.print(f"finished {settled} teacher calls left pending by the interrupted run")
        calls, dollars = self.store.spend()
        self.console.print(
            f"resuming {self.run_dir} after round {last}: {len(self.store.active_samples())} samples, "
            f"step {self.trainer.step}, {calls} teacher calls, ${dollars:.2f}"
        )

    # -- round 0: the seed set ----------------------------------------------------------------

    async def seed_round(self) -> RoundSummary:
        started = time.time()
        rng = random.Random(self.config.seed)
        exclude = set(self.heldout)
        prompts: list[str] = []
        # The world has 1272 prompts; a larger seed set than the non-held-out ones cannot exist.
        wanted = min(self.config.evolve.seed_prompts, len(grammar.all_prompts()) - len(exclude))
        while len(prompts) < wanted:
            prompt = grammar.random_prompt(rng, exclude=exclude)
            exclude.add(prompt)
            prompts.append(prompt)
        proposals = [Proposal(p, "seed", list(self.teachers)) for p in prompts]
        new_samples = await self._acquire(proposals, round=0, rng=rng)
        accuracy = self._evaluate()
        record = RoundRecord(round=0, started_at=started, new_samples=new_samples,
                             metrics=self._metrics(accuracy, loss=None))
        self.store.commit_round(record)
        return self._summary(0, started, accuracy=accuracy)

    # -- round r >= 1 -------------------------------------------------------------------------

    async def run_round(self, round: int) -> RoundSummary:
        started = time.time()
        evolve = self.config.evolve
        rng = random.Random(self.config.seed * 1_000_003 + round)
        active = self.store.active_samples()

        # 1. Train on the current version of the set.
        loss = self.train_on_set(active, self.config.train.steps_per_round, label=f"round {round}")

        # 2. The director looks at a random share of the set, rendered by the student.
        judged = rng.sample(active, max(1, math.ceil(evolve.select_ratio * len(active))))
        guidance = evolve.render_guidance if evolve.render_guidance is not None else self.config.student.guidance
        renders = self.student.generate(
            [s.prompt for s in judged], seed=round, steps=evolve.render_steps, guidance=guidance
        )
        teacher_images = [self.images.get(s.image_hash) for s in judged]
        self._save_round_grid(round, judged, renders, teacher_images)

        # 3. Discriminate, then delete, expand or mutate.
        verdicts: list[VerdictRecord] = []
        deleted: list[int] = []
        proposals: list[Proposal] = []
        taken = {s.prompt for s in active} | set(self.heldout)
        favourites = ({domain: max(wins, key=wins.get) for domain, wins in self.store.selection_wins().items()}
                      if evolve.expand_with == "best" else {})
        with progress_bar(self.console) as progress:
            task = progress.add_task(f"round {round}: director", total=len(judged), info="")

            async def judge(sample: Sample, render: np.ndarray, teacher_image: np.ndarray) -> Discrimination:
                if evolve.discrimination == "director":
                    outcome = await discriminate(self.director, sample.prompt, render, teacher_image, rng)
                else:  # ablation: the same operations, driven by a coin instead of the director
                    won = rng.random() < evolve.random_student_win_rate
                    outcome = Discrimination("student" if won else "teacher", student_shown_first=True)
                progress.update(task, advance=1)
                return outcome

            # Every verdict in flight at once, so a served director can batch them.
            outcomes = await asyncio.gather(*(judge(*item) for item in zip(judged, renders, teacher_images)))
            wins = sum(o.winner == "teacher" for o in outcomes)
            task = progress.add_task(f"round {round}: expand / mutate", total=len(judged),
                                     info=f"teacher wins {wins}")
            for sample, render, outcome in zip(judged, renders, outcomes):
                if outcome.winner == "student":
                    action = "delete" if evolve.deletion else "keep"
                    if evolve.deletion:
                        deleted.append(sample.id)
                    if rng.random() < evolve.mutation_ratio:
                        if prompt := self._accept(await self.director.mutate(sample.prompt), taken):
                            proposals.append(Proposal(prompt, "mutate", list(self.teachers), sample.id))
                else:
                    action = "expand" if evolve.expansion else "keep"
                    teachers = self._expansion_teachers(sample, favourites)
                    if evolve.expansion:
                        for proposed in await self.director.expand(sample.prompt, evolve.extend_num):
                            if prompt := self._accept(proposed, taken):
                                proposals.append(Proposal(prompt, "expand", teachers, sample.id))
                verdicts.append(VerdictRecord(
                    sample_id=sample.id, student_image=self.images.put(render), teacher_image=sample.image_hash,
                    student_shown_first=outcome.student_shown_first, winner=outcome.winner, action=action,
                ))
                progress.update(task, advance=1)

        # 4. Buy teacher images for the new prompts; pick the best where several teachers drew one.
        new_samples = await self._acquire(proposals, round=round, rng=rng)

        # 5. Evaluate, checkpoint, and commit the new version of the set in one transaction.
        accuracy = self._evaluate()
        checkpoint = self._save_checkpoint(round)
        self.store.commit_round(RoundRecord(
            round=round, started_at=started, new_samples=new_samples, deleted_ids=deleted, verdicts=verdicts,
            train_step=self.trainer.step, checkpoint=checkpoint, metrics=self._metrics(accuracy, loss),
        ))
        write_atomic(self.run_dir / "checkpoints" / "latest", (checkpoint + "\n").encode())
        self._prune_checkpoints(keep=checkpoint)
        return self._summary(round, started, accuracy=accuracy, loss=loss)

    # -- the pieces ---------------------------------------------------------------------------

    def _expansion_teachers(self, parent: Sample, favourites: dict[str, str]) -> list[str]:
        """Who draws the prompts expanded from `parent` (`evolve.expand_with`)."""
        mode = self.config.evolve.expand_with
        if mode == "all":
            return list(self.teachers)
        if mode == "best" and parent.domain in favourites:
            # The parent's own teacher may have been chosen on a tie-break between two correct
            # images; the domain's most selected teacher is the better guess for new prompts.
            return [favourites[parent.domain]]
        return [parent.teacher]

    @staticmethod
    def _accept(proposed: str, taken: set[str]) -> str | None:
        """A director's prompt is data: keep it only if it is a valid prompt of the world, not yet
        in the set. Case, outer spaces and a final period are forgiven ("A red circle on the left.")."""
        if not isinstance(proposed, str) or len(proposed) > 200:
            return None
        prompt = CANONICAL_PROMPTS.get(" ".join(proposed.strip().rstrip(".").split()).lower())
        if prompt is None or prompt in taken:
            return None
        taken.add(prompt)
        return prompt

    async def _acquire(self, proposals: list[Proposal], round: int, rng: random.Random) -> list[NewSample]:
        if not proposals:
            return []
        size = self.config.world.image_size
        with progress_bar(self.console) as progress:
            task = progress.add_task(f"round {round}: teachers", total=len(proposals), info="")

            async def buy_all(proposal: Proposal) -> list:
                request = ImageRequest(proposal.prompt, TEACHER_SEED, size)
                bought = await asyncio.gather(*(
                    self.ledger.buy(self.teachers[name], [request], round) for name in proposal.teacher_names
                ))
                progress.update(task, advance=1)
                return [purchase for [purchase] in bought if purchase.image_hash is not None]

            # All calls in flight at once; the ledger bounds the concurrency and the budget.
            purchases = await asyncio.gather(*(buy_all(p) for p in proposals))
            task = progress.add_task(f"round {round}: selection", total=len(proposals), info="")
            new_samples = []
            for proposal, bought in zip(proposals, purchases):
                progress.update(task, advance=1)
                if not bought:
                    continue  # budget spent before this prompt could be bought
                chosen = bought[0]
                if len(bought) > 1:
                    images = [self.images.get(p.image_hash) for p in bought]
                    chosen = bought[await select_best(self.director, proposal.prompt, images, rng)]
                new_samples.append(NewSample(
                    prompt=proposal.prompt, domain=grammar.parse(proposal.prompt).domain,
                    operation=proposal.operation, teacher=chosen.teacher, image_hash=chosen.image_hash,
                    parent_id=proposal.parent_id,
                    candidates=[(p.teacher, p.image_hash) for p in bought] if len(bought) > 1 else [],
                ))
        return new_samples

    def train_on_set(self, samples: list[Sample], steps: int, label: str) -> float:
        """`steps` optimizer steps on these samples, with a progress bar; returns the mean loss."""
        with progress_bar(self.console) as progress:
            task = progress.add_task(f"{label}: training", total=steps, info="")
            recent: list[float] = []

            def on_step(loss: float) -> None:
                recent.append(loss)
                progress.update(task, advance=1, info=f"loss {np.mean(recent[-20:]):.4f}")

            return self.trainer.train_on_samples(samples, steps, version=self.store.last_round(), on_step=on_step)

    def _metrics(self, accuracy: dict, loss: float | None) -> dict:
        calls, dollars = self.store.spend()
        return {"accuracy": accuracy, "loss": loss, "calls": calls, "dollars": dollars}

    def _evaluate(self) -> dict[str, float]:
        if not self.config.evolve.evaluate_every_round:
            return {}
        return evaluate_student(self.student, self.heldout, seed=self.config.seed)

    def _save_checkpoint(self, round: int) -> str:
        """Write the checkpoint to a temporary folder, then rename: no half-written checkpoints."""
        relative = f"checkpoints/round-{round:04d}"
        final = self.run_dir / relative
        tmp = self.run_dir / "checkpoints" / f".tmp-round-{round:04d}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.trainer.save(tmp)
        shutil.rmtree(final, ignore_errors=True)  # left by a crash between save and commit
        tmp.rename(final)
        return relative

    def _prune_checkpoints(self, keep: str) -> None:
        for folder in (self.run_dir / "checkpoints").glob("round-*"):
            if f"checkpoints/{folder.name}" != keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _save_round_grid(self, round: int, samples: list[Sample], renders, teacher_images) -> None:
        """rounds/R/judged.png: what the director saw, student on top, teacher below, per column."""
        columns = min(len(samples), 32)
        top = np.concatenate(renders[:columns], axis=1)
        bottom = np.concatenate(teacher_images[:columns], axis=1)
        folder = self.run_dir / "rounds" / f"{round:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "judged.png", png_bytes(np.concatenate([top, bottom], axis=0)))
        lines = [f"{i}\t{s.id}\t{s.teacher}\t{s.prompt}" for i, s in enumerate(samples[:columns])]
        write_atomic(folder / "judged.tsv", ("column\tsample\tteacher\tprompt\n" + "\n".join(lines) + "\n").encode())

    def _summary(self, round: int, started: float, accuracy: dict, loss: float | None = None) -> RoundSummary:
        row = self.store.rounds()[-1]
        calls, dollars = self.store.spend()
        return RoundSummary(
            round=round, set_size=row["set_size"], judged=row["judged"], teacher_wins=row["teacher_wins"],
            added=row["added"], deleted=row["deleted"], mutated=row["mutated"], calls=calls, dollars=dollars,
            seconds=time.time() - started, accuracy=accuracy, loss=loss,
        )

    def _print_round(self, s: RoundSummary) -> None:
        win = f"{s.teacher_wins / s.judged:.2f}" if s.judged else "  - "
        acc = " ".join(f"{d} {s.accuracy.get(d, 0):.2f}" for d in grammar.DOMAINS)
        self.console.print(
            f"round {s.round:>3} | set {s.set_size:>4} | teacher-win {win} | +{s.added} -{s.deleted} "
            f"(mutated {s.mutated}) | calls {s.calls} ${s.dollars:.2f} | held-out {acc} "
            f"mean {s.accuracy.get('mean', 0):.2f} | {s.seconds:.0f}s",
            soft_wrap=True, highlight=False,
        )
