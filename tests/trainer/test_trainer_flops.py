"""The analytic FLOP count against torch's own counter, the peaks, and `bench train`'s last line."""

import math
import re

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.student.sizes import get_size
from evolvedirector.student.student import build_transformer
from evolvedirector.trainer.flops import cpu_peak, forward_flops, gpu_peak, training_flops


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: more threads only contend
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("size,grid,channels,text_tokens,caption_channels", [
    ("tiny", 32, 3, 16, 384),  # pixel space, MiniLM
    ("tiny", 16, 4, 120, 4096),  # latents, T5 (the width of S/2 and up only scales the same terms)
])
def test_formula_matches_torchs_flop_counter(size, grid, channels, text_tokens, caption_channels):
    spec = get_size(size)
    model = build_transformer(size, grid, channels, caption_channels)
    # The matmul processor, so that the counter sees the attention products too (QK norm adds none).
    model.set_attn_processor(AttnProcessor())
    x = torch.randn(2, channels, grid, grid)
    with FlopCounterMode(display=False) as counter:
        out = model(x, encoder_hidden_states=torch.randn(2, text_tokens, caption_channels),
                    timestep=torch.tensor([1, 500]), encoder_attention_mask=torch.ones(2, text_tokens),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        forward = counter.get_total_flops() / 2
        out.square().mean().backward()
        training = counter.get_total_flops() / 2
    shape = dict(depth=spec.depth, width=spec.width, patch_size=spec.patch_size, channels=channels,
                 image_tokens=(grid // spec.patch_size) ** 2, text_tokens=text_tokens,
                 caption_channels=caption_channels)
    ours = forward_flops(**shape)
    assert forward == pytest.approx(ours, rel=0.01)
    assert training == pytest.approx(training_flops(**shape), rel=0.01)


def test_peaks():
    assert gpu_peak("NVIDIA H100 80GB HBM3", "bf16", tf32=False).flops == 989.4e12
    assert gpu_peak("NVIDIA H100 PCIe", "bf16", tf32=False).flops == 756.5e12
    assert gpu_peak("NVIDIA H200", "fp32", tf32=True).flops == 494.7e12
    assert gpu_peak("NVIDIA A100-SXM4-80GB", "fp32", tf32=False).flops == 19.5e12
    assert gpu_peak("NVIDIA GeForce RTX 4090", "bf16", tf32=False) is None
    cpuinfo = "cpu MHz\t\t: 2000.000\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16\n"
    assert cpu_peak(4, "fp32", cpuinfo).flops == 4 * 2.0e9 * 64
    assert cpu_peak(4, "bf16", cpuinfo).flops == 4 * 2.0e9 * 128
    peak = cpu_peak(1, "fp32", "cpu MHz : 3000.0\nflags : sse avx2 fma\n")
    assert peak.flops == 3.0e9 * 32 and "AVX2" in peak.how


def test_bench_train_last_line():
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["bench", "train", "--size", "tiny", "--steps", "2", "--batch-size", "2",
                                          "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    match = re.fullmatch(r"images/s=(\S+) mfu=(\S+)", lines[-1])
    assert match, lines[-1]
    images, mfu = float(match.group(1)), float(match.group(2))
    assert images > 0 and 0 < mfu < 1 and math.isfinite(images) and math.isfinite(mfu)
    assert any(line.startswith("peak: CPU: 1 threads") for line in lines)
    bad = CliRunner().invoke(app, ["bench", "train", "--size", "huge"])
    assert bad.exit_code != 0 and "huge" in bad.output
