"""The student: a QK-norm PixArt transformer, its text encoder, its noise schedule and EMA.

In the shapes world the student works in pixel space: images in [-1, 1], 3 channels, no VAE.
It keeps two copies of the transformer: the one being trained and an exponential moving average
of it, which is the one that draws images for the director and for evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from evolvedirector.student.diffusion import sample, sampling_scheduler, training_scheduler, training_target
from evolvedirector.student.sizes import get_size
from evolvedirector.student.text_encoder import TextEncoder
from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel


def build_transformer(size_name: str, image_size: int, channels: int, caption_channels: int):
    size = get_size(size_name)
    if image_size % size.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of patch size {size.patch_size}")
    model = QKNormPixArtTransformer2DModel(
        num_attention_heads=size.heads, attention_head_dim=size.head_dim, in_channels=channels,
        out_channels=channels, num_layers=size.depth, cross_attention_dim=size.width,
        sample_size=image_size, patch_size=size.patch_size, caption_channels=caption_channels,
        use_additional_conditions=False,
    )
    model.initialize_weights()
    return model


def to_pixels(x: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] tensors (B, 3, H, W) to uint8 arrays (H, W, 3)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [img.permute(1, 2, 0).cpu().numpy() for img in x]


def from_pixels(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


class Student:
    def __init__(self, config, image_size: int, text_encoder: TextEncoder | None = None):
        self.config = config
        self.image_size = image_size
        self.channels = 3
        self.text = text_encoder or TextEncoder(max_tokens=config.max_tokens)
        self.model = build_transformer(config.size, image_size, self.channels, self.text.dim)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.noise = training_scheduler(config.beta_schedule, config.prediction_type)
        self.null_text = self.text.encode([""])  # the unconditional caption for dropout and guidance

    @staticmethod
    def denoise(model, x, t, states, mask) -> torch.Tensor:
        return model(
            x, encoder_hidden_states=states, timestep=t, encoder_attention_mask=mask,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample

    def loss(self, model, images: torch.Tensor, prompts: list[str], generator: torch.Generator,
             caption_dropout: float) -> torch.Tensor:
        """Mean squared error of the model's v (or epsilon) prediction at random noise levels."""
        states, mask = (t.to(images.device) for t in self.text.encode(prompts))
        drop = (torch.rand(len(prompts), generator=generator) < caption_dropout).to(images.device)
        null_states, null_mask = (t.to(images.device) for t in self.null_text)
        states = torch.where(drop[:, None, None], null_states, states)
        mask = torch.where(drop[:, None], null_mask, mask)
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        timesteps = torch.randint(0, self.noise.config.num_train_timesteps, (len(prompts),), generator=generator)
        timesteps = timesteps.to(images.device)
        noisy = self.noise.add_noise(images, noise, timesteps)
        target = training_target(self.noise, images, noise, timesteps)
        prediction = self.denoise(model, noisy, timesteps, states, mask)
        per_sample = (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
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
    def update_ema(self, model, step: int) -> None:
        # The warm-up keeps early EMA weights from being mostly the random initialisation.
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        ema_params = list(self.ema_model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)

    @torch.no_grad()
    def generate(self, prompts: list[str], *, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 64) -> list[np.ndarray]:
        """Images for prompts, drawn by the EMA weights with DPM-Solver and classifier-free guidance."""
        steps = steps or self.config.sample_steps
        guidance = self.config.guidance if guidance is None else guidance
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
                (len(chunk), self.channels, self.image_size, self.image_size), steps, guidance, generator,
            )
            images.extend(to_pixels(x))
        return images

    def save_weights(self, folder: Path) -> None:
        self.model.save_pretrained(Path(folder) / "transformer")
        self.ema_model.save_pretrained(Path(folder) / "transformer_ema")

    def load_weights(self, folder: Path) -> None:
        folder = Path(folder)
        for name, target in (("transformer", self.model), ("transformer_ema", self.ema_model)):
            loaded = QKNormPixArtTransformer2DModel.from_pretrained(folder / name)
            target.load_state_dict(loaded.state_dict())
