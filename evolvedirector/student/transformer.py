"""PixArt-α's transformer with LayerNorm on queries and keys, as EvolveDirector trains it.

The official EvolveDirector code normalises Q and K per head, in self- and cross-attention, with
a LayerNorm that has no affine weights. diffusers' `Attention` already knows how to apply
`norm_q`/`norm_k` (its default processor does); PixArt's blocks just never create them. This
subclass creates them after the parent has built the blocks, and records `qk_norm` in the config
so that `from_pretrained` rebuilds them.

Two traps, both tested: the subclass needs its own `__init__` decorated with
`@register_to_config` (or save/load loses the new field), and `set_default_attn_processor()`
installs the legacy processor, which ignores `norm_q`/`norm_k`, so it is overridden here.
"""

from __future__ import annotations

import torch
from diffusers import PixArtTransformer2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.activations import GELU
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.embeddings import PixArtAlphaCombinedTimestepSizeEmbeddings, PixArtAlphaTextProjection
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (needed for pipeline save/load)
from torch import nn


class QKNormPixArtTransformer2DModel(PixArtTransformer2DModel):
    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = 8,
        num_layers: int = 28,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = 1152,
        attention_bias: bool = True,
        sample_size: int = 128,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_single",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: int | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        attention_type: str | None = "default",
        qk_norm: str | None = "layer_norm",
        pooled_caption: bool = False,
        caption_positions: int = 0,
        conv_ffn: bool = False,
    ):
        super().__init__(
            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            in_channels=in_channels, out_channels=out_channels, num_layers=num_layers, dropout=dropout,
            norm_num_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
            attention_bias=attention_bias, sample_size=sample_size, patch_size=patch_size,
            activation_fn=activation_fn, num_embeds_ada_norm=num_embeds_ada_norm,
            upcast_attention=upcast_attention, norm_type=norm_type,
            norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps,
            interpolation_scale=interpolation_scale, use_additional_conditions=use_additional_conditions,
            caption_channels=caption_channels, attention_type=attention_type,
        )
        if qk_norm not in (None, "layer_norm"):
            raise ValueError(f"qk_norm must be None or 'layer_norm', got {qk_norm!r}")
        if qk_norm == "layer_norm":
            for block in self.transformer_blocks:
                for attention in (block.attn1, block.attn2):
                    attention.norm_q = nn.LayerNorm(attention_head_dim, eps=1e-6, elementwise_affine=False)
                    attention.norm_k = nn.LayerNorm(attention_head_dim, eps=1e-6, elementwise_affine=False)
        if caption_positions:
            self.caption_projection = PositionedCaptionProjection(caption_channels, self.inner_dim, caption_positions)
        if conv_ffn:
            for block in self.transformer_blocks:
                block.ff = ConvFeedForward(block.ff)
        if pooled_caption:
            old = self.adaln_single.emb
            self.adaln_single.emb = PooledCaptionTimestepEmbeddings(
                num_attention_heads * attention_head_dim, old.outdim, caption_channels,
                use_additional_conditions=old.use_additional_conditions)

    def forward(self, hidden_states, *args, **kwargs):
        if self.config.conv_ffn:
            # A feed-forward sees tokens as a flat sequence; its convolution needs their grid.
            patch = self.config.patch_size
            grid = (hidden_states.shape[-2] // patch, hidden_states.shape[-1] // patch)
            for block in self.transformer_blocks:
                block.ff.grid = grid
        return super().forward(hidden_states, *args, **kwargs)

    def set_default_attn_processor(self):
        # The parent installs `AttnProcessor`, which would silently skip the QK LayerNorms.
        self.set_attn_processor(AttnProcessor2_0())

    def initialize_weights(self) -> None:
        """PixArt's own initialisation, which diffusers does not apply.

        Xavier-uniform linears and patch embedding, small normal timestep and caption MLPs, and
        zeros for the cross-attention output projections and the final layer, so that a fresh
        model predicts zero and each block starts as (almost) the identity.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        patch = self.pos_embed.proj.weight
        nn.init.xavier_uniform_(patch.view(patch.shape[0], -1))
        nn.init.normal_(self.adaln_single.emb.timestep_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.adaln_single.emb.timestep_embedder.linear_2.weight, std=0.02)
        nn.init.normal_(self.adaln_single.linear.weight, std=0.02)
        if self.caption_projection is not None:
            nn.init.normal_(self.caption_projection.linear_1.weight, std=0.02)
            nn.init.normal_(self.caption_projection.linear_2.weight, std=0.02)
        for block in self.transformer_blocks:
            nn.init.zeros_(block.attn2.to_out[0].weight)
            nn.init.zeros_(block.attn2.to_out[0].bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        for block in self.transformer_blocks:
            if isinstance(block.ff, ConvFeedForward):
                nn.init.zeros_(block.ff.conv.weight)
                nn.init.zeros_(block.ff.conv.bias)
        pooled = getattr(self.adaln_single.emb, "caption_embedder", None)
        if pooled is not None:
            nn.init.normal_(pooled.weight, std=0.02)
        positions = getattr(self.caption_projection, "positions", None)
        if positions is not None:
            nn.init.normal_(positions, std=0.02)


class ConvFeedForward(nn.Module):
    """A block's feed-forward with a 3x3 depthwise convolution over the token grid after its first
    linear layer (SegFormer's Mix-FFN, which Sana's DiT uses too), added to that layer's output and
    zero at the start, so that a fresh model computes what PixArt's does.

    Why: two neighbouring tokens each draw their part of a small shape's edge, and attention alone
    left them a pixel apart: a notched square, which WORLD.md's fill rule no longer calls a square.
    The convolution hands every token its neighbours' states in every block. `grid` (rows, columns
    of tokens) is set by the transformer's forward before each call."""

    def __init__(self, feed_forward: nn.Module):
        super().__init__()
        first = feed_forward.net[0]
        if not isinstance(first, GELU):
            raise ValueError(f"conv_ffn needs the GELU feed-forward of PixArt's blocks, got {type(first).__name__}")
        self.net = feed_forward.net  # the same parameters under the same names, so weights load as before
        inner = first.proj.out_features
        self.conv = nn.Conv2d(inner, inner, kernel_size=3, padding=1, groups=inner)
        self.grid: tuple[int, int] | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.grid is None or self.grid[0] * self.grid[1] != hidden_states.shape[1]:
            raise ValueError(f"ConvFeedForward got {hidden_states.shape[1]} tokens for a grid of {self.grid}")
        first = self.net[0]
        hidden = first.proj(hidden_states)
        batch, tokens, channels = hidden.shape
        image = hidden.transpose(1, 2).reshape(batch, channels, *self.grid)
        hidden = hidden + self.conv(image).reshape(batch, channels, tokens).transpose(1, 2)
        hidden = first.gelu(hidden)
        for layer in self.net[1:]:
            hidden = layer(hidden)
        return hidden


