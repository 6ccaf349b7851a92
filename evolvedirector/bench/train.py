"""`evolvedirector bench train`: training throughput of the student transformer, and its MFU.

One process times `Trainer.optimizer_step`, the very step the training loop takes (the student's
loss, forward and backward, gradient clipping, AdamW, EMA update, accelerate's mixed precision),
on batches of the right shapes. Inputs are random tensors because in training text states and
VAE latents come from the feature cache, not from the encoders: no encoder is loaded. Shapes-world
sizes (tiny, shapes-*) work in pixel space on MiniLM features (384-dim, 16 tokens); PixArt sizes
(S/2 ... XL/2) on SD-VAE latents (4 channels at 1/8 of the side) and T5 features (4096-dim, 120
tokens).

The captions are padded as real ones are (T5 pads to its 120 tokens, the empty caption of the
dropout holds one), so cross-attention takes a mask, as in training; `--caption-mask full` gives
every caption all its tokens, so that the trainer drops the all-ones mask on CUDA and SDPA may
take the flash kernel: what the mask costs, not what training gets.

MFU = model FLOPs per second / the device's peak; the FLOP count and the peaks are in
`evolvedirector/trainer/flops.py`. The last line printed is `images/s=<x> mfu=<y>`.

The trainer's speed levers (fused AdamW, no host sync inside the step, the foreach EMA) default
to what is right on the device and can be switched here, with torch.compile's modes and the
batch size; `--levers` runs the ladder of them in one process and prints one table.
"""

from __future__ import annotations

import copy
import gc
import math
import time
from dataclasses import dataclass, replace

import typer

from evolvedirector.bench import bench_app

LATENT_SIZES = {"S/2", "B/2", "L/2", "XL/2"}  # PixArt's sizes train on VAE latents


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
COMPILE_SCOPES = ("blocks", "model")  # train.compile: each transformer block, or the whole transformer
CAPTION_MASKS = ("padded", "full")


class RandomCaptions:
    """Text features of the right shape in place of an encoder's (the trainer reads cached ones).

    `padded`: each caption holds a seeded random number of tokens (at least min(8, tokens)) and
    the empty one a single token, the rest masked, as a T5 or MiniLM encoder pads them; otherwise
    every token of every caption is valid (an all-ones mask)."""

    def __init__(self, tokens: int, dim: int, padded: bool = True):
        self.max_tokens, self.dim, self.padded = tokens, dim, padded

    def encode(self, prompts: list[str]):
        import torch  # here, not at the top: registering the command must not load torch

        generator = torch.Generator().manual_seed(0)
        states = torch.randn(len(prompts), self.max_tokens, self.dim, generator=generator)
        mask = torch.ones(len(prompts), self.max_tokens, dtype=torch.long)
        if self.padded:
            shortest = min(8, self.max_tokens)
            for row, prompt in enumerate(prompts):
                length = int(torch.randint(shortest, self.max_tokens + 1, (1,), generator=generator)) if prompt else 1
                mask[row, length:] = 0
        return states, mask


@dataclass(frozen=True)
class Levers:
    """One configuration of the training step. None: the trainer's default for the device."""

    batch_size: int
    fused_adam: bool | None = None
    sync_every: int | None = None
    compile_mode: str | None = None  # None: eager; else one of COMPILE_MODES
    compile_scope: str = "blocks"  # one of COMPILE_SCOPES, when compiled
    foreach_ema: bool = True
    caption_mask: str = "padded"


def describe(levers: Levers, trainer) -> str:
    """The levers as the trainer resolved them, in a few words."""
    parts = ["fused AdamW" if trainer.fused_adam else "AdamW (not fused)",
             "loss read every step" if trainer.sync_every == 1 else f"loss read every {trainer.sync_every} steps",
             "eager" if levers.compile_mode is None else f"compile {levers.compile_mode} ({levers.compile_scope})"]
    if not levers.foreach_ema:
        parts.append("per-tensor EMA")
    if levers.caption_mask != "padded":
        parts.append(f"{levers.caption_mask} captions")
    return ", ".join(parts)


@dataclass(frozen=True)
class LatentGrid:
    """The SD VAE's latent space as the training step sees it, without the VAE (latents are cached)."""

    channels: int = 4
    pixels_per_cell: int = 8


@dataclass
class Shapes:
    """What one training step of a size sees: the student (built once, copied per configuration) and
    the FLOPs of one image."""

    size: str
    spec: object
    latent: bool
    resolution: int
    grid: int
    channels: int
    tokens: int
    text_tokens: int
    caption_channels: int
    parameters: int
    flops_per_image: float
    student: object  # on the CPU, never trained: each configuration trains a copy


