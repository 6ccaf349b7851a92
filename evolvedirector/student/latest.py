"""A run's latest trained student: the EMA weights of its newest committed checkpoint, as
`evolvedirector eval` and `export` draw with them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evolvedirector.store import Store

if TYPE_CHECKING:  # the config is a layer above the student: only its shape is named here
    from evolvedirector.config import RunConfig


class NoStudentYet(ValueError):
    """The run has not finished a round after its seed set, so there is no trained student."""


def latest_checkpoint(store: Store) -> dict | None:
    """The newest committed round that saved a checkpoint (its row), or None."""
    return next((r for r in reversed(store.rounds()) if r["checkpoint"]), None)


def load_latest_student(run_dir: Path, config: RunConfig, store: Store):
    """(the run's student with its latest checkpoint's weights, that round's row), drawing on the
    run's device: the EMA transformer and the VAE move there; text features are computed on the
    CPU and moved, as in training."""
    import torch

    from evolvedirector.student import Student  # heavy: only once a student is really needed

    row = latest_checkpoint(store)
    if row is None:
        raise NoStudentYet(f"{run_dir} has no trained student yet (no round after the seed set has finished)")
    student = Student(config.student, config.world.image_size)
    student.load_weights(Path(run_dir) / row["checkpoint"])
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if cuda:
        student.ema_model.to("cuda")
        student.space.to("cuda")
    return student, row
