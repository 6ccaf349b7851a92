"""The training loop, written out: sample a batch from the current set, step, update the EMA.

`accelerate` owns the device and the (optional) distributed wrapping; on a CPU it is one process
and adds nothing but the device placement. A checkpoint is a folder with the trained and EMA
transformers (diffusers format) and `trainer_state.pt` (optimizer, learning-rate schedule and
step), loaded with `weights_only=True` so a checkpoint can never run code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup

from evolvedirector.student import Student


class Trainer:
    def __init__(self, student: Student, config, *, seed: int = 0, device: str = "auto"):
        self.student = student
        self.config = config
        self.seed = seed
        self.accelerator = Accelerator(cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()))
        optimizer = torch.optim.AdamW(
            student.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=config.adam_eps
        )
        schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup_steps)
        self.model, self.optimizer, self.schedule = self.accelerator.prepare(student.model, optimizer, schedule)
        student.ema_model.to(self.accelerator.device)
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def train(self, images: torch.Tensor, prompts: list[str], steps: int,
              on_step: Callable[[float], None] | None = None) -> float:
        """`steps` optimizer steps on batches drawn uniformly from (images, prompts); mean loss."""
        if len(prompts) != len(images) or not prompts:
            raise ValueError(f"need as many prompts as images, and at least one (got {len(prompts)}, {len(images)})")
        # One generator per call, seeded by the global step: a resumed run draws the same batches.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        images = images.to(self.device)
        self.model.train()
        total = 0.0
        for _ in range(steps):
            index = torch.randint(0, len(prompts), (self.config.batch_size,), generator=generator)
            loss = self.student.loss(
                self.model, images[index.to(self.device)], [prompts[i] for i in index.tolist()], generator,
                self.config.caption_dropout,
            )
            self.accelerator.backward(loss)
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.student.update_ema(self.accelerator.unwrap_model(self.model), self.step)
            total += loss.item()
            if on_step is not None:
                on_step(loss.item())
        return total / max(steps, 1)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.student.save_weights(folder)
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(), "step": self.step},
            folder / "trainer_state.pt",
        )

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        self.student.load_weights(folder)
        state = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])
