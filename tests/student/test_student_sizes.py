import pytest
import torch
from torch import nn

from evolvedirector.config import StudentConfig
from evolvedirector.student import SIZES, QKNormPixArtTransformer2DModel, has_qk_norm
from evolvedirector.student.student import build_transformer


def test_the_registry_runs_from_the_cpu_sizes_to_pixart_xl2():
    assert {"tiny", "shapes-s", "S/2", "B/2", "L/2", "XL/2"} <= set(SIZES)
    xl = SIZES["XL/2"]
    assert (xl.depth, xl.width, xl.heads, xl.patch_size, xl.head_dim) == (28, 1152, 16, 2, 72)
    assert all(size.width % size.heads == 0 for size in SIZES.values())


def test_xl2_has_pixart_alphas_parameter_count_and_qk_norm_everywhere():
    # Built on the meta device: shapes only, no 2.4 GB of memory.
    xl = SIZES["XL/2"]
    with torch.device("meta"):
        model = QKNormPixArtTransformer2DModel(
            num_attention_heads=xl.heads, attention_head_dim=xl.head_dim, in_channels=4, out_channels=8,
            num_layers=xl.depth, cross_attention_dim=xl.width, sample_size=128, patch_size=xl.patch_size,
            caption_channels=4096,  # T5-v1.1-XXL
        )
    assert model.use_additional_conditions  # the 1024-px multi-scale model
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(611e6, rel=0.005), count  # PixArt-XL-2-1024-MS: 611M
    assert has_qk_norm(model)
    norms = [n for block in model.transformer_blocks for a in (block.attn1, block.attn2) for n in (a.norm_q, a.norm_k)]
    assert len(norms) == 4 * 28
    # Per head (72 features), and without affine weights, as the official code normalises.
    assert all(isinstance(n, nn.LayerNorm) and n.normalized_shape == (72,) and n.weight is None for n in norms)


def test_size_conditioning_refuses_a_width_it_cannot_split_in_three():
    with pytest.raises(ValueError, match="width 64"):
        build_transformer("tiny", 32, 3, 384, size_conditioning=True)
    assert build_transformer("tiny-ms", 32, 3, 384, size_conditioning=True).use_additional_conditions
    # None follows diffusers: on for a 128-wide latent grid only.
    assert not build_transformer("tiny-ms", 32, 3, 384, size_conditioning=None).use_additional_conditions


def test_config_refuses_an_unknown_size():
    with pytest.raises(ValueError, match="unknown student size 'XXL/2'"):
        StudentConfig(size="XXL/2")
