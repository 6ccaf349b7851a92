"""Training the student on a version of the set, with a progress bar, and the CPU thread count it
trains with (chosen again before each round's training when `threads` is unset: loop/threads.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console

from evolvedirector.loop import threads
from evolvedirector.loop.console import progress_bar
from evolvedirector.store import Sample


@dataclass
class Trained:
    """What a round's training left: the trainer's step, and the mean loss, steps and busy seconds
    of the steps trained for it (none for the seed round)."""

    step: int = 0
    loss: float | None = None
    steps: int = 0
    train_seconds: float = 0.0


class TrainingThreads:
    """The thread count training uses: `threads` when set; else, on a CPU with two cores or more,
    the count fastest now (timed again before each round's training)."""

    def __init__(self, configured: int | None):
        self.configured = configured
        self.available = torch.get_num_threads()  # torch's default (or `threads`): the cores it may use
        self.chosen: int | None = None

    def choose(self, trainer) -> str | None:
        """Set torch to the fastest count; returns the line saying so when the count changes."""
        if self.configured is not None or trainer.device.type != "cpu" or self.available < 2:
            return None
        chosen, timings = threads.choose_threads(trainer, self.available)
        changed, self.chosen = chosen != self.chosen, chosen
        return threads.describe(chosen, timings) if changed else None

    def for_background(self) -> int:
        """The count a trainer in its own thread uses (chosen once: it is not timed again while it trains)."""
        return self.configured or self.chosen or torch.get_num_threads()


def train(trainer, thread_count: TrainingThreads, console: Console, samples: list[Sample], steps: int, label: str,
          version: int | None) -> Trained:
    """`steps` optimizer steps on these samples (set version `version`), with a progress bar."""
    step, seconds = trainer.step, trainer.train_seconds
    if chosen := thread_count.choose(trainer):
        console.print(chosen, highlight=False)
    with progress_bar(console) as progress:
        task = progress.add_task(f"{label}: training", total=steps, info="")
        recent: list[float] = []

        def on_step(loss: float) -> None:
            recent.append(loss)
            progress.update(task, advance=1, info=f"loss {np.mean(recent[-20:]):.4f}")

        loss = trainer.train_on_samples(samples, steps, version=version, on_step=on_step)
    return Trained(trainer.step, loss, trainer.step - step, trainer.train_seconds - seconds)
