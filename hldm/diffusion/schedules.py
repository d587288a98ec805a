"""Noise schedules and the diffusers schedulers the samplers step with.

H-LDM trains with the cosine schedule of Nichol & Dhariwal (2021, "Improved
DDPM", eq. 17): alpha_bar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2,
with each beta_t = 1 - alpha_bar(t)/alpha_bar(t-1) clipped at 0.999. diffusers
calls the same schedule "squaredcos_cap_v2"; `cosine_alphas_cumprod` is the pure
version the training loss uses, and a test checks the two agree, so the model is
sampled under exactly the schedule it was trained on.
"""
from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

SAMPLERS = ("ddpm", "ddim", "dpmpp")
PREDICTION_TYPES = ("epsilon", "v_prediction")
MAX_BETA = 0.999


def cosine_alphas_cumprod(n: int, s: float = 0.008) -> torch.Tensor:
    """alpha_bar_t for t = 0..n-1 under the clipped cosine schedule, float64 (n,)."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")

    def f(step: float) -> float:
        return math.cos((step / n + s) / (1 + s) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f(i + 1) / f(i), MAX_BETA) for i in range(n)], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type: unknown value {prediction_type!r}; "
                         f"allowed: {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def make_scheduler(name: str, n_train: int = 1000, prediction_type: str = "epsilon"):
    """A fresh diffusers scheduler for sampler `name` ("ddpm", "ddim", "dpmpp") on the cosine schedule.

    Schedulers keep per-run state (DPM-Solver++ keeps its past model outputs), so
    every sampling run gets its own. "leading" timestep spacing: a run of n steps starts
    at t = (n_train // n) * (n - 1), not at n_train - 1. The clipped cosine schedule
    ends at alpha_bar ~ 2e-9, where an epsilon-prediction model implies x0 with its
    error multiplied by ~2e4; "trailing" spacing (Lin et al. 2024) assumes v-prediction
    and made the shipped cpu model's latents ~3000x too large. Blown-up x0 predictions
    are also clamped (hldm.diffusion.samplers.X0_LIMIT), not clipped to [-1, 1]: latents
    are unbounded.
    """
    check_prediction_type(prediction_type)
    common = dict(num_train_timesteps=n_train, beta_schedule="squaredcos_cap_v2",
                  prediction_type=prediction_type, timestep_spacing="leading")
    if name == "ddpm":
        return DDPMScheduler(clip_sample=False, variance_type="fixed_small", **common)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    if name == "dpmpp":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                           lower_order_final=True, **common)
    raise ValueError(f"sampler: unknown value {name!r}; allowed: {', '.join(SAMPLERS)}")
