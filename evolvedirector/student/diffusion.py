"""Training targets and sampling: DDPM noise, v-prediction, DPM-Solver with guidance.

v-prediction rather than epsilon: in pixel space with a few-million-parameter student and a
budget of minutes, epsilon prediction learned to output saturated noise that ignored the
caption, while v-prediction learned colours and layout. The schedule is shared between the
training noise (DDPMScheduler) and the sampler (DPMSolverMultistepScheduler).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from evolvedirector.student.transformer import pool_caption


def training_scheduler(beta_schedule: str, prediction_type: str, steps: int = 1000) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=steps, beta_schedule=beta_schedule, prediction_type=prediction_type)


def sampling_scheduler(train: DDPMScheduler) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        num_train_timesteps=train.config.num_train_timesteps,
        beta_schedule=train.config.beta_schedule,
        prediction_type=train.config.prediction_type,
        algorithm_type="dpmsolver++",
        solver_order=2,
    )


def denoise(model, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, *,
            size_conditioning: bool = False, pixels_per_cell: int = 1, pooled_caption: bool = False) -> torch.Tensor:
    """The transformer's prediction for x at timesteps t, called through `model(...)` so that a
    DDP/FSDP wrapper sees the forward pass.

    With size conditioning (PixArt-α's multi-scale model) the transformer also reads the image's
    size in pixels, (height, width), and its height/width ratio, as diffusers' PixArt pipeline
    passes them. Checkpoints that learned the variance (PixArt-α's, 2x the channels) also return
    it; only the first half, the mean prediction, is used. A transformer built with
    `pooled_caption` also reads the mean of the caption's valid token states.
    """
    added = {"resolution": None, "aspect_ratio": None}
    if size_conditioning:
        height, width = x.shape[-2] * pixels_per_cell, x.shape[-1] * pixels_per_cell
        batch = x.shape[0]
        added = {
            "resolution": torch.tensor([[height, width]], dtype=x.dtype, device=x.device).expand(batch, 2),
            "aspect_ratio": torch.tensor([[height / width]], dtype=x.dtype, device=x.device).expand(batch, 1),
        }
    if pooled_caption:
        added["pooled_caption"] = pool_caption(states, mask)
    out = model(x, encoder_hidden_states=states, timestep=t, encoder_attention_mask=mask,
                added_cond_kwargs=added).sample
    if out.shape[1] == 2 * x.shape[1]:
        out = out[:, : x.shape[1]]
    return out


def training_target(scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    if scheduler.config.prediction_type == "epsilon":
        return noise
    if scheduler.config.prediction_type == "sample":
        return clean
    raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")


@torch.no_grad()
def sample(
    denoise,  # (x, t, states, mask) -> model output
    scheduler: DPMSolverMultistepScheduler,
    cond: tuple[torch.Tensor, torch.Tensor],
    uncond: tuple[torch.Tensor, torch.Tensor],
    shape: tuple[int, ...],
    steps: int,
    guidance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw images with classifier-free guidance: uncond + g * (cond - uncond)."""
    # Noise is drawn where the generator lives (the CPU by default), so a seed means the same images everywhere.
    x = torch.randn(shape, generator=generator, device=generator.device).to(cond[0].device) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps, device=x.device)  # the timesteps go to the model: on its device
    states = torch.cat([uncond[0], cond[0]])
    mask = torch.cat([uncond[1], cond[1]])
    for t in scheduler.timesteps:
        out_uncond, out_cond = denoise(torch.cat([x, x]), t.expand(2 * shape[0]), states, mask).chunk(2)
        guided = out_uncond + guidance * (out_cond - out_uncond)
        x = scheduler.step(guided, t, x).prev_sample
    return x
