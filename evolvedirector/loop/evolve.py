"""The evolution loop: builds a run's parts, then runs rounds until a budget is spent.

`Evolution` owns the collaborators a round works with (the world, the store, the ledger and its
teachers, the student and its trainer, the director, the run folder, the experiment trackers); the
round itself is one function in `loop/round.py`.

Crash safety: teacher calls are recorded in the ledger as they happen (never paid twice); the
round's edits, its checkpoint and its metrics become visible together when its row commits. A
run restarted on the same folder resumes after the last committed round.

`evolve.overlap` picks the round: `run_round` (serial: train, then the director's work) or
`overlapped_round` (async: a `BackgroundTrainer` trains on in its own thread, started at the
first round after the seed round and stopped when the run stops).

Teachers that cannot be reached: a round in which every teacher asked failed every call, and
nothing was bought, is not committed; the run stops with one line per teacher (`TeachersFailed`,
teachers/health.py) and resumes at that round once they answer. A seed round that bought no image
is not committed either: there would be nothing to train on.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from evolvedirector.config import RunConfig
from evolvedirector.director import build_director
from evolvedirector.director.failures import Tally, never_answered
from evolvedirector.evaluation.report import write_report
from evolvedirector.loop import plan, run_safety, threads, tracking
from evolvedirector.loop.background import BackgroundTrainer
from evolvedirector.loop.console import RoundSummary, print_beside_teachers, print_round, progress_bar
from evolvedirector.loop.round import overlapped_round, run_round, seed_round
from evolvedirector.loop.run_folder import RunFolder
from evolvedirector.loop.run_lock import RunLock
from evolvedirector.store import ImageStore, Sample, Store
from evolvedirector.student import Student
from evolvedirector.teachers import Ledger, build_teacher
from evolvedirector.teachers.health import TeachersFailed, describe_failure
from evolvedirector.teachers.ledger import describe_spend
from evolvedirector.trainer import Trainer
from evolvedirector.worlds import build_world


class EmptySet(RuntimeError):
    """A committed set with no sample in it that none ever left: nothing was learned, and there is
    nothing to train on (a round 0 committed by a version that did not refuse an empty seed round)."""


class Evolution:
    def __init__(self, config: RunConfig, console: Console | None = None):
        tracking.check_installed(config.log_with)  # before anything is written
        self.config = config
        self.console = console or Console()
        self.folder = RunFolder(Path(config.out))
        self.lock = RunLock(self.folder.path).acquire()  # one writer per run folder, until run() ends
        self.round_estimates: list[float] = []  # the plan's, per round run here: for the time left
        try:
            self._set_up(config)
        except BaseException:  # the folder is free again for the corrected command (or the next test)
            if hasattr(self, "store"):
                self.store.close()
            self.lock.release()
            raise

    def _set_up(self, config: RunConfig) -> None:
        self.store, self.images = self._open_run_folder()
        self.teachers = {t.name: build_teacher(t) for t in config.teachers}
        self.ledger = Ledger.for_run(self.store, self.images, config.budget)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.available_threads = torch.get_num_threads()  # torch's default: the cores it may use
        self.training_threads: int | None = None  # chosen before each round's training when config.threads is unset
        torch.manual_seed(config.seed)  # the same seed gives the same initial student
        self.student = Student(config.student, config.world.image_size)
        # Text features (and VAE latents at full scale) are cached on disk beside the run.
        self.trainer = Trainer(self.student, config.train, seed=config.seed, device=config.device,
                               cache_dir=self.folder.path / "features", images=self.images,
                               log_with=config.log_with, logging_dir=self.folder.path / tracking.LOGS)
        # The world refuses proposals past the text encoder's token limit, so it counts with its tokenizer.
        self.world = build_world(config, buckets=self.trainer.buckets() if config.train.multi_aspect else (),
                                 text_encoder=self.student.text)
        self.director = build_director(config.director, seed=config.seed, exclude=self.world.heldout)

    # -- the run ------------------------------------------------------------------------------

    def _open_run_folder(self) -> tuple[Store, ImageStore]:
        """Refuse a damaged, foreign or emptied folder, then tidy what a killed run left
        (loop/run_safety.py)."""
        store = None
        try:
            run_safety.check_run_folder(self.folder.path)
            self.folder.save_config(self.config)
            store = Store(self.folder.path / "evolve.db")
            images = ImageStore(self.folder.path / "images")
            run_safety.check_store_needs(self.folder.path, store, images)
        except BaseException:
            if store is not None:
                store.close()
            raise
        for done in run_safety.tidy_leftovers(self.folder, store):
            self.console.print(f"note: {done}", highlight=False)
        return store, images

    def run(self) -> list[RoundSummary]:
        try:
            return asyncio.run(self._run())
        finally:
            self.lock.release()

    async def _run(self) -> list[RoundSummary]:
        last = self.store.last_round()
        if last is not None:
            await self._resume(last)
        self.tracking = tracking.Tracking(self.trainer, self.config, project=self.folder.path.name)
        summaries = []
        round = 0 if last is None else last + 1
        if self._stop_reason(round) is None:
            chosen = self._choose_threads()  # first: the plan is timed with the threads training will use
            self.console.print(self._plan(round), soft_wrap=True, highlight=False)
            if chosen:
                self.console.print(chosen, highlight=False)
        durations: list[float] = []  # of the training rounds run here, for the time left
        training: BackgroundTrainer | None = None  # the asynchronous round's trainer, once started
        try:
            while (reason := self._stop_reason(round)) is None:
                self.director.reseed(self.config.seed * 7919 + round)
                if round == 0:
                    summary = await seed_round(self)
                elif self.config.evolve.overlap == "async":
                    training = training or self._start_background_training()
                    summary = await overlapped_round(self, round, training)
                else:
                    summary = await run_round(self, round)
                summaries.append(summary)
                if round > 0:
                    durations.append(summary.seconds)
                print_round(self.console, summary, self.world.categories,
                            left=plan.time_left(self.config, round, durations, self.round_estimates))
                write_report(self.store, self.folder.path)
                if summary.director.failed_every_call():  # committed and shown; then stop with one line
                    await self.director.aclose()
                    raise never_answered(self.director.where(), f"round {round}", summary.director)
                round += 1
        except TeachersFailed:  # the round was not committed
            await self.director.aclose()
            raise
        finally:
            if training is not None:
                training.stop()
        await self.director.aclose()
        self.tracking.end()
        self.console.print(f"[bold]stopped[/bold]: {reason}. Run folder: {self.folder.path}", soft_wrap=True)
        self._show_beside_teachers()
        return summaries

    def _show_beside_teachers(self) -> None:
        """In a graded world, the last round's held-out accuracy beside each teacher's own."""
        graded = [r for r in self.store.rounds() if r["metrics"].get("accuracy")]
        if not self.world.graded or not graded:
            return
        per_category = len(self.world.heldout) // max(1, len(self.world.categories))
        print_beside_teachers(self.console, graded[-1]["metrics"]["accuracy"],
                              self.world.teachers_own(self.config.teachers), self.world.categories,
                              per_category, graded[-1]["round"])

    def _plan(self, round: int) -> str:
        heldout = len(self.world.heldout) if self.world.graded else 0
        set_size = len(self.store.active_samples()) or self.config.evolve.seed_prompts
        measured = plan.measure(self.trainer, self.student, prompts=max(heldout, 1))
        self.round_estimates = plan.round_estimates(self.config, round, measured, set_size, heldout)
        return plan.plan_line(self.config, round, measured, set_size, heldout)

    def _stop_reason(self, round: int) -> str | None:
        budget = self.config.budget
        if round == 0:
            return None
        if budget.max_rounds is not None and round > budget.max_rounds:
            return f"max_rounds={budget.max_rounds} reached"
        if self.ledger.exhausted:
            return "teacher budget spent"
        if not self.store.active_samples():
            if not self.store.count_samples():
                raise self._empty_set()
            # Samples leave the set only when the director judged the student's image as good.
            return "the student has learned the whole set"
        rounds = self.store.rounds()
        if budget.max_minutes is not None and len(rounds) > 1:
            durations = [r["committed_at"] - r["started_at"] for r in rounds]
            # Start another round only if one as long as the last still fits.
            if sum(durations) + durations[-1] > budget.max_minutes * 60:
                return f"max_minutes={budget.max_minutes:g} would be passed by another round"
        return None

    def _empty_set(self) -> EmptySet:
        failed = sum(row["failed"] or 0 for row in self.store.spend_by_teacher())
        faults = "; ".join(f"{teacher} " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
                           for teacher, kinds in self.store.fault_counts().items()) or "none counted"
        return EmptySet(
            f"the set of {self.folder.path} is empty: round 0 was committed without a teacher image ({failed} "
            f"teacher calls failed; faults: {faults}), and a committed round is not bought again; once the teachers "
            "answer, start the run again with another `out` folder")

    async def check_teachers(self, round: int, new_samples: list) -> None:
        """After a round's purchases: name each teacher that failed them; when every teacher asked
        failed every call and nothing was bought (or the seed round bought nothing at all), raise
        TeachersFailed before the round can be committed, its failures forgotten by the ledger so
        that the round run again buys them."""
        asked = self.ledger.round_health(round)
        failing = [health for health in asked if health.failed_every_call() or health.given_up]
        every = bool(failing) and all(health.failed_every_call() for health in asked)
        if (every and not new_samples) or (round == 0 and not new_samples):
            await self.ledger.forget_failures(round, [health.teacher for health in failing])
            # Once anything was bought or trained, the run folder's config.yaml is what a run reads.
            saved = self.folder.path / "config.yaml" if run_safety.check_store_file(self.folder.path) else None
            lines = [self._describe(health, saved, "then run the same command again to resume") for health in failing]
            raise TeachersFailed(lines or [self._nothing_bought(asked)])
        for health in failing:
            self.console.print(f"note: {self._describe(health, None, f'round {round} goes on with the others')}",
                               highlight=False, soft_wrap=True)

    def _describe(self, health, saved, then: str) -> str:
        index = next(i for i, t in enumerate(self.config.teachers) if t.name == health.teacher)
        return describe_failure(health, self.config.teachers[index], index, resumed_config=saved, then=then)

    def _nothing_bought(self, asked) -> str:
        """Why a seed round bought nothing although no teacher failed outright."""
        if self.ledger.exhausted:
            why = "the budget (budget.max_teacher_calls, budget.max_dollars) allows no image"
        elif asked:
            why = "; ".join(f"teacher {h.teacher} answered {h.made} calls with no image ({h.answered_no} refused "
                            f"or failed jobs; last: {h.last_error or '-'})" for h in asked)
        else:
            why = "no seed prompt was asked for"
        return (f"round 0 bought no teacher image, so there is nothing to train on and it is not committed: {why}; "
                "fix that, then run the same command again")

    async def _resume(self, last: int) -> None:
        checkpoint = self.store.rounds()[-1]["checkpoint"]
        if checkpoint is not None:
            self.trainer.load(self.folder.path / checkpoint)
        settled = await self.ledger.settle_pending(self.teachers)
        if settled:
            self.console.print(f"finished {settled} teacher calls left pending by the interrupted run")
        self.console.print(
            f"resuming {self.folder.path} after round {last}: {len(self.store.active_samples())} samples, "
            f"step {self.trainer.step}, {self.store.spend()[0]} teacher calls, {describe_spend(self.store)}"
        )

    # -- what a round asks of the run ------------------------------------------------------------

    def train_on_set(self, samples: list[Sample], steps: int, label: str) -> float:
        """`steps` optimizer steps on these samples, with a progress bar; returns the mean loss."""
        if chosen := self._choose_threads():
            self.console.print(chosen, highlight=False)
        with progress_bar(self.console) as progress:
            task = progress.add_task(f"{label}: training", total=steps, info="")
            recent: list[float] = []

            def on_step(loss: float) -> None:
                recent.append(loss)
                progress.update(task, advance=1, info=f"loss {np.mean(recent[-20:]):.4f}")

            return self.trainer.train_on_samples(samples, steps, version=self.store.last_round(), on_step=on_step)

    def _start_background_training(self) -> BackgroundTrainer:
        """The trainer in its own thread, on the last committed version, with the thread count
        chosen now (the count is not chosen again while it trains)."""
        threads = self.config.threads or self.training_threads or torch.get_num_threads()
        return BackgroundTrainer(self.trainer, self.student, self.config.train.steps_per_round,
                                 self.store.last_round(), self.store.active_samples(), threads).start()

    def _choose_threads(self) -> str | None:
        """With `threads` unset on a CPU: train with the thread count fastest now (loop/threads.py).
        Returns the line saying so when the count changes."""
        if self.config.threads is not None or self.trainer.device.type != "cpu" or self.available_threads < 2:
            return None
        chosen, timings = threads.choose_threads(self.trainer, self.available_threads)
        changed, self.training_threads = chosen != self.training_threads, chosen
        return threads.describe(chosen, timings) if changed else None

    def expansion_teachers(self, parent: Sample, favourites: dict[str, str]) -> list[str]:
        """Who draws the prompts expanded from `parent` (`evolve.expand_with`)."""
        mode = self.config.evolve.expand_with
        if mode == "all":
            return list(self.teachers)
        if mode == "best" and parent.domain in favourites:
            # The parent's own teacher may have been chosen on a tie-break between two correct
            # images; the category's most selected teacher is the better guess for new prompts.
            return [favourites[parent.domain]]
        return [parent.teacher]

    def render_validation(self, student: Student | None = None) -> tuple[list[str], list[np.ndarray]]:
        """The validation prompts drawn by the student (or a snapshot of it) at the run's seed, once
        a round: every held-out prompt where the world grades them, else the first few when a
        tracker shows them; none when neither wants them."""
        student = student or self.student
        if self.config.evolve.evaluate_every_round and self.world.graded:
            prompts = list(self.world.heldout)
        elif self.tracking.on:
            prompts = list(self.world.heldout[:tracking.UNGRADED_PROMPTS])
        else:
            return [], []
        return prompts, student.generate(prompts, seed=self.config.seed)

    def evaluate(self, prompts: list[str], renders: list[np.ndarray]) -> dict[str, float]:
        """Held-out accuracy of `render_validation`'s images where the world grades exactly (the shapes
        world); {} elsewhere."""
        if not self.config.evolve.evaluate_every_round or not self.world.graded:
            return {}
        return self.world.grade(prompts, renders)

    def metrics(self, accuracy: dict, loss: float | None) -> dict:
        calls, dollars = self.store.spend()
        return {"accuracy": accuracy, "loss": loss, "calls": calls, "dollars": dollars}

    def summary(self, round: int, started: float, accuracy: dict, loss: float | None = None,
                refused: int = 0, director: Tally | None = None, steps: int = 0,
                train_seconds: float = 0.0) -> RoundSummary:
        row = self.store.rounds()[-1]
        calls, dollars = self.store.spend()
        return RoundSummary(
            round=round, set_size=row["set_size"], judged=row["judged"], teacher_wins=row["teacher_wins"],
            added=row["added"], deleted=row["deleted"], mutated=row["mutated"], refused=refused, calls=calls,
            dollars=dollars, seconds=time.time() - started, accuracy=accuracy, loss=loss, director=director or Tally(),
            steps=steps, train_seconds=train_seconds,
        )
