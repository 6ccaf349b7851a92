"""The evolution loop: wires a run's collaborators, then runs rounds until a budget is spent.

`Evolution` builds what a round works with (the world, the store and its images, the ledger and
its teachers, the student and its trainer, the director, the run folder, the experiment
trackers) and hands it to the rounds in a `RoundContext`; the round itself is written out in
`loop/round.py`, its stages in `loop/stages.py`.

Crash safety: teacher calls are recorded in the ledger as they happen (never paid twice); the
round's edits, its checkpoint and its metrics become visible together when its row commits. A
run restarted on the same folder resumes after the last committed round (loop/resume.py).

`evolve.overlap` picks the round: `run_round` (serial: train, then the director's work) or
`overlapped_round` (async: a `BackgroundTrainer` trains on in its own thread, started at the
first round after the seed round and stopped when the run stops).

Teachers that cannot be reached: a round in which every teacher asked failed every call, and
nothing was bought, is not committed; the run stops with one line per teacher (`TeachersFailed`,
loop/teacher_check.py) and resumes at that round once they answer. A seed round that bought no
image is not committed either: there would be nothing to train on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from rich.console import Console

from evolvedirector.config import RunConfig
from evolvedirector.director import build_director
from evolvedirector.director.failures import never_answered
from evolvedirector.evaluation.report import write_report
from evolvedirector.loop import plan, run_safety, tracking
from evolvedirector.loop.background import BackgroundTrainer
from evolvedirector.loop.console import RoundSummary, print_round, show_beside_teachers
from evolvedirector.loop.resume import resume
from evolvedirector.loop.round import RoundContext, overlapped_round, run_round, seed_round, start_background
from evolvedirector.loop.run_folder import RunFolder
from evolvedirector.loop.run_lock import RunLock
from evolvedirector.loop.stopping import stop_reason
from evolvedirector.loop.training import TrainingThreads, train
from evolvedirector.seeds import seed_for
from evolvedirector.store import Sample
from evolvedirector.student import Student
from evolvedirector.teachers import Ledger, build_teacher
from evolvedirector.teachers.health import TeachersFailed
from evolvedirector.trainer import Trainer
from evolvedirector.worlds import build_world


class Evolution:
    def __init__(self, config: RunConfig, console: Console | None = None):
        tracking.check_installed(config.log_with)  # before anything is written
        self.config = config
        self.console = console or Console()
        self.folder = RunFolder(Path(config.out))
        self.lock = RunLock(self.folder.path).acquire()  # one writer per run folder, until run() ends
        try:
            self._set_up(config)
        except BaseException:  # the folder is free again for the corrected command (or the next test)
            if hasattr(self, "store"):
                self.store.close()
            self.lock.release()
            raise

    def _set_up(self, config: RunConfig) -> None:
        self.store, self.images = run_safety.open_run_folder(self.folder, config, self.console)
        self.teachers = {t.name: build_teacher(t) for t in config.teachers}
        self.ledger = Ledger.for_run(self.store, self.images, config.budget)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.threads = TrainingThreads(config.threads)
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

    def run(self) -> list[RoundSummary]:
        try:
            return asyncio.run(self._run())
        finally:
            self.lock.release()

    async def _run(self) -> list[RoundSummary]:
        last = self.store.last_round()
        if last is not None:
            await resume(self.folder, self.store, self.trainer, self.ledger, self.teachers, self.console, last)
        self.tracking = tracking.Tracking(self.trainer, self.config, project=self.folder.path.name)
        ctx = RoundContext(self.config, self.console, self.folder, self.store, self.images, self.ledger, self.teachers,
                           self.student, self.trainer, self.threads, self.world, self.director, self.tracking)
        summaries = []
        round = 0 if last is None else last + 1
        estimates: list[float] = []  # the plan's, per round run here: for the time left
        if self._stop_reason(round) is None:
            chosen = self.threads.choose(self.trainer)  # first: the plan is timed with the threads training will use
            line, estimates = plan.first_line(self.config, round, self.world, self.store, self.trainer, self.student)
            self.console.print(line, soft_wrap=True, highlight=False)
            if chosen:
                self.console.print(chosen, highlight=False)
        durations: list[float] = []  # of the training rounds run here, for the time left
        training: BackgroundTrainer | None = None  # the asynchronous round's trainer, once started
        try:
            while (reason := self._stop_reason(round)) is None:
                self.director.reseed(seed_for(self.config.seed, "director", round))
                if round == 0:
                    summary = await seed_round(ctx)
                elif self.config.evolve.overlap == "async":
                    training = training or start_background(ctx)
                    summary = await overlapped_round(ctx, round, training)
                else:
                    summary = await run_round(ctx, round)
                summaries.append(summary)
                if round > 0:
                    durations.append(summary.seconds)
                print_round(self.console, summary, self.world.categories,
                            left=plan.time_left(self.config, round, durations, estimates))
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
        show_beside_teachers(self.console, self.store, self.world, self.config.teachers)
        return summaries

    def _stop_reason(self, round: int) -> str | None:
        return stop_reason(self.config.budget, self.ledger, self.store, self.folder.path, round)

    def train_on_set(self, samples: list[Sample], steps: int, label: str) -> float:
        """`steps` optimizer steps on these samples, with a progress bar; returns the mean loss."""
        return train(self.trainer, self.threads, self.console, samples, steps, label, self.store.last_round()).loss
