"""The trainer: an explicit training loop on accelerate, with checkpoints that resume."""

from evolvedirector.trainer.trainer import Trainer

__all__ = ["Trainer"]
