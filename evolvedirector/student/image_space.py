"""Where the student's diffusion runs: pixels (the shapes world) or the latents of a VAE (full scale).

Both take and return images as float tensors (B, 3, H, W) in [-1, 1]. The latent space is the SD
VAE's at full scale, as in PixArt-α: 4 channels at 1/8 of the image side, latents multiplied by
the VAE's `scaling_factor` (0.18215) so that they have about unit variance, and divided by it
again before decoding.
"""

from __future__ import annotations

from pathlib import Path

import torch


class PixelSpace:
    channels = 3
    pixels_per_cell = 1  # image pixels per side of one cell of the diffusion grid

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to(self, device) -> "PixelSpace":
        return self


class LatentSpace:
    def __init__(self, location: str | Path):
        from diffusers import AutoencoderKL

        folder = Path(location)
        if folder.exists():
            # A diffusers pipeline folder holds the VAE in vae/; a VAE's own folder holds config.json.
            subfolder = "vae" if (folder / "vae" / "config.json").is_file() else None
            if subfolder is None and not (folder / "config.json").is_file():
                raise ValueError(f"student.vae: {folder} holds neither config.json nor vae/config.json")
            vae = AutoencoderKL.from_pretrained(str(location), subfolder=subfolder)
        else:  # a hub id: a pipeline repository (vae/ in it) or a VAE's own
            try:
                vae = AutoencoderKL.from_pretrained(str(location), subfolder="vae")
            except OSError:
                vae = AutoencoderKL.from_pretrained(str(location))
        self.vae = vae.eval().requires_grad_(False)
        self.channels = self.vae.config.latent_channels
        self.pixels_per_cell = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scale = self.vae.config.scaling_factor

    def to(self, device) -> "LatentSpace":
        self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled latents of images in [-1, 1]. The posterior's mean, not a draw from it: features are
        cached and re-used for many steps, and the SD VAE's posterior is nearly deterministic."""
        device = next(self.vae.parameters()).device
        latents = self.vae.encode(images.to(device, self.vae.dtype)).latent_dist.mean
        return latents.float() * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        device = next(self.vae.parameters()).device
        return self.vae.decode((latents / self.scale).to(device, self.vae.dtype)).sample.float()


def load_image_space(vae: str | Path | None) -> PixelSpace | LatentSpace:
    return PixelSpace() if vae is None else LatentSpace(vae)
