"""When the host waits for the device, and how long one training step takes.

The step never waits: its loss stays a device tensor, and `LossReader` reads the losses of
`sync_every` steps at once (on a CPU, where waiting costs nothing, every step; on a GPU every
`SYNC_EVERY_CUDA`), so the GPU runs ahead of Python. `time_step` is the one place that does wait:
it times a step's forward and backward on placeholder data, for the plan's step budget and the
thread count (loop/plan.py, loop/threads.py), without changing what the trainer computes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from evolvedirector.student.student import to_device

SYNC_EVERY_CUDA = 20  # steps between two reads of the loss on a GPU: one host sync per 20 steps


class LossReader:
    """The losses of steps not yet read, left on the device until `every` of them are waiting;
    then one read (one host sync) brings them all, and `on_step` is called for each in step order.
    `total` and `count` sum what has been read, as Python floats in step order (the same sum as
    reading each step's loss at once)."""

    def __init__(self, every: int = 1, on_step: Callable[[float], None] | None = None):
        if every < 1:
            raise ValueError(f"sync_every must be >= 1, got {every}")
        self.every, self.on_step = every, on_step
        self.pending: list[torch.Tensor] = []
        self.total, self.count = 0.0, 0

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).tolist() if len(self.pending) > 1 else [self.pending[0].item()]
        self.pending = []
        for value in values:
            self.total += value
            self.count += 1
            if self.on_step is not None:
                self.on_step(value)


def time_step(trainer, repeats: int = 3, at_least: float = 0.0, step: int | None = None) -> float:
    """Seconds of one step's forward and backward at the run's batch size: the median of
    `repeats` or more, as many as `at_least` seconds take, after one warm-up. On placeholder
    data (empty captions, blank images of the first bucket at the size optimizer step `step`
    trains at, default the next); weights, optimizer, EMA and step count are untouched and the
    gradients dropped, so a run that measures this computes what it would have without."""
    height, width = trainer.training_size(trainer.buckets()[0], step)
    x = torch.zeros(trainer.config.batch_size, trainer.student.channels, *trainer.student.grid_shape(height, width))
    prompts = [""] * len(x)
    was_training = trainer.model.training
    trainer.model.train()
    seconds: list[float] = []
    while len(seconds) < repeats + 1 or (sum(seconds[1:]) < at_least and len(seconds) < 200):
        started = time.perf_counter()
        loss = trainer.student.loss(trainer.model, to_device(x, trainer.device), prompts,
                                    torch.Generator().manual_seed(0), 0.0)
        trainer.accelerator.backward(loss)
        trainer.optimizer.zero_grad(set_to_none=True)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        seconds.append(time.perf_counter() - started)
    trainer.model.train(was_training)
    return statistics.median(seconds[1:])
