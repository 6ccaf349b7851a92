"""Starting points for the student: PixArt-α weights in diffusers' layout or in the original `.pth` one.

A diffusers folder (saved by `PixArtTransformer2DModel.save_pretrained`, or a pipeline folder with
transformer/ in it) loads directly into the QK-norm subclass: the Q and K LayerNorms have no
affine weights, so the checkpoint has nothing to miss, and a plain PixArt-α then simply starts
normalising its queries and keys (the official EvolveDirector code makes the same change when it
starts from PixArt-α).

The original PixArt-α / EvolveDirector checkpoints are `.pth` files holding {'state_dict': ...}
(and often 'state_dict_ema') with the original module names. The mapping to diffusers' names:

    x_embedder.proj                  -> pos_embed.proj
    t_embedder.mlp.0 / .2            -> adaln_single.emb.timestep_embedder.linear_1 / linear_2
    t_block.1                        -> adaln_single.linear
    csize_embedder.mlp.0 / .2        -> adaln_single.emb.resolution_embedder.linear_1 / linear_2  (1024 px)
    ar_embedder.mlp.0 / .2           -> adaln_single.emb.aspect_ratio_embedder.linear_1 / linear_2
    y_embedder.y_proj.fc1 / fc2      -> caption_projection.linear_1 / linear_2
    blocks.N.attn.qkv                -> transformer_blocks.N.attn1.to_q / to_k / to_v  (rows split in 3, q k v)
    blocks.N.attn.proj               -> transformer_blocks.N.attn1.to_out.0
    blocks.N.cross_attn.q_linear     -> transformer_blocks.N.attn2.to_q
    blocks.N.cross_attn.kv_linear    -> transformer_blocks.N.attn2.to_k / to_v  (rows split in 2, k v)
    blocks.N.cross_attn.proj         -> transformer_blocks.N.attn2.to_out.0
    blocks.N.mlp.fc1 / fc2           -> transformer_blocks.N.ff.net.0.proj / ff.net.2
    blocks.N.scale_shift_table       -> transformer_blocks.N.scale_shift_table
    final_layer.linear               -> proj_out
    final_layer.scale_shift_table    -> scale_shift_table

Dropped: `pos_embed` (a fixed sin-cos table that diffusers recomputes for every image size) and
`y_embedder.y_embedding` (PixArt's learned empty caption; diffusers and this student guide with the
text encoder's features of "" instead). The number of heads is not in the weights: it comes from
the size named in the registry.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from evolvedirector.student.sizes import StudentSize, get_size
from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel

_DROPPED = ("pos_embed", "y_embedder.y_embedding")


def read_checkpoint(path: str | Path, *, ema: bool = True) -> dict[str, torch.Tensor]:
    """The model weights of an original-layout `.pth`: its EMA weights when it has them and `ema`
    is set, else its 'state_dict'. Loaded with weights_only=True: a checkpoint never runs code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers; it is refused rather than "
            f"unpickled (weights_only=True): {error}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold a dict of weights (found {type(checkpoint).__name__})")
    if ema and isinstance(checkpoint.get("state_dict_ema"), dict):
        state = checkpoint["state_dict_ema"]
    elif isinstance(checkpoint.get("state_dict"), dict):
        state = checkpoint["state_dict"]
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint  # a bare state dict
    else:
        raise ValueError(f"{path} has no 'state_dict' (keys: {', '.join(map(str, list(checkpoint)[:8]))})")
    # A checkpoint saved from a DDP-wrapped model prefixes every name with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def official_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and split the fused q/k/v projections of) an original-layout PixArt-α state dict."""
    remaining = dict(state)
    converted: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in remaining:
            raise KeyError(f"checkpoint lacks {name!r}: not PixArt-α's original layout")
        return remaining.pop(name)

    def move(source: str, target: str) -> None:
        for kind in ("weight", "bias"):
            converted[f"{target}.{kind}"] = take(f"{source}.{kind}")

    move("x_embedder.proj", "pos_embed.proj")
    move("t_embedder.mlp.0", "adaln_single.emb.timestep_embedder.linear_1")
    move("t_embedder.mlp.2", "adaln_single.emb.timestep_embedder.linear_2")
    move("t_block.1", "adaln_single.linear")
    move("y_embedder.y_proj.fc1", "caption_projection.linear_1")
    move("y_embedder.y_proj.fc2", "caption_projection.linear_2")
    if "csize_embedder.mlp.0.weight" in remaining:
        for source, target in (("csize_embedder", "resolution_embedder"), ("ar_embedder", "aspect_ratio_embedder")):
            move(f"{source}.mlp.0", f"adaln_single.emb.{target}.linear_1")
            move(f"{source}.mlp.2", f"adaln_single.emb.{target}.linear_2")

    for index in range(count_blocks(state)):
        old, new = f"blocks.{index}", f"transformer_blocks.{index}"
        for kind in ("weight", "bias"):
            # Fused projections stack their outputs: rows [q; k; v] and [k; v].
            q, k, v = take(f"{old}.attn.qkv.{kind}").chunk(3, dim=0)
            converted.update({f"{new}.attn1.to_q.{kind}": q, f"{new}.attn1.to_k.{kind}": k,
                              f"{new}.attn1.to_v.{kind}": v})
            k, v = take(f"{old}.cross_attn.kv_linear.{kind}").chunk(2, dim=0)
            converted.update({f"{new}.attn2.to_k.{kind}": k, f"{new}.attn2.to_v.{kind}": v})
        move(f"{old}.attn.proj", f"{new}.attn1.to_out.0")
        move(f"{old}.cross_attn.q_linear", f"{new}.attn2.to_q")
        move(f"{old}.cross_attn.proj", f"{new}.attn2.to_out.0")
        move(f"{old}.mlp.fc1", f"{new}.ff.net.0.proj")
        move(f"{old}.mlp.fc2", f"{new}.ff.net.2")
        converted[f"{new}.scale_shift_table"] = take(f"{old}.scale_shift_table")

    move("final_layer.linear", "proj_out")
    converted["scale_shift_table"] = take("final_layer.scale_shift_table")
    for name in _DROPPED:
        remaining.pop(name, None)
    if remaining:
        raise KeyError(f"checkpoint has names this conversion does not know: {', '.join(sorted(remaining)[:10])}")
    return converted


