"""The student: a QK-norm PixArt transformer, its text encoder, its noise schedule and EMA.

In the shapes world the student works in pixel space: images in [-1, 1], 3 channels, no VAE. At
full scale it works in the latent space of a VAE (student.vae) on T5 features (student.text_encoder),
and may start from PixArt-α's weights (student.init_from). It keeps two copies of the transformer:
the one being trained and an exponential moving average of it, which is the one that draws images
for the director and for evaluation. The trainer updates the average (`trainer.EMA`, which also
keeps it per shard under FSDP).

`loss` takes images in the diffusion's own space (latents when there is a VAE): `encode_images`
turns [-1, 1] pixels into it, so that a trainer can cache the result.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from evolvedirector.student.diffusion import (
    denoise,
    sample,
    sampling_scheduler,
    training_scheduler,
    training_target,
)
from evolvedirector.student.image_space import load_image_space
from evolvedirector.student.sizes import get_size
from evolvedirector.student.text_encoder import TextEncoder
from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel


def build_transformer(size_name: str, sample_size: int, channels: int, caption_channels: int, *,
                      size_conditioning: bool | None = False, pooled_caption: bool = False,
                      caption_positions: int = 0, conv_ffn: bool = False):
    """A freshly initialised transformer for a `sample_size` grid (pixels, or latents with a VAE).

    size_conditioning None leaves it to diffusers: on when the grid is 128 wide (PixArt-α's
    1024-px multi-scale model)."""
    size = get_size(size_name)
    if sample_size % size.patch_size:
        raise ValueError(f"image size {sample_size} is not a multiple of patch size {size.patch_size}")
    if size_conditioning is None:
        size_conditioning = sample_size == 128
    if size_conditioning and size.width % 3:
        raise ValueError(f"size conditioning splits the width in three; student size {size_name!r} "
                         f"has width {size.width}")
    model = QKNormPixArtTransformer2DModel(
        num_attention_heads=size.heads, attention_head_dim=size.head_dim, in_channels=channels,
        out_channels=channels, num_layers=size.depth, cross_attention_dim=size.width,
        sample_size=sample_size, patch_size=size.patch_size, caption_channels=caption_channels,
        use_additional_conditions=size_conditioning, pooled_caption=pooled_caption,
        caption_positions=caption_positions, conv_ffn=conv_ffn,
    )
    model.initialize_weights()
    return model


@contextmanager
def loading(field: str, location: str):
    """A model that cannot be read becomes an error that names the config field and the location."""
    try:
        yield
    except OSError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"student.{field}: cannot load {location}: it is not a readable local model folder, and "
                         f"not in the hub cache (runs never download weights) ({reason[:200]})") from error


def starting_transformer(config, sample_size: int, channels: int, caption_channels: int):
    """The transformer a student starts from: fresh, or pretrained weights (student.init_from)."""
    if config.init_from is None:
        return build_transformer(config.size, sample_size, channels, caption_channels,
                                 size_conditioning=config.size_conditioning, pooled_caption=config.pooled_caption,
                                 caption_positions=config.max_tokens if config.caption_positions else 0,
                                 conv_ffn=config.conv_ffn)
    from evolvedirector.student.convert import load_transformer

    with loading("init_from", config.init_from):
        model = load_transformer(config.init_from, config.size, sample_size=sample_size)
    found = (model.config.in_channels, model.config.caption_channels)
    if found != (channels, caption_channels):
        raise ValueError(
            f"student.init_from {config.init_from} takes {found[0]} image channels and {found[1]}-dim text "
            f"features; this student has {channels} and {caption_channels} (check student.vae and student.text_encoder)"
        )
    if config.size_conditioning is not None and config.size_conditioning != model.use_additional_conditions:
        raise ValueError(f"student.size_conditioning is {config.size_conditioning} but {config.init_from} "
                         f"was built with it {'on' if model.use_additional_conditions else 'off'}")
    if config.caption_positions and not model.config.get("caption_positions", 0):
        raise ValueError(f"student.caption_positions is true but {config.init_from} was built without them")
    if config.conv_ffn and not model.config.get("conv_ffn", False):
        raise ValueError(f"student.conv_ffn is true but {config.init_from} was built without it")
    if config.pooled_caption and not model.config.get("pooled_caption", False):
        raise ValueError(f"student.pooled_caption is true but {config.init_from} was built without it "
                         "(a pretrained PixArt-α transformer has no pooled-caption projection)")
    return model.train()


def to_device(t: torch.Tensor, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
    """`t` on `device`. A plain copy from a CPU tensor to a GPU waits for the GPU to finish all it
    was given (pageable memory: the copy synchronises the stream); with `non_blocking` it goes
    through pinned memory and returns at once (torch keeps the pinned block until the copy is done)."""
    device = torch.device(device)
    if non_blocking and t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_pixels(x: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] tensors (B, 3, H, W) to uint8 arrays (H, W, 3)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [img.permute(1, 2, 0).cpu().numpy() for img in x]


def from_pixels(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def draw_timesteps(count: int, total: int, power: float, generator: torch.Generator) -> torch.Tensor:
    """`count` training timesteps in [0, total): uniform for power 1 (PixArt-α's), else total * u ** power
    for uniform u, whose density grows as t ** (1 / power - 1): below 1, more of the noisy steps, where
    a scene's layout and colours are decided, and fewer nearly clean ones."""
    if power == 1.0:
        return torch.randint(0, total, (count,), generator=generator)
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    return (u.pow(power) * total).long().clamp(0, total - 1)


def edge_weights(images: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """(B, 1, H, W) weights of each pixel's squared error: 1 + edge_weight on both sides of an edge of
    the clean image (a pixel that differs from a 4-neighbour by more than 0.1 in some channel, in
    [-1, 1]), 1 elsewhere, scaled so that every image's weights average 1 (the loss keeps its
    scale, and an image with many edges counts no more than one with few).

    Why: with plain MSE a small square's edges are a few pixels among a thousand; neighbouring
    patches drew them a pixel apart, a notch that costs little in the loss and everything in the
    shape (WORLD.md's square needs a fill ratio of 0.95)."""
    differs_x = (images[..., :, 1:] - images[..., :, :-1]).abs().amax(dim=1, keepdim=True) > 0.1
    differs_y = (images[..., 1:, :] - images[..., :-1, :]).abs().amax(dim=1, keepdim=True) > 0.1
    edge = torch.zeros((images.shape[0], 1, *images.shape[-2:]), dtype=torch.bool, device=images.device)
    edge[..., :, 1:] |= differs_x
    edge[..., :, :-1] |= differs_x
    edge[..., 1:, :] |= differs_y
    edge[..., :-1, :] |= differs_y
    weights = 1.0 + edge_weight * edge.float()
    return weights / weights.mean(dim=(1, 2, 3), keepdim=True)


class Student:
    def __init__(self, config, image_size: int, text_encoder: TextEncoder | None = None, space=None):
        """`text_encoder` and `space` (the diffusion's image space) default to the config's."""
        self.config = config
        self.image_size = image_size  # the default square side in pixels; generate() takes others
        if space is None:
            with loading("vae", config.vae):
                space = load_image_space(config.vae)
        self.space = space
        self.channels = self.space.channels
        cell = self.space.pixels_per_cell
        if image_size % cell:
            raise ValueError(f"image size {image_size} is not a multiple of the VAE's downscaling factor {cell}")
        if text_encoder is None:
            with loading("text_encoder", config.text_encoder):
                text_encoder = TextEncoder(config.text_encoder, max_tokens=config.max_tokens)
        self.text = text_encoder
        self.model = starting_transformer(config, image_size // cell, self.channels, self.text.dim)
        self.size_conditioning = bool(self.model.use_additional_conditions)
        self.pooled_caption = bool(self.model.config.get("pooled_caption", False))
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.noise = training_scheduler(config.beta_schedule, config.prediction_type)
        self.null_text = self.text.encode([""])  # the unconditional caption for dropout and guidance
        # A caption mask with every token valid, dropped: cross-attention then takes no mask, so
        # SDPA may use the flash kernel (a mask rules it out, and the memory-efficient kernel expands
        # it to batch x heads x image tokens x caption tokens). None: on CUDA only; on a CPU the
        # mask stays, as it always was.
        self.drop_full_masks: bool | None = None

    def denoise(self, model, x, t, states, mask) -> torch.Tensor:
        return denoise(model, x, t, states, mask, size_conditioning=self.size_conditioning,
                       pixels_per_cell=self.space.pixels_per_cell, pooled_caption=self.pooled_caption)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels (B, 3, H, W) to the space the diffusion runs in (the same tensor without a VAE)."""
        return self.space.encode(images)

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """The diffusion grid for an image of height x width pixels."""
        multiple = self.space.pixels_per_cell * self.model.config.patch_size
        if height % multiple or width % multiple:
            raise ValueError(f"image size {height}x{width} is not a multiple of {multiple} "
                             "(VAE downscaling x patch size)")
        return height // self.space.pixels_per_cell, width // self.space.pixels_per_cell

    def loss(self, model, images: torch.Tensor, prompts: list[str], generator: torch.Generator,
             caption_dropout: float, *, timestep_power: float = 1.0, non_blocking: bool = False) -> torch.Tensor:
        """Mean squared error of the model's prediction (v, epsilon or the clean image) at random noise levels.

        `images` are in the diffusion's space (see `encode_images`), all of one size: with size
        conditioning that size, in pixels, is the resolution the transformer is told. The caption
        dropout is applied where the text features are (the cache's CPU tensors), then captions,
        noise and timesteps go to the images' device, without waiting for it with `non_blocking`.
        Timesteps are uniform with `timestep_power` 1, else drawn as T * u ** timestep_power
        (see `draw_timesteps`)."""
        device = images.device
        states, mask = self.text.encode(prompts)
        drop = (torch.rand(len(prompts), generator=generator) < caption_dropout).to(states.device)
        null_states, null_mask = (t.to(states.device) for t in self.null_text)
        states = torch.where(drop[:, None, None], null_states, states)
        mask = torch.where(drop[:, None], null_mask, mask)
        drop_full = device.type == "cuda" if self.drop_full_masks is None else self.drop_full_masks
        if drop_full and mask.device.type == "cpu" and bool(mask.all()):  # on the CPU: no device sync
            mask = None
        noise = torch.randn(images.shape, generator=generator)
        timesteps = draw_timesteps(len(prompts), self.noise.config.num_train_timesteps, timestep_power, generator)
        states, noise, timesteps = (to_device(t, device, non_blocking) for t in (states, noise, timesteps))
        mask = None if mask is None else to_device(mask, device, non_blocking)
        noisy = self.noise.add_noise(images, noise, timesteps)
        target = training_target(self.noise, images, noise, timesteps)
        prediction = self.denoise(model, noisy, timesteps, states, mask)
        squared = (prediction.float() - target.float()).pow(2)
        if self.config.edge_weight:
            squared = squared * edge_weights(images, self.config.edge_weight)
        per_sample = squared.mean(dim=(1, 2, 3))
        return (per_sample * self._loss_weights(timesteps)).mean()

    def _loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weighting (Hang et al., 2023): stop the many nearly-clean timesteps from
        dominating the gradient; it speeds convergence several-fold. 1 everywhere when disabled."""
        gamma = self.config.snr_gamma
        if gamma is None:
            return torch.ones(len(timesteps), device=timesteps.device)
        alphas = self.noise.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alphas / (1 - alphas)
        clipped = torch.clamp(snr, max=gamma)
        # The weight on the epsilon-space error is min(snr, gamma) / snr; v and x0 errors are
        # that error scaled by (snr + 1) / snr and 1 / snr.
        per_prediction = {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}
        return clipped / per_prediction[self.config.prediction_type]

    @torch.no_grad()
    def generate(self, prompts: list[str], *, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 64,
                 height: int | None = None, width: int | None = None) -> list[np.ndarray]:
        """Images for prompts, drawn by the EMA weights with DPM-Solver and classifier-free guidance,
        height x width pixels (default: the square image_size)."""
        steps = steps or self.config.sample_steps
        guidance = self.config.guidance if guidance is None else guidance
        grid = self.grid_shape(height or self.image_size, width or self.image_size)
        generator = torch.Generator().manual_seed(seed)
        images: list[np.ndarray] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            device = next(self.ema_model.parameters()).device
            cond = tuple(t.to(device) for t in self.text.encode(chunk))
            uncond = tuple(t.to(device).expand_as(c) for t, c in zip(self.null_text, cond))
            x = sample(
                lambda x, t, s, m: self.denoise(self.ema_model, x, t, s, m),
                sampling_scheduler(self.noise), cond, uncond,
                (len(chunk), self.channels, *grid), steps, guidance, generator,
            )
            images.extend(to_pixels(self.space.decode(x)))
        return images

    def save_weights(self, folder: Path) -> None:
        self.model.save_pretrained(Path(folder) / "transformer")
        self.ema_model.save_pretrained(Path(folder) / "transformer_ema")

    def load_weights(self, folder: Path) -> None:
        folder = Path(folder)
        for name, target in (("transformer", self.model), ("transformer_ema", self.ema_model)):
            loaded = QKNormPixArtTransformer2DModel.from_pretrained(folder / name)
            target.load_state_dict(loaded.state_dict())