def build_shapes(size: str, resolution: int | None) -> Shapes:
    import torch

    from evolvedirector.config import StudentConfig
    from evolvedirector.student.image_space import PixelSpace
    from evolvedirector.student.sizes import get_size
    from evolvedirector.student.student import Student
    from evolvedirector.student.transformer import count_parameters
    from evolvedirector.trainer.flops import training_flops

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
    tokens = (grid // spec.patch_size) ** 2
    flops_per_image = training_flops(depth=spec.depth, width=spec.width, patch_size=spec.patch_size,
                                     channels=channels, image_tokens=tokens, text_tokens=text_tokens,
                                     caption_channels=caption_channels)
    return Shapes(size, spec, latent, resolution, grid, channels, tokens, text_tokens, caption_channels,
                  count_parameters(student.model), flops_per_image, student)


def measure(shapes: Shapes, levers: Levers, steps: int, gradient_checkpointing: bool, precision: str,
            device: str, copy_student: bool = True) -> dict:
    """Time `steps` steps of `Trainer.optimizer_step`, the losses read as `_train` reads them, after
    2 warm-up steps (3 compiled: compilation, then CUDA graphs' recording with reduce-overhead).
    `copy_student`: train a copy of the shapes' student (False: the student itself, once)."""
    import torch

    from evolvedirector.config import TrainConfig
    from evolvedirector.trainer.trainer import Trainer

    student = copy.deepcopy(shapes.student) if copy_student else shapes.student
    student.text = RandomCaptions(shapes.text_tokens, shapes.caption_channels, padded=levers.caption_mask == "padded")
    student.null_text = student.text.encode([""])
    config = TrainConfig(batch_size=levers.batch_size, lr=1e-4, gradient_checkpointing=gradient_checkpointing,
                         mixed_precision="bf16" if precision == "bf16" else "no",
                         compile="off" if levers.compile_mode is None else levers.compile_scope,
                         compile_mode=levers.compile_mode or "default")
    trainer = Trainer(student, config, device=device, fused_adam=levers.fused_adam, sync_every=levers.sync_every,
                      foreach_ema=levers.foreach_ema)
    try:
        batch = levers.batch_size
        x = torch.randn(batch, shapes.channels, shapes.grid, shapes.grid, generator=torch.Generator().manual_seed(0))
        prompts = [f"caption {i}" for i in range(batch)]

        def synchronize() -> None:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()

        trainer.model.train()
        losses = trainer.loss_reader()
        for _ in range(2 if levers.compile_mode is None else 3):  # warm-up: allocator, kernels, compilation
            losses.add(trainer.optimizer_step(x, prompts))
        losses.flush()
        synchronize()
        losses = trainer.loss_reader()
        started = time.perf_counter()
        for _ in range(steps):
            losses.add(trainer.optimizer_step(x, prompts))
        losses.flush()
        synchronize()
        seconds = time.perf_counter() - started
        if not math.isfinite(losses.total):
            raise RuntimeError(f"the loss is not finite ({losses.total})")
        images_per_second = steps * batch / seconds
        return {"levers": levers, "described": describe(levers, trainer), "device": str(trainer.device),
                "seconds": seconds, "images_per_second": images_per_second,
                "ms_per_step": 1000 * seconds / steps, "flops_per_second": shapes.flops_per_image * images_per_second}
    finally:
        del trainer, student
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if levers.compile_mode is not None:
            torch._dynamo.reset()


def run_bench(size: str, resolution: int | None, steps: int, levers: Levers, gradient_checkpointing: bool,
              precision: str, device: str) -> dict:
    from evolvedirector.trainer.flops import device_peak

    shapes = build_shapes(size, resolution)
    result = measure(shapes, levers, steps, gradient_checkpointing, precision, device, copy_student=False)
    peak = device_peak(result["device"], precision)
    return {**vars(shapes), **result, "peak": peak, "mfu": result["flops_per_second"] / peak.flops}


SCOPE_WORDS = {"blocks": "each block", "model": "the whole model"}


def lever_ladder(batch_size: int, sync_every: int, modes: tuple[str, ...] = COMPILE_MODES,
                 scopes: tuple[str, ...] = ("blocks",)) -> list[tuple[str, Levers]]:
    """The ladder's first rows, each adding one lever to the eager rows above (each compile mode
    on the last eager row; the batch rows and the reference rows are built from the best of these
    once they are measured)."""
    base = Levers(batch_size, fused_adam=False, sync_every=1)
    fused = replace(base, fused_adam=True)
    no_sync = replace(fused, sync_every=sync_every)
    return [
        ("baseline: eager, AdamW not fused, host sync every step", base),
        ("+ fused AdamW", fused),
        (f"+ no host sync (loss read every {sync_every} steps)", no_sync),
        *((f"+ compile {mode}, {SCOPE_WORDS[scope]}" + (" (CUDA graphs)" if mode == "reduce-overhead" else ""),
           replace(no_sync, compile_mode=mode, compile_scope=scope)) for scope in scopes for mode in modes),
    ]


def batch_label(batch_size: int) -> str:
    return f"the best above at batch {batch_size}"


REFERENCE_ROWS = (
    ("reference: the best, per-tensor EMA (what the foreach EMA saves)", dict(foreach_ema=False)),
    ("reference: the best, captions without padding (no cross-attention mask)", dict(caption_mask="full")),
)


def run_ladder(size: str, resolution: int | None, steps: int, batch_size: int, batches: list[int], sync_every: int,
               gradient_checkpointing: bool, precision: str, device: str,
               modes: tuple[str, ...] = COMPILE_MODES, scopes: tuple[str, ...] = ("blocks",)) -> list[dict]:
    """Every configuration of the ladder in this process, printed as it is measured: one row each
    (a configuration that fails, e.g. out of memory, says so and the ladder goes on). Returns the
    rows; the best (images/s) of the first rows and the batch rows is printed last."""
    from evolvedirector.trainer.flops import device_peak

    shapes = build_shapes(size, resolution)
    print_header(shapes, precision, device, f"{steps} steps per configuration, gradient checkpointing "
                 f"{gradient_checkpointing}")
    peak = device_peak("cuda" if device == "cuda" else "cpu", precision)
    print(f"peak: {peak.how} = {peak.flops:.4g} FLOP/s")
    print(f"{'configuration':<72} {'batch':>5} {'images/s':>10} {'mfu':>7} {'ms/step':>9}  levers")
    rows: list[dict] = []

    def run(label: str, levers: Levers, candidate: bool) -> None:
        try:
            row = measure(shapes, levers, steps, gradient_checkpointing, precision, device)
            row["mfu"] = row["flops_per_second"] / peak.flops
            print(f"{label:<72} {levers.batch_size:>5} {row['images_per_second']:>10.4g} {row['mfu']:>7.4f} "
                  f"{row['ms_per_step']:>9.1f}  {row['described']}", flush=True)
        except Exception as error:  # noqa: BLE001 (out of memory, a compile failure: the ladder goes on)
            first = (str(error).strip().splitlines() or [""])[0]
            row = {"levers": levers, "error": f"{type(error).__name__}: {first}"[:160]}
            print(f"{label:<72} {levers.batch_size:>5} {'failed':>10} {'-':>7} {'-':>9}  {row['error']}", flush=True)
        rows.append({**row, "label": label, "candidate": candidate})

    def best() -> dict | None:
        done = [r for r in rows if r["candidate"] and "error" not in r]
        return max(done, key=lambda r: r["images_per_second"]) if done else None

    for label, levers in lever_ladder(batch_size, sync_every, modes, scopes):
        run(label, levers, candidate=True)
    top = best()
    for batch in batches:
        if top is not None:
            run(batch_label(batch), replace(top["levers"], batch_size=batch), candidate=True)
    top = best()
    for label, change in REFERENCE_ROWS:
        if top is not None:
            run(label, replace(top["levers"], **change), candidate=False)
    if top is None:
        raise RuntimeError("every configuration failed")
    print(f"best: {top['label']} (batch {top['levers'].batch_size}: {top['described']})")
    print(f"images/s={top['images_per_second']:.4g} mfu={top['mfu']:.4g}")
    return rows


def print_header(shapes: Shapes, precision: str, device: str, what: str) -> None:
    spec = shapes.spec
    space = f"{shapes.grid}x{shapes.grid} latents" if shapes.latent else "pixels"
    print(f"bench train: {shapes.size} (depth {spec.depth}, width {spec.width}, patch {spec.patch_size}, "
          f"{shapes.parameters / 1e6:.1f}M parameters), {shapes.resolution}x{shapes.resolution} {space}: "
          f"{shapes.tokens} image + {shapes.text_tokens} caption tokens; {precision}, {device}, {what}")
    print(f"model FLOPs per image (training: 3 x forward less first-layer input grads, trainer/flops.py): "
          f"{shapes.flops_per_image:.4g}")


@bench_app.command("train")
def train(
    size: str = typer.Option("tiny", "--size", help="a student size: tiny, shapes-s, ... S/2, B/2, XL/2"),
    resolution: int | None = typer.Option(None, "--resolution", min=8,
                                          help="image side in pixels (default 32 for shapes sizes, 512 for PixArt's)"),
    steps: int = typer.Option(10, "--steps", min=1, help="timed optimizer steps (after 2 warm-up steps, 3 compiled)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the transformer (= --compile-mode default)"),
    compile_mode: str | None = typer.Option(None, "--compile-mode",
                                            help="torch.compile mode: default, reduce-overhead (CUDA graphs) or max-autotune"),
    compile_scope: str = typer.Option("blocks", "--compile-scope", help=(
        "what is compiled (train.compile): blocks, each transformer block (one compilation for all); "
        "model, the whole transformer (minutes of compilation at XL/2)")),
    fused_adam: bool | None = typer.Option(None, "--fused-adam/--no-fused-adam",
                                           help="fused AdamW (default: on CUDA, as the trainer does)"),
    sync_every: int | None = typer.Option(None, "--sync-every", min=1, help=(
        "read the loss to the host every N steps; above 1, inputs are copied to the GPU without waiting "
        "(default: as the trainer does, 1 on a CPU, 20 on CUDA; 1 is a host sync every step)")),
    foreach_ema: bool = typer.Option(True, "--foreach-ema/--per-tensor-ema",
                                     help="the EMA as one foreach op (the trainer's), or one op per tensor"),
    caption_mask: str = typer.Option("padded", "--caption-mask", help=(
        "padded: captions padded as an encoder pads them (cross-attention takes a mask, as in training); "
        "full: every token valid, the mask dropped on CUDA (what the mask costs)")),
    levers: bool = typer.Option(False, "--levers", help=(
        "the ladder of levers in one process: eager baseline, + fused AdamW, + no host sync, + each compile "
        "mode, the best at each --lever-batches, and two reference rows; one table, the best last")),
    lever_batches: str = typer.Option("32,64", "--lever-batches", help="batch sizes the best configuration is also run at"),
    lever_modes: str = typer.Option(",".join(COMPILE_MODES), "--lever-compile-modes",
                                    help="the compile modes the ladder tries (max-autotune compiles for minutes on a GPU)"),
    lever_scopes: str = typer.Option("blocks", "--lever-compile-scopes",
                                     help="the compile scopes the ladder tries with each mode: blocks, model"),
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
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise typer.BadParameter(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}")
    if compile and compile_mode not in (None, "default"):
        raise typer.BadParameter("--compile is --compile-mode default: give one of them")
    if caption_mask not in CAPTION_MASKS:
        raise typer.BadParameter(f"--caption-mask must be one of {', '.join(CAPTION_MASKS)}")
    try:
        batches = [int(b) for b in lever_batches.split(",") if b.strip()]
    except ValueError:
        raise typer.BadParameter(f"--lever-batches must be integers separated by commas, got {lever_batches!r}") from None
    if any(b < 1 for b in batches):
        raise typer.BadParameter("--lever-batches must be positive")
    modes = tuple(m.strip() for m in lever_modes.split(",") if m.strip())
    if any(m not in COMPILE_MODES for m in modes):
        raise typer.BadParameter(f"--lever-compile-modes must be among {', '.join(COMPILE_MODES)}, got {lever_modes!r}")
    scopes = tuple(m.strip() for m in lever_scopes.split(",") if m.strip())
    if compile_scope not in COMPILE_SCOPES or not scopes or any(m not in COMPILE_SCOPES for m in scopes):
        raise typer.BadParameter(f"--compile-scope and --lever-compile-scopes must be among {', '.join(COMPILE_SCOPES)}")
    import torch

    from evolvedirector.trainer.timing import SYNC_EVERY_CUDA

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if levers:
        run_ladder(size, resolution, steps, batch_size, batches, sync_every or SYNC_EVERY_CUDA,
                   gradient_checkpointing, precision, device, modes, scopes)
        return
    chosen = Levers(batch_size, fused_adam=fused_adam, sync_every=sync_every,
                    compile_mode=compile_mode or ("default" if compile else None), compile_scope=compile_scope,
                    foreach_ema=foreach_ema,
                    caption_mask=caption_mask)
    f = run_bench(size, resolution, steps, chosen, gradient_checkpointing, precision, device)
    spec = f["spec"]
    space = f"{f['grid']}x{f['grid']} latents" if f["latent"] else "pixels"
    print(f"bench train: {f['size']} (depth {spec.depth}, width {spec.width}, patch {spec.patch_size}, "
          f"{f['parameters'] / 1e6:.1f}M parameters), {f['resolution']}x{f['resolution']} {space}: "
          f"{f['tokens']} image + {f['text_tokens']} caption tokens, {caption_mask} captions")
    print(f"batch {batch_size}, {precision}, {f['device']}, {f['described']}, "
          f"gradient checkpointing {gradient_checkpointing}, {steps} steps in {f['seconds']:.2f} s")
    print(f"model FLOPs per image (training: 3 x forward less first-layer input grads, trainer/flops.py): {f['flops_per_image']:.4g}")
    print(f"peak: {f['peak'].how} = {f['peak'].flops:.4g} FLOP/s")
    if not (math.isfinite(f["images_per_second"]) and math.isfinite(f["mfu"])):
        raise RuntimeError("the measurement is not finite")
    print(f"images/s={f['images_per_second']:.4g} mfu={f['mfu']:.4g}")
