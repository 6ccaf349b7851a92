"""The trainer: an explicit training loop on accelerate, with checkpoints that resume exactly,
a feature cache, aspect-bucket batches and model-FLOP counting. Its multi-process launcher is
`python -m evolvedirector.launch` (under `accelerate launch`), a command beside cli.py.

`Trainer` loads torch, accelerate and diffusers, so it is imported on first use.
"""


def __getattr__(name: str):
    if name == "Trainer":
        from evolvedirector.trainer.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'evolvedirector.trainer' has no attribute {name!r}")


__all__ = ["Trainer"]
