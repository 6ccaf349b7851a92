"""Starting points: PixArt-α's original `.pth` layout and diffusers folders.

The reference network below is written in the original repository's structure and names (fused
qkv and kv projections, t_block, y_embedder, final_layer, csize/ar embedders), with the per-head
Q/K LayerNorm of EvolveDirector, and its own attention and embedding arithmetic. The converted
diffusers model must compute the same function from the same weights.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from student_helpers import randomised
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from torch import nn

from evolvedirector.student import has_qk_norm
from evolvedirector.student.convert import load_transformer, official_to_diffusers, read_checkpoint

WIDTH, HEADS, DEPTH, PATCH, IN, OUT, CAPTION, SIDE = 96, 2, 2, 2, 4, 8, 16, 8  # the "tiny-ms" size


def frequencies(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def mlp(i, h, o, act):
    return nn.Sequential(nn.Linear(i, h), act, nn.Linear(h, o))


def qk_norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def attend(q, k, v, key_mask=None):  # (B, N, H, d) each
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    return torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), v)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).unbind(2)
        return self.proj(attend(qk_norm(q), qk_norm(k), v).reshape(b, n, c))


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_linear, self.kv_linear, self.proj = (nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 2 * WIDTH),
                                                    nn.Linear(WIDTH, WIDTH))

    def forward(self, x, y, mask):
        b, n, c = x.shape
        q = self.q_linear(x).reshape(b, n, HEADS, c // HEADS)
        k, v = self.kv_linear(y).reshape(b, y.shape[1], 2, HEADS, c // HEADS).unbind(2)
        return self.proj(attend(qk_norm(q), qk_norm(k), v, mask).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(WIDTH, elementwise_affine=False, eps=1e-6)
        self.attn, self.cross_attn = SelfAttention(), CrossAttention()
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.scale_shift_table = nn.Parameter(torch.zeros(6, WIDTH))

    def forward(self, x, y, t0, mask):
        modulation = self.scale_shift_table[None] + t0.reshape(len(x), 6, -1)
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, 1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        x = x + self.cross_attn(x, y, mask)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp.fc2(F.gelu(self.mlp.fc1(h), approximate="tanh"))


class OfficialPixArtMS(nn.Module):
    """PixArt-α's multi-scale network in its original module layout."""

    def __init__(self):
        super().__init__()
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(IN, WIDTH, PATCH, PATCH)
        grid = SIDE // PATCH
        table = get_2d_sincos_pos_embed(WIDTH, grid, base_size=grid, output_type="pt")
        self.register_buffer("pos_embed", table[None].float())
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = mlp(256, WIDTH, WIDTH, nn.SiLU())
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(WIDTH, 6 * WIDTH))
        self.csize_embedder, self.ar_embedder = nn.Module(), nn.Module()
        self.csize_embedder.mlp = mlp(256, WIDTH // 3, WIDTH // 3, nn.SiLU())
        self.ar_embedder.mlp = mlp(256, WIDTH // 3, WIDTH // 3, nn.SiLU())
        self.y_embedder = nn.Module()
        self.y_embedder.y_proj = nn.Module()
        self.y_embedder.y_proj.fc1, self.y_embedder.y_proj.fc2 = nn.Linear(CAPTION, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.y_embedder.register_buffer("y_embedding", torch.randn(6, CAPTION))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.final_layer = nn.Module()
        self.final_layer.linear = nn.Linear(WIDTH, PATCH * PATCH * OUT)
        self.final_layer.scale_shift_table = nn.Parameter(torch.zeros(2, WIDTH))

    def forward(self, x, t, y, mask, c_size, ar):
        b, _, height, width = x.shape
        h, w = height // PATCH, width // PATCH
        x = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        t = self.t_embedder.mlp(frequencies(t))
        size = self.csize_embedder.mlp(frequencies(c_size.flatten())).reshape(b, -1)
        ratio = self.ar_embedder.mlp(frequencies(ar.flatten())).reshape(b, -1)
        t = t + torch.cat([size, ratio], dim=1)
        t0 = self.t_block(t)
        y = self.y_embedder.y_proj.fc2(F.gelu(self.y_embedder.y_proj.fc1(y), approximate="tanh"))
        for block in self.blocks:
            x = block(x, y, t0, mask)
        shift, scale = (self.final_layer.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x = self.final_layer.linear(F.layer_norm(x, (WIDTH,), eps=1e-6) * (1 + scale) + shift)
        x = x.reshape(b, h, w, PATCH, PATCH, OUT)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, OUT, h * PATCH, w * PATCH)


@pytest.fixture(scope="module")
def reference():
    return randomised(OfficialPixArtMS(), seed=3).eval()


def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, IN, SIDE, SIDE, generator=g)
    y = torch.randn(2, 6, CAPTION, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    return x, torch.tensor([10, 700]), y, mask, torch.tensor([[64.0, 64.0], [48.0, 96.0]]), torch.tensor([[1.0], [0.5]])


def converted_output(model):
    x, t, y, mask, c_size, ar = inputs()
    with torch.no_grad():
        return model(x, encoder_hidden_states=y, timestep=t, encoder_attention_mask=mask,
                     added_cond_kwargs={"resolution": c_size, "aspect_ratio": ar}).sample


def test_a_converted_pth_computes_what_the_original_network_computes(reference, tmp_path):
    torch.save({"state_dict": reference.state_dict(), "step": 1000}, tmp_path / "model.pth")
    model = load_transformer(tmp_path / "model.pth", "tiny-ms").eval()
    assert has_qk_norm(model) and model.use_additional_conditions
    assert model.config.sample_size == SIDE and model.config.out_channels == OUT  # read from pos_embed, final layer
    with torch.no_grad():
        expected = reference(*inputs())
    torch.testing.assert_close(converted_output(model), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("fused,parts", [("cross_attn.kv_linear", 2), ("attn.qkv", 3)])
def test_a_wrong_split_of_the_fused_projections_is_caught(reference, fused, parts):
    # The same check with keys and values (or q, k, v) taken in the wrong order must fail.
    state = dict(reference.state_dict())
    for index in range(DEPTH):
        for kind in ("weight", "bias"):
            name = f"blocks.{index}.{fused}.{kind}"
            state[name] = torch.cat(list(reversed(state[name].chunk(parts, dim=0))))
    from evolvedirector.student.convert import transformer_from_official
    from evolvedirector.student.sizes import get_size

    wrong = transformer_from_official(state, get_size("tiny-ms"))
    with torch.no_grad():
        expected = reference(*inputs())
    assert (converted_output(wrong) - expected).abs().max() > 1e-3


def test_the_ema_weights_are_preferred_and_unknown_names_refused(reference, tmp_path):
    state = reference.state_dict()
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save({"state_dict": zeros, "state_dict_ema": state}, tmp_path / "ema.pth")
    assert torch.equal(read_checkpoint(tmp_path / "ema.pth")["t_block.1.weight"], state["t_block.1.weight"])
    assert torch.equal(read_checkpoint(tmp_path / "ema.pth", ema=False)["t_block.1.weight"], zeros["t_block.1.weight"])
    with pytest.raises(KeyError, match="extra.weight"):
        official_to_diffusers({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="x_embedder.proj.weight"):
        official_to_diffusers({k: v for k, v in state.items() if not k.startswith("x_embedder")})


def test_a_checkpoint_with_python_objects_is_refused_not_unpickled(reference, tmp_path):
    torch.save({"state_dict": reference.state_dict(), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "objects.pth")
    with pytest.raises(ValueError, match="weights_only"):
        read_checkpoint(tmp_path / "objects.pth")


def test_the_size_must_match_the_checkpoint(reference, tmp_path):
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "model.pth")
    with pytest.raises(ValueError, match="depth 2, width 96, patch 2; the size asked for is depth 28"):
        load_transformer(tmp_path / "model.pth", "XL/2")


def test_a_diffusers_pixart_folder_starts_a_student_with_qk_norm(tmp_path):
    from diffusers import PixArtTransformer2DModel

    from evolvedirector.config import StudentConfig
    from evolvedirector.student import Student

    plain = randomised(PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=32, in_channels=3, out_channels=3, num_layers=2,
        cross_attention_dim=64, sample_size=32, patch_size=4, caption_channels=384, use_additional_conditions=False,
    ))
    plain.save_pretrained(tmp_path / "pixart")
    student = Student(StudentConfig(size="tiny", init_from=str(tmp_path / "pixart")), 32)
    # Every weight arrives; the Q/K LayerNorms have none, so nothing is missing.
    assert student.model.state_dict().keys() == plain.state_dict().keys()
    for name, value in plain.state_dict().items():
        assert torch.equal(student.model.state_dict()[name], value), name
    assert has_qk_norm(student.model) and has_qk_norm(student.ema_model)
    with pytest.raises(ValueError, match="student.size"):
        Student(StudentConfig(size="shapes-s", init_from=str(tmp_path / "pixart")), 32, text_encoder=student.text)
    with pytest.raises(ValueError, match="student.conv_ffn is true but .* built without it"):
        Student(StudentConfig(size="tiny", conv_ffn=True, init_from=str(tmp_path / "pixart")), 32,
                text_encoder=student.text)