class PooledCaptionTimestepEmbeddings(PixArtAlphaCombinedTimestepSizeEmbeddings):
    """PixArt's timestep (and size) embedding plus a projection of the caption's mean token state.

    PixArt conditions on text through cross-attention alone; this adds the caption to the adaLN
    modulation every block reads (as SD3 and Flux add a pooled text vector), so that what holds for
    the whole image, a colour or a count, reaches every token at once. The pooled state arrives
    through `added_cond_kwargs["pooled_caption"]` (see `diffusion.denoise`), the one input that the
    parent's forward hands on to this module unchanged."""

    def __init__(self, embedding_dim: int, size_emb_dim: int, caption_channels: int,
                 use_additional_conditions: bool = False):
        super().__init__(embedding_dim, size_emb_dim, use_additional_conditions=use_additional_conditions)
        self.caption_embedder = nn.Linear(caption_channels, embedding_dim)

    def forward(self, timestep, resolution, aspect_ratio, batch_size, hidden_dtype, pooled_caption=None):
        conditioning = super().forward(timestep, resolution, aspect_ratio, batch_size, hidden_dtype)
        if pooled_caption is None:
            raise ValueError("this transformer was built with pooled_caption: pass added_cond_kwargs['pooled_caption']")
        return conditioning + self.caption_embedder(pooled_caption.to(hidden_dtype))


class PositionedCaptionProjection(PixArtAlphaTextProjection):
    """PixArt's caption projection plus a learned embedding of each token's place in the caption.

    The text encoder's states carry their positions only as far as its layers kept them; to draw
    "a red square above a blue square", image tokens must tell the first colour from the second,
    and a position added to every caption token's key makes that a plain look-up."""

    def __init__(self, in_features: int, hidden_size: int, positions: int):
        super().__init__(in_features, hidden_size, act_fn="gelu_tanh")
        self.positions = nn.Parameter(torch.zeros(positions, hidden_size))

    def forward(self, caption):
        if caption.shape[1] > len(self.positions):
            raise ValueError(f"a caption of {caption.shape[1]} tokens, but the transformer has {len(self.positions)} "
                             "caption positions (student.max_tokens)")
        return super().forward(caption) + self.positions[: caption.shape[1]]


def pool_caption(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of a caption's valid token states (B, tokens, dim) -> (B, dim)."""
    if mask is None:
        return states.mean(dim=1)
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def has_qk_norm(model: nn.Module) -> bool:
    """True when every attention layer of the model normalises its queries and keys."""
    attentions = [m for m in model.modules() if hasattr(m, "norm_q") and hasattr(m, "processor")]
    return bool(attentions) and all(
        isinstance(a.norm_q, nn.LayerNorm) and isinstance(a.norm_k, nn.LayerNorm) for a in attentions
    )


@torch.no_grad()
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
