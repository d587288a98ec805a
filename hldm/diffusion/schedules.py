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

SAMPLERS = ("ddpm", "ddim", "dpmpp", "dpmpp_sde", "dpmpp3", "unipc")
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
    """A fresh diffusers scheduler for sampler `name` (SAMPLERS) on the cosine schedule.

    "dpmpp" is DPM-Solver++(2M), "dpmpp_sde" its stochastic variant (SDE-DPM-Solver++(2M),
    Lu et al. 2022), which re-injects seeded noise each step like DDPM, "dpmpp3" the
    third-order multistep DPM-Solver++(3M), and "unipc" UniPC-2 (Zhao et al. 2023: a
    predictor-corrector that reuses the model output it already has, so a step costs one
    model call, made for 5-10 step sampling). Schedulers keep
    per-run state (DPM-Solver++ keeps its past model outputs), so every sampling run gets
    its own.

    Timestep spacing follows the parameterisation. The clipped cosine schedule ends at
    alpha_bar ~ 2e-9, where an epsilon-prediction model implies x0 with its error
    multiplied by ~2e4: "trailing" spacing (a run starts at t = n_train - 1) made the
    epsilon cpu model's latents ~3000x too large, so epsilon models use "leading" (a run
    of n steps starts at (n_train // n) * (n - 1)). A v-prediction model is well defined
    at the last step, so it starts from pure noise as it was trained ("trailing", Lin et
    al. 2024): on the shipped v model (DPM-Solver++ 20 steps, 32 held-out clips, floor 6.4)
    FAD 18.3 / 18.0 leading vs 18.0 / 11.4 / 13.0 trailing over seeds 0 / 1 / 2 (the SDE
    variant, trailing: 15.5 / 13.4 / 13.2). Blown-up x0 predictions are also clamped
    (hldm.diffusion.samplers.X0_LIMIT), not clipped to [-1, 1]: latents are unbounded.
    """
    # Imported here: diffusers costs ~3 s of CPU to import (its utils pull in scipy.stats and sympy),
    # which the app's page would otherwise wait for before it is served.
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    check_prediction_type(prediction_type)
    spacing = "trailing" if prediction_type == "v_prediction" else "leading"
    common = dict(num_train_timesteps=n_train, beta_schedule="squaredcos_cap_v2",
                  prediction_type=prediction_type, timestep_spacing=spacing)
    if name == "ddpm":
        return DDPMScheduler(clip_sample=False, variance_type="fixed_small", **common)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    if name in ("dpmpp", "dpmpp_sde", "dpmpp3"):
        return DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++" if name == "dpmpp_sde" else "dpmsolver++",
                                           solver_order=3 if name == "dpmpp3" else 2, lower_order_final=True,
                                           **common)
    if name == "unipc":
        return UniPCMultistepScheduler(solver_order=2, lower_order_final=True, **common)
    raise ValueError(f"sampler: unknown value {name!r}; allowed: {', '.join(SAMPLERS)}")
