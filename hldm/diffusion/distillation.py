"""Guided step distillation: the targets a few-step student learns from a guided many-step teacher.

Progressive distillation (Salimans & Ho 2022) teaches a student to cover in one DDIM step what
the teacher covers in several; guided distillation (Meng et al. 2023) folds classifier-free
guidance into the student, so each of its steps is one forward of batch 1 instead of the CFG
batch of 2. Here both in one jump: the student samples with `steps` DDIM steps at guidance 1
(sampler "ddim", the diffusers scheduler), and at each of its timesteps t it learns the x0 whose
DDIM step t -> s lands where `substeps` guided DPM-Solver++(2M) steps of the teacher land
(Salimans & Ho eq. 8 for the x0 that makes a DDIM step hit a given point). Only the student's
own `steps` timesteps are trained: that is all it is ever asked at.

Timesteps may be -1: the clean end of the last step, where alpha_bar is 1 (DDIM's
set_alpha_to_one). Every tensor below is (B, C, L) unless said; t and s are (B,) integer.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from hldm.diffusion.schedules import make_scheduler

X0Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> the teacher's guided x0


def student_grid(n_train: int, steps: int, prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, s) (steps,) each: the student's timesteps as the "ddim" scheduler visits them for a model of
    `prediction_type` (whose timestep spacing it decides), and where its step from each lands
    (diffusers' DDIM steps to t - n_train // steps; -1 is the clean end)."""
    scheduler = make_scheduler("ddim", n_train, prediction_type)
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps.long()
    return t, (t - n_train // steps).clamp_min(-1)


def _ab(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alpha_bar), sqrt(1 - alpha_bar) at t (B,) >= -1, shaped (B, 1, 1)."""
    abar = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod]).to(like.device)[t.long() + 1].to(like.dtype)
    return abar.sqrt().reshape(-1, 1, 1), (1 - abar).clamp_min(0).sqrt().reshape(-1, 1, 1)


def _half_log_snr(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma) at t, (B, 1, 1); +inf at the clean end."""
    a, s = _ab(alphas_cumprod, t, like)
    return torch.log(a / s)


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM from t to s < t given the clean-latent prediction x0."""
    a_t, s_t = _ab(alphas_cumprod, t, x_t)
    a_s, s_s = _ab(alphas_cumprod, s, x_t)
    return a_s * x0 + s_s * (x_t - a_t * x0) / s_t


def x0_for_step(x_t: torch.Tensor, x_s: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The x0 whose DDIM step t -> s takes x_t to x_s (the inverse of `ddim_step` in x0)."""
    a_t, s_t = _ab(alphas_cumprod, t, x_t)
    a_s, s_s = _ab(alphas_cumprod, s, x_t)
    r = s_s / s_t
    return (x_s - r * x_t) / (a_s - r * a_t)


def teacher_steps(x0_fn: X0Fn, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor, substeps: int,
                  alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_s after `substeps` DPM-Solver++(2M) steps of the teacher from t to s, evenly spaced.

    DPM-Solver++(2M) (Lu et al. 2022, data prediction): the first step is DDIM; later ones
    extrapolate x0 from this and the previous step's, D = (1 + 1/2r) x0 - (1/2r) x0_prev with
    r = h_prev / h, h the step in log-SNR. A step to the clean end stays first order (as
    diffusers' lower_order_final), where the log-SNR step is infinite.
    """
    x, prev = x_t, None
    for j in range(substeps):
        u = t - torch.div((t - s) * j, substeps, rounding_mode="floor")
        v = t - torch.div((t - s) * (j + 1), substeps, rounding_mode="floor")
        x0 = x0_fn(x, u)
        d = x0
        if prev is not None:
            u_prev, x0_prev = prev
            lam_prev, lam_u, lam_v = (_half_log_snr(alphas_cumprod, k, x) for k in (u_prev, u, v))
            r = (lam_u - lam_prev) / (lam_v - lam_u).clamp_min(1e-6)
            second = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
            d = torch.where((v >= 0).reshape(-1, 1, 1), second, x0)
        x = ddim_step(x, d, u, v, alphas_cumprod)
        prev = (u, x0)
    return x
