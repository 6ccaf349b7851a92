"""The run folder's files besides the store: the resolved config, checkpoints and round grids.

```
runs/NAME/config.yaml            the resolved configuration (no secrets are part of it)
runs/NAME/checkpoints/round-R/   the student after round R; `checkpoints/latest` names it
runs/NAME/rounds/R/judged.png    what the director saw: student renders over teacher images
```

A checkpoint is written to a temporary folder and renamed, so none is ever half-written; the
round's row in the store is what makes it the run's (a crash between the two leaves a folder
that the next save of that round replaces).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from evolvedirector.config import RunConfig, dump_config, load_config
from evolvedirector.store import Sample, Store, write_atomic
from evolvedirector.store.durable import fsync_tree, rename_durably
from evolvedirector.store.images import png_bytes


class NoStudentYet(ValueError):
    """The run has not finished a round after its seed set, so there is no trained student."""


class RunFolderError(ValueError):
    """A run folder that must not be written: in use, damaged, foreign or emptied (one line, naming
    the file and what to do)."""


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    def save_config(self, config: RunConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / "config.yaml", dump_config(config).encode())

    def load_config(self) -> RunConfig:
        return load_config(self.path / "config.yaml", overrides={"out": str(self.path)})

    def save_checkpoint(self, trainer, round: int, state: dict | None = None) -> str:
        """The trainer's state (now, or a `Trainer.state()` taken earlier) as
        checkpoints/round-RRRR; returns that path, relative to the run."""
        relative = f"checkpoints/round-{round:04d}"
        final = self.path / relative
        tmp = self.path / "checkpoints" / f".tmp-round-{round:04d}"
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.save(tmp, state)
        shutil.rmtree(final, ignore_errors=True)  # left by a crash between save and commit
        fsync_tree(tmp)  # torch and safetensors do not fsync: a power cut could commit empty files
        rename_durably(tmp, final)
        return relative

    def point_latest_at(self, checkpoint: str) -> None:
        """After the round's commit: `latest` names it, and older checkpoints go."""
        write_atomic(self.path / "checkpoints" / "latest", (checkpoint + "\n").encode())
        for folder in (self.path / "checkpoints").glob("round-*"):
            if f"checkpoints/{folder.name}" != checkpoint:
                shutil.rmtree(folder, ignore_errors=True)

    def save_round_grid(self, round: int, samples: list[Sample], renders, teacher_images) -> None:
        """rounds/R/judged.png: what the director saw, student on top, teacher below, per column."""
        columns = min(len(samples), 32)
        side = renders[0].shape[0]
        # Teacher images of other aspect buckets are squeezed to the renders' square for the grid.
        bottom_images = [_fit_square(image, side) for image in teacher_images[:columns]]
        grid = np.concatenate([np.concatenate(renders[:columns], axis=1), np.concatenate(bottom_images, axis=1)])
        folder = self.path / "rounds" / f"{round:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "judged.png", png_bytes(grid))
        lines = [f"{i}\t{s.id}\t{s.teacher}\t{s.prompt}" for i, s in enumerate(samples[:columns])]
        write_atomic(folder / "judged.tsv", ("column\tsample\tteacher\tprompt\n" + "\n".join(lines) + "\n").encode())


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


def _fit_square(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[:2] == (side, side):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((side, side)), dtype=np.uint8)
