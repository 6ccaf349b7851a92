"""Model FLOPs of the student transformer, and the peak FLOP/s of the device they run on: the two
halves of MFU (model FLOPs utilisation = model FLOPs per second / peak FLOP/s).

Counted analytically, a multiply-add as 2 FLOPs, for one image of N image tokens and L caption
tokens, width d, depth D, patch p, C image channels, C_t caption channels:

    forward = 2·N·p²·C·d                           patch embedding
            + 2·L·(C_t·d + d²)                     caption projection (two linears)
            + D·( 2·N·14·d²                        per block, per image token: self-attention q, k, v,
                                                    out (4d²), cross-attention q, out (2d²), MLP (8d²)
                + 2·L·2·d²                         cross-attention k, v on the caption tokens
                + 4·N²·d                           self-attention scores and weighted sum
                + 4·N·L·d )                        cross-attention scores and weighted sum
            + 2·N·d·p²·C                           final projection
    training = 3 × forward                         (the backward pass costs twice the forward:
             − 2·N·p²·C·d − 2·L·C_t·d               gradients of inputs and of weights) less the input
                                                    gradients the first layers never compute (patch
                                                    embedding, first caption linear: their inputs are data)

So forward ≈ 2·(parameters that touch each image token)·N + the attention terms, the usual
`6·params·tokens + attention` rule for training. (The first-layer correction matters only for
toy shapes: at XL/2, 512 px, it is under 0.2 % of the total.) Timestep embedding, adaLN and norms are left
out (well under 1 %). Gradient checkpointing runs the forward twice but does not change the
model FLOPs: MFU counts useful work, so checkpointing lowers it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


def forward_flops(*, depth: int, width: int, patch_size: int, channels: int, image_tokens: int,
                  text_tokens: int, caption_channels: int) -> float:
    n, l, d = image_tokens, text_tokens, width
    patch = patch_size * patch_size * channels
    per_block = 2 * n * 14 * d * d + 2 * l * 2 * d * d + 4 * n * n * d + 4 * n * l * d
    return 2 * n * patch * d + 2 * l * (caption_channels * d + d * d) + depth * per_block + 2 * n * d * patch


def training_flops(**shape) -> float:
    """Model FLOPs of one training step per image (forward and backward)."""
    first_layers = 2 * shape["image_tokens"] * shape["patch_size"] ** 2 * shape["channels"] * shape["width"] \
        + 2 * shape["text_tokens"] * shape["caption_channels"] * shape["width"]
    return 3 * forward_flops(**shape) - first_layers


@dataclass(frozen=True)
class Peak:
    flops: float  # per second
    how: str  # where the figure comes from, printed beside the result


# Dense (no sparsity) tensor-core peaks from NVIDIA's data sheets, FLOP/s: bf16, tf32, fp32 (no tensor cores).
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100 PCIe": {"bf16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    "H100": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM
    "A100": {"bf16": 312.0e12, "tf32": 156.0e12, "fp32": 19.5e12},
}


def gpu_peak(name: str, precision: str, tf32: bool) -> Peak | None:
    kind = "bf16" if precision == "bf16" else ("tf32" if tf32 else "fp32")
    for model, peaks in GPU_PEAKS.items():  # the most specific name first ("H100 PCIe" before "H100")
        if all(part in name for part in model.split()):
            return Peak(peaks[kind], f"{model} {kind} dense peak from the data sheet ({name})")
    return None


def cpu_peak(threads: int, precision: str, cpuinfo: str | None = None) -> Peak:
    """threads × clock × FLOPs per cycle per core, read from /proc/cpuinfo.

    fp32: 2 FMA units × vector lanes × 2 (AVX-512: 16 lanes, 64 FLOP/cycle; AVX2: 8 lanes, 32;
    otherwise SSE, 8). bf16: AMX tiles where present (1024 FLOP/cycle), else AVX512-BF16 dot
    products (2× the fp32 rate), else the fp32 rate. Peaks are optimistic (turbo, 2 FMA units), so
    the MFU reported is a lower bound on how well the CPU is used.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo, re.M).group(1).split()) if "flags" in cpuinfo else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)]
    ghz = max(mhz) / 1000 if mhz else 2.0
    clock_note = f"{ghz:.2f} GHz" + ("" if mhz else " (assumed: no clock in /proc/cpuinfo)")
    if "avx512f" in flags:
        per_cycle, unit = 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, unit = 32, "AVX2: 2 FMA units x 8 fp32 lanes x 2"
    else:
        per_cycle, unit = 8, "SSE: 4 lanes x 2 (no FMA assumed)"
    if precision == "bf16":
        if "amx_bf16" in flags:
            per_cycle, unit = 1024, "AMX-BF16 tiles: 1024 bf16 FLOP/cycle"
        elif "avx512_bf16" in flags:
            per_cycle, unit = 2 * per_cycle, f"AVX512-BF16 dot products: 2 x ({unit})"
    flops = threads * ghz * 1e9 * per_cycle
    return Peak(flops, f"CPU: {threads} threads x {clock_note} x {per_cycle} FLOP/cycle ({unit})")


def device_peak(device: str, precision: str, threads: int | None = None) -> Peak:
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        peak = gpu_peak(name, precision, torch.backends.cuda.matmul.allow_tf32)
        if peak is None:
            raise ValueError(f"no known peak for GPU {name!r}; known: {', '.join(GPU_PEAKS)}")
        return peak
    return cpu_peak(threads or torch.get_num_threads() or os.cpu_count() or 1, precision)
