"""`evolvedirector bench train`: training throughput of the student transformer, and its MFU.

One process times `Trainer.optimizer_step`, the very step the training loop takes (the student's
loss, forward and backward, gradient clipping, AdamW, EMA update, accelerate's mixed precision),
on batches of the right shapes. Inputs are random tensors because in training text states and
VAE latents come from the feature cache, not from the encoders: no encoder is loaded. Shapes-world
sizes (tiny, shapes-*) work in pixel space on MiniLM features (384-dim, 16 tokens); PixArt sizes
(S/2 ... XL/2) on SD-VAE latents (4 channels at 1/8 of the side) and T5 features (4096-dim, 120
tokens).

MFU = model FLOPs per second / the device's peak; the FLOP count and the peaks are in
`evolvedirector/trainer/flops.py`. The last line printed is `images/s=<x> mfu=<y>`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import typer

from evolvedirector.bench import bench_app

LATENT_SIZES = {"S/2", "B/2", "L/2", "XL/2"}  # PixArt's sizes train on VAE latents


class RandomCaptions:
    """Text features of the right shape in place of an encoder's (the trainer reads cached ones)."""

    def __init__(self, tokens: int, dim: int):
        self.max_tokens, self.dim = tokens, dim

    def encode(self, prompts: list[str]):
        import torch  # here, not at the top: registering the command must not load torch

        states = torch.randn(len(prompts), self.max_tokens, self.dim, generator=torch.Generator().manual_seed(0))
        return states, torch.ones(len(prompts), self.max_tokens, dtype=torch.long)


@dataclass(frozen=True)
class LatentGrid:
    """The SD VAE's latent space as the training step sees it, without the VAE (latents are cached)."""

    channels: int = 4
    pixels_per_cell: int = 8


def run_bench(size: str, resolution: int | None, steps: int, batch_size: int, compile: bool,
              gradient_checkpointing: bool, precision: str, device: str) -> dict:
    import torch

    from evolvedirector.config import StudentConfig, TrainConfig
    from evolvedirector.student.image_space import PixelSpace
    from evolvedirector.student.sizes import get_size
    from evolvedirector.student.student import Student
    from evolvedirector.trainer.flops import device_peak, training_flops
    from evolvedirector.trainer.trainer import Trainer

    spec = get_size(size)
    latent = size in LATENT_SIZES
    resolution = resolution or (512 if latent else 32)
    space = LatentGrid() if latent else PixelSpace()
    cell, channels = space.pixels_per_cell, space.channels
    text_tokens, caption_channels = (120, 4096) if latent else (16, 384)
    if resolution % (cell * spec.patch_size):
        raise typer.BadParameter(f"--resolution {resolution} is not a multiple of {cell * spec.patch_size}")
    grid = resolution // cell

    torch.manual_seed(0)
    student = Student(StudentConfig(size=size, max_tokens=text_tokens, size_conditioning=False), resolution,
                      text_encoder=RandomCaptions(text_tokens, caption_channels), space=space)
    parameters = sum(p.numel() for p in student.model.parameters())
    config = TrainConfig(batch_size=batch_size, lr=1e-4, gradient_checkpointing=gradient_checkpointing,
                         mixed_precision="bf16" if precision == "bf16" else "no")
    trainer = Trainer(student, config, device=device)
    if compile:
        trainer.model.compile()

    x = torch.randn(batch_size, channels, grid, grid, generator=torch.Generator().manual_seed(0))
    prompts = [f"caption {i}" for i in range(batch_size)]

    def synchronize() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()

    trainer.model.train()
    for _ in range(2):  # warm-up: allocator, kernels, and compilation with --compile
        trainer.optimizer_step(x, prompts)
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.optimizer_step(x, prompts)
    synchronize()
    seconds = time.perf_counter() - started

    tokens = (grid // spec.patch_size) ** 2
    flops_per_image = training_flops(depth=spec.depth, width=spec.width, patch_size=spec.patch_size,
                                     channels=channels, image_tokens=tokens, text_tokens=text_tokens,
                                     caption_channels=caption_channels)
    images_per_second = steps * batch_size / seconds
    peak = device_peak(str(trainer.device), precision)
    return {
        "size": size, "spec": spec, "latent": latent, "resolution": resolution, "grid": grid, "tokens": tokens,
        "text_tokens": text_tokens, "parameters": parameters, "device": str(trainer.device),
        "seconds": seconds, "images_per_second": images_per_second, "flops_per_image": flops_per_image,
        "peak": peak, "mfu": flops_per_image * images_per_second / peak.flops,
    }


@bench_app.command("train")
def train(
    size: str = typer.Option("tiny", "--size", help="a student size: tiny, shapes-s, ... S/2, B/2, XL/2"),
    resolution: int | None = typer.Option(None, "--resolution", min=8,
                                          help="image side in pixels (default 32 for shapes sizes, 512 for PixArt's)"),
    steps: int = typer.Option(10, "--steps", min=1, help="timed optimizer steps (after 2 warm-up steps)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the transformer"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 (autocast; slow on a CPU)"),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one), cpu or cuda"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's); the CPU peak follows"),
) -> None:
    """Images per second and MFU of the student's training step; the last line is `images/s=<x> mfu=<y>`."""
    from evolvedirector.student.sizes import SIZES

    if size not in SIZES:
        raise typer.BadParameter(f"--size {size!r} is not one of {', '.join(SIZES)}")
    if precision not in ("fp32", "bf16"):
        raise typer.BadParameter("--precision must be fp32 or bf16")
    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("--device must be auto, cpu or cuda")
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    f = run_bench(size, resolution, steps, batch_size, compile, gradient_checkpointing, precision, device)
    spec = f["spec"]
    space = f"{f['grid']}x{f['grid']} latents" if f["latent"] else "pixels"
    print(f"bench train: {f['size']} (depth {spec.depth}, width {spec.width}, patch {spec.patch_size}, "
          f"{f['parameters'] / 1e6:.1f}M parameters), {f['resolution']}x{f['resolution']} {space}: "
          f"{f['tokens']} image + {f['text_tokens']} caption tokens")
    print(f"batch {batch_size}, {precision}, {f['device']}, compile {compile}, "
          f"gradient checkpointing {gradient_checkpointing}, {steps} steps in {f['seconds']:.2f} s")
    print(f"model FLOPs per image (training: 3 x forward less first-layer input grads, trainer/flops.py): {f['flops_per_image']:.4g}")
    print(f"peak: {f['peak'].how} = {f['peak'].flops:.4g} FLOP/s")
    if not (math.isfinite(f["images_per_second"]) and math.isfinite(f["mfu"])):
        raise RuntimeError("the measurement is not finite")
    print(f"images/s={f['images_per_second']:.4g} mfu={f['mfu']:.4g}")
