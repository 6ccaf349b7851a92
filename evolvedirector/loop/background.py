"""The trainer in a worker thread, for the asynchronous round (`evolve.overlap: async`).

It trains without pause on the newest set version it was handed, while the coordinator (the
event loop's thread: loop/round.py `overlapped_round`) renders, judges, buys and commits; torch
releases the GIL inside its kernels. The coordinator asks for two things, each answered by the
worker at a step boundary, between two optimizer steps:

- `snapshot()`: a copy of the student (its EMA weights) once `steps_per_round` steps have passed
  since the previous snapshot; the round renders what the director judges from it;
- `capture()`: a copy of the whole trainer state, with a student drawing with its EMA: the
  round's checkpoint and held-out renders, and the mean loss and busy seconds since the
  previous capture.

`hand_over(version, samples)` gives it the version a round has just committed; it switches at its
next step boundary. Nothing in it waits for the coordinator: an answer costs a copy of the
weights at a step boundary, a switch the preparation of the new version's batches.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from evolvedirector.loop.training import Trained

STEPS_AT_ONCE = 1 << 40  # train_on_samples runs until a request or a new version stops it


@dataclass
class Captured:
    state: dict  # Trainer.state(copied=True): what the round's checkpoint holds
    student: object  # a Student that draws with the captured EMA weights
    trained: Trained  # the step now; the mean loss, steps and seconds of those since the previous capture


def frozen_copy(student):
    """The student as it is now, for drawing while training goes on: it shares the frozen text
    encoder and image space, and owns a copy of the EMA transformer."""
    frozen = copy.copy(student)
    frozen.ema_model = copy.deepcopy(student.ema_model)
    return frozen


class BackgroundTrainer:
    def __init__(self, trainer, student, steps_per_round: int, version: int, samples: list, threads: int | None):
        self.trainer, self.student, self.steps_per_round, self.threads = trainer, student, steps_per_round, threads
        self._lock = threading.Lock()  # guards what both threads touch: everything below
        self._pending: tuple[int, list] | None = (version, samples)
        self._training: int | None = None  # the version being trained on
        self._last_snapshot = trainer.step
        self._snapshot: Future | None = None
        self._capture: Future | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._losses: list[float] = []
        self._captured_at = (trainer.step, trainer.train_seconds)
        self._thread = threading.Thread(target=self._work, name="trainer", daemon=True)

    # -- the coordinator's side ---------------------------------------------------------------

    def start(self) -> BackgroundTrainer:
        self._thread.start()
        return self

    async def snapshot(self):
        """The student once `steps_per_round` steps have passed since the previous snapshot."""
        return await asyncio.wrap_future(self._ask("_snapshot"))

    async def capture(self) -> Captured:
        """The trainer's state at its next step boundary, copied."""
        return await asyncio.wrap_future(self._ask("_capture"))

    def hand_over(self, version: int, samples: list) -> None:
        """Train on this version from the next step boundary on."""
        with self._lock:
            self._pending = (version, samples)

    def stop(self) -> None:
        """Stop at the next step boundary and wait for the worker to leave."""
        with self._lock:
            self._stopping = True
        if self._thread.is_alive():
            self._thread.join()

    def _ask(self, request: str) -> Future:
        future: Future = Future()
        with self._lock:
            if self._error is not None or not self._thread.is_alive():
                future.set_exception(self._error or RuntimeError("the background trainer has stopped"))
            else:
                setattr(self, request, future)
        return future

    # -- the worker's side --------------------------------------------------------------------

    def _work(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # the count is set per thread
        try:
            while True:
                with self._lock:
                    self._answer()
                    if self._stopping:
                        return
                    if self._pending is not None:
                        (self._training, samples), self._pending = self._pending, None
                self.trainer.train_on_samples(samples, STEPS_AT_ONCE, version=self._training,
                                              on_step=self._losses.append, until=self._due)
        except BaseException as error:  # the coordinator's next await raises it
            with self._lock:
                self._error = error
                for future in (self._snapshot, self._capture):
                    if future is not None and not future.done():
                        future.set_exception(error)
                self._snapshot = self._capture = None

    def _due(self) -> bool:
        with self._lock:
            return (self._stopping or self._pending is not None or self._capture is not None
                    or (self._snapshot is not None and self._snapshot_ready()))

    def _snapshot_ready(self) -> bool:
        return self.trainer.step >= self._last_snapshot + self.steps_per_round

    def _answer(self) -> None:
        """At a step boundary, with the lock held: answer what is asked and due."""
        if self._snapshot is not None and self._snapshot_ready():
            self._last_snapshot = self.trainer.step
            self._snapshot.set_result(frozen_copy(self.student))
            self._snapshot = None
        if self._capture is not None:
            step, seconds = self._captured_at
            losses, self._losses = self._losses, []
            self._captured_at = (self.trainer.step, self.trainer.train_seconds)
            self._capture.set_result(Captured(
                state=self.trainer.state(copied=True), student=frozen_copy(self.student), trained=Trained(
                    step=self.trainer.step, loss=sum(losses) / len(losses) if losses else None,
                    steps=self.trainer.step - step, train_seconds=self.trainer.train_seconds - seconds,
                ),
            ))
            self._capture = None
