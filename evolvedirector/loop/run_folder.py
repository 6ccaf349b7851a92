"""The run folder's files besides the store: the resolved config, checkpoints and round grids.

```
runs/NAME/config.yaml            the resolved configuration (no secrets are part of it)
runs/NAME/checkpoints/round-R/   the student after round R; `checkpoints/latest` names it
runs/NAME/rounds/R/judged.png    what the director saw: student renders over teacher images
```

A checkpoint is written to a temporary folder and renamed (trainer/checkpoint.py, published by
store/folders.py), so none is ever half-written; the round's row in the store is what makes it
the run's (a crash between the two leaves a folder that the next save of that round replaces).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evolvedirector.config import RunConfig, dump_config, load_config
from evolvedirector.store import Sample, write_atomic
from evolvedirector.store.folders import point_latest
from evolvedirector.store.images import png_bytes


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
        """The trainer's state (now, or a `Trainer.state()` taken earlier) published as
        checkpoints/round-RRRR, replacing one a crash left before its round committed; returns
        that path, relative to the run."""
        from evolvedirector.trainer import checkpoint  # torch: only when a run really trains

        relative = f"checkpoints/round-{round:04d}"
        checkpoint.save(trainer, self.path / relative, state)
        return relative

    def point_latest_at(self, checkpoint: str) -> None:
        """After the round's commit: `latest` names it, and older checkpoints go."""
        older = [folder for folder in (self.path / "checkpoints").glob("round-*")
                 if f"checkpoints/{folder.name}" != checkpoint]
        point_latest(self.path / "checkpoints" / "latest", checkpoint, older)

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


def _fit_square(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[:2] == (side, side):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((side, side)), dtype=np.uint8)
