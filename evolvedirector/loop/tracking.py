"""Experiment trackers through accelerate, as `log_with` in the config names them: TensorBoard
event files under RUN/logs/PROJECT (offline), or W&B and the other trackers accelerate knows,
which log where their own settings say. Nothing is logged when `log_with` is empty.

The trainer logs each step's loss and learning rate (trainer.py); here the trackers are started
with the run's config (the dump saved as config.yaml, which holds no secrets), and each committed
round's row is logged at the round's last training step (0 for the seed round; in the
asynchronous loop, whose trainer trains on meanwhile, at the latest step logged if that is
later): set size, teacher-win rate, operations, refused proposals, teacher calls and spend, mean
loss, held-out accuracy (or, where the world has no exact rules, the director's held-out figures
with their intervals, loop/heldout.py), and a grid of the validation prompts drawn at the run's
seed. Steps are the trainer's global step, so they keep rising across rounds and resumes; a
resumed run's TensorBoard writer hides what a crash left past the last committed round
(`purge_step`).
"""

from __future__ import annotations

import json
from importlib.util import find_spec

import numpy as np

from evolvedirector.config import RunConfig, dump_config

LOGS = "logs"  # RUN/logs: where trackers that write local files put them
GRID_IMAGES = 64  # validation images in a round's grid, at most
GRID_COLUMNS = 8
# Where a world has no exact grading (no held-out renders each round), the grid draws this many
# held-out prompts, and only when a tracker is on.
UNGRADED_PROMPTS = 16
# The package each tracker needs, as pip names it.
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet-ml", "aim": "aim",
            "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


class TrackerUnavailable(ValueError):
    """A tracker named in `log_with` whose package is not installed."""


def check_installed(names: list[str]) -> None:
    """Refuse a tracker whose package is missing (accelerate would drop it without a word)."""
    for name in names:
        if find_spec(name) is None:
            raise TrackerUnavailable(f"log_with: {name} needs the {PACKAGES[name]} package; install it with "
                                     f"pip install {PACKAGES[name]} (or leave {name} out of log_with)")


def hparams(config: RunConfig) -> dict[str, str | int | float | bool | None]:
    """The config as saved in config.yaml, flattened to the scalar values every tracker accepts
    (`train.lr`; lists as JSON)."""
    import yaml

    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, list) else value

    walk("", yaml.safe_load(dump_config(config)))  # the very text config.yaml holds, read back
    return flat


def start(accelerator, config: RunConfig, project: str, step: int) -> None:
    """Start the accelerator's trackers for a run whose last committed step is `step`: TensorBoard
    hides the later events an interrupted run left, which this one logs again."""
    accelerator.init_trackers(project, config=hparams(config), init_kwargs={"tensorboard": {"purge_step": step + 1}})


def tile(images: list[np.ndarray], columns: int = GRID_COLUMNS, gap: int = 2) -> np.ndarray:
    """Square images of one size in rows of `columns`, in reading order, on a grey background."""
    side, channels = images[0].shape[0], images[0].shape[2]
    rows = -(-len(images) // columns)
    width = min(columns, len(images))
    grid = np.full((rows * (side + gap) - gap, width * (side + gap) - gap, channels), 128, dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = (i // columns) * (side + gap), (i % columns) * (side + gap)
        grid[top:top + side, left:left + side] = image
    return grid


def _tensorboard_images(tracker, key: str, grid: np.ndarray, step: int) -> None:
    tracker.log_images({key: grid[None]}, step=step, dataformats="NHWC")


def _listed_images(tracker, key: str, grid: np.ndarray, step: int) -> None:
    tracker.log_images({key: [grid]}, step=step)


# How each tracker takes an image: accelerate's trackers differ in what `log_images` expects.
IMAGE_LOGGERS = {"tensorboard": _tensorboard_images, "wandb": _listed_images, "swanlab": _listed_images}


class Tracking:
    """A run's trackers, or nothing at all when `log_with` is empty."""

    def __init__(self, trainer, config: RunConfig, project: str):
        self.trainer = trainer
        self.accelerator = trainer.accelerator
        self.on = bool(config.log_with)
        if self.on:
            start(self.accelerator, config, config.log_project or project, trainer.step)

    def log_round(self, row: dict, refused: int, validation: tuple[list[str], list[np.ndarray]]) -> None:
        """A committed round: its row in the store, its refused proposals, and its validation
        (prompts, renders) as a grid."""
        if not self.on:
            return
        with self.trainer.log_lock:  # a trainer training on in another thread logs too
            self._log_round(row, refused, validation)

    def _log_round(self, row: dict, refused: int, validation: tuple[list[str], list[np.ndarray]]) -> None:
        prompts, renders = validation
        # The round's last step; in the asynchronous loop the trainer may have logged later steps
        # already, and trackers such as W&B drop a step lower than one logged before.
        step = max(row["train_step"] or 0, self.trainer.logged_step)
        metrics = row["metrics"]
        values = {
            "round/round": row["round"], "round/set_size": row["set_size"], "round/judged": row["judged"],
            "round/added": row["added"], "round/deleted": row["deleted"], "round/mutated": row["mutated"],
            "round/refused": refused, "round/teacher_calls": metrics.get("calls", 0),
            "round/spend_dollars": metrics.get("dollars", 0.0),
        }
        if row["judged"]:
            values["round/teacher_win_rate"] = row["teacher_wins"] / row["judged"]
        if metrics.get("loss") is not None:
            values["round/mean_loss"] = metrics["loss"]
        values.update({f"heldout/{category}": value for category, value in metrics.get("accuracy", {}).items()})
        # Where the world has no exact rules: the director's figure, and its 95% interval.
        for category, cell in metrics.get("director_heldout", {}).get("categories", {}).items():
            values.update({f"heldout/{category}": cell["rate"], f"heldout_low/{category}": cell["low"],
                           f"heldout_high/{category}": cell["high"]})
        if renders:
            shown = renders[:GRID_IMAGES]
            grid = tile(shown)
            for tracker in self.accelerator.trackers:
                if tracker.name in IMAGE_LOGGERS:
                    IMAGE_LOGGERS[tracker.name](tracker, "validation/samples", grid, step)
            # Markdown for TensorBoard's text tab: the grid's prompts in reading order.
            values["validation/prompts"] = "\n".join(f"{i}. {prompt}" for i, prompt in enumerate(prompts[:len(shown)], 1))
        self.accelerator.log(values, step=step)  # last: TensorBoard's writer flushes here, images included
        self.trainer.logged_step = step

    def end(self) -> None:
        if self.on:
            self.accelerator.end_training()