def count_blocks(state: dict[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not indices:
        raise KeyError("checkpoint has no blocks.N.* weights: not PixArt-α's original layout")
    if indices != set(range(len(indices))):
        raise KeyError(f"checkpoint's blocks are not numbered 0..{len(indices) - 1}")
    return len(indices)


def transformer_from_official(state: dict[str, torch.Tensor], size: StudentSize,
                              sample_size: int | None = None) -> QKNormPixArtTransformer2DModel:
    """A QK-norm transformer with the weights of an original-layout state dict.

    `sample_size` is the latent side the model was trained at (64 for 512 px, 128 for 1024 px); by
    default it is read from the checkpoint's `pos_embed` table (tokens = (side / patch)²)."""
    patch_weight = state["x_embedder.proj.weight"]  # (width, in_channels, patch, patch)
    width, in_channels, patch = patch_weight.shape[0], patch_weight.shape[1], patch_weight.shape[2]
    depth = count_blocks(state)
    if (depth, width, patch) != (size.depth, size.width, size.patch_size):
        raise ValueError(
            f"checkpoint is depth {depth}, width {width}, patch {patch}; the size asked for is depth "
            f"{size.depth}, width {size.width}, patch {size.patch_size}"
        )
    if sample_size is None:
        if "pos_embed" not in state:
            raise ValueError("checkpoint has no pos_embed table to read its image size from; pass sample_size")
        side = round(state["pos_embed"].shape[-2] ** 0.5)
        sample_size = side * patch
    out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    model = QKNormPixArtTransformer2DModel(
        num_attention_heads=size.heads, attention_head_dim=size.head_dim, in_channels=in_channels,
        out_channels=out_channels, num_layers=depth, cross_attention_dim=width, sample_size=sample_size,
        patch_size=patch, caption_channels=state["y_embedder.y_proj.fc1.weight"].shape[1],
        use_additional_conditions="csize_embedder.mlp.0.weight" in state,
    )
    model.load_state_dict(official_to_diffusers(state), strict=True)
    return model.eval()


def load_transformer(location: str | Path, size_name: str | None = None,
                     sample_size: int | None = None) -> QKNormPixArtTransformer2DModel:
    """A starting point from a diffusers folder (transformer or pipeline), a hub id, or a `.pth`."""
    location = str(location)
    if location.endswith((".pth", ".pt")):
        if size_name is None:
            raise ValueError(f"converting {location} needs a size (the number of heads is not in the weights)")
        return transformer_from_official(read_checkpoint(location), get_size(size_name), sample_size)
    folder = Path(location)
    if folder.exists():
        subfolder = "transformer" if (folder / "transformer" / "config.json").is_file() else None
        if subfolder is None and not (folder / "config.json").is_file():
            raise ValueError(f"student.init_from: {folder} holds neither config.json nor transformer/config.json")
        model = QKNormPixArtTransformer2DModel.from_pretrained(location, subfolder=subfolder)
    else:  # a hub id: a pipeline repository (transformer/ in it) or a transformer's own
        try:
            model = QKNormPixArtTransformer2DModel.from_pretrained(location, subfolder="transformer")
        except OSError:
            model = QKNormPixArtTransformer2DModel.from_pretrained(location)
    if size_name is not None:
        check_size(model, get_size(size_name), location)
    return model


def check_size(model: QKNormPixArtTransformer2DModel, size: StudentSize, origin: str) -> None:
    config = model.config
    found = (config.num_layers, config.num_attention_heads * config.attention_head_dim,
             config.num_attention_heads, config.patch_size)
    if found != (size.depth, size.width, size.heads, size.patch_size):
        raise ValueError(
            f"{origin} is depth {found[0]}, width {found[1]}, {found[2]} heads, patch {found[3]}; student.size "
            f"asks for depth {size.depth}, width {size.width}, {size.heads} heads, patch {size.patch_size}"
        )
