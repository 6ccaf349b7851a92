"""Training targets and sampling: DDPM noise, v-prediction, DPM-Solver with guidance.

v-prediction rather than epsilon: in pixel space with a few-million-parameter student and a
budget of minutes, epsilon prediction learned to output saturated noise that ignored the
caption, while v-prediction learned colours and layout. The schedule is shared between the
training noise (DDPMScheduler) and the sampler (DPMSolverMultistepScheduler).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler


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
    x = torch.randn(shape, generator=generator).to(cond[0].device) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    states = torch.cat([uncond[0], cond[0]])
    mask = torch.cat([uncond[1], cond[1]])
    for t in scheduler.timesteps:
        out_uncond, out_cond = denoise(torch.cat([x, x]), t.expand(2 * shape[0]), states, mask).chunk(2)
        guided = out_uncond + guidance * (out_cond - out_uncond)
        x = scheduler.step(guided, t, x).prev_sample
    return x
