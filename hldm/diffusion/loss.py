"""The forward (noising) process and the denoiser's training loss.

H-LDM trains the U-Net in the MS-VAE latent with the standard denoising
objective L = E_{z0, eps, t} || eps - eps_theta(z_t, t, c) ||^2, z_t =
sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 14), or its
v-prediction form v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) z0 (Salimans &
Ho 2022). The structured-noise head predicts eps_hat = sum_i w_i(c) eps_i over the
four latent subspaces; stage 3 also supervises each eps_i directly on its own
subspace channels (`subspace_losses`).

Weights: `subspace_weights` (4,) or (B, 4) scale the error per latent subspace
(the coarse-to-fine curriculum: rhythm -> sounds -> details), `timestep_weights`
is a table (n_train,) indexed by each sample's t, `sample_weights` (B,) scales whole
samples (rare-pathology weights). The weighted squared error is divided by the
summed weights, so a weight pattern changes emphasis, not the loss scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hldm.clinical.vocabulary import SUBSPACES
from hldm.diffusion.schedules import check_prediction_type


def _coef(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t) shaped (B, 1, ..., 1) to broadcast over `like`."""
    abar = alphas_cumprod.to(like.device)[t.long()].to(like.dtype)
    shape = (-1,) + (1,) * (like.dim() - 1)
    return abar.sqrt().reshape(shape), (1 - abar).sqrt().reshape(shape)


def q_sample(z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps; z0, noise (B, C, L), t (B,) integer timesteps."""
    a, s = _coef(alphas_cumprod, t, z0)
    return a * z0 + s * noise


def training_target(z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """What the denoiser must output: eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0. (B, C, L)."""
    if check_prediction_type(prediction_type) == "epsilon":
        return noise
    a, s = _coef(alphas_cumprod, t, z0)
    return a * noise - s * z0


def predict_x0(model_out: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
               prediction_type: str = "epsilon") -> torch.Tensor:
    """The clean latent implied by a model output at z_t (the samplers' "denoised"). (B, C, L)."""
    a, s = _coef(alphas_cumprod, t, z_t)
    if check_prediction_type(prediction_type) == "epsilon":
        return (z_t - s * model_out) / a
    return a * z_t - s * model_out


def output_for_x0(x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
                  prediction_type: str = "epsilon") -> torch.Tensor:
    """The model output that implies clean latent x0 at z_t (the inverse of `predict_x0`). (B, C, L)."""
    a, s = _coef(alphas_cumprod, t, z_t)
    eps = (z_t - a * x0) / s
    return eps if check_prediction_type(prediction_type) == "epsilon" else a * eps - s * x0


def clamp_x0(model_out: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
             limit: float, prediction_type: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor]:
    """(model output, clean latent) with the implied clean latent clamped to [-limit, limit]. Each (B, C, L).

    Near t = T the cosine schedule's alpha_bar is ~2e-9, so an epsilon error of 0.01
    implies an x0 off by ~200: unclamped, a sampler step there throws the latent far
    outside anything the decoder has seen. Scaled latents have unit variance, so a clamp
    many sigma out only touches such blown-up predictions (diffusers' clip_sample, for
    every sampler and both parameterisations). The clamped x0 is returned too: it is the
    samplers' "denoised", so they need not derive it again.
    """
    x0 = predict_x0(model_out, z_t, t, alphas_cumprod, prediction_type).clamp(-limit, limit)
    return output_for_x0(x0, z_t, t, alphas_cumprod, prediction_type), x0


def _subspace_to_channels(weights: torch.Tensor, channels: int) -> torch.Tensor:
    """(4,) or (B, 4) per-subspace weights -> (1 or B, C, 1) per-channel weights."""
    w = weights if weights.dim() == 2 else weights.unsqueeze(0)
    if w.shape[-1] != len(SUBSPACES):
        raise ValueError(f"subspace_weights: last dim must be {len(SUBSPACES)} ({', '.join(SUBSPACES)}), "
                         f"got shape {tuple(weights.shape)}")
    return w.repeat_interleave(channels // len(SUBSPACES), dim=-1).unsqueeze(-1)


def diffusion_loss(model_out: torch.Tensor, target: torch.Tensor, t: torch.Tensor | None = None,
                   subspace_weights: torch.Tensor | None = None, timestep_weights: torch.Tensor | None = None,
                   sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted MSE between model_out and target, both (B, C, L); a scalar.

    timestep_weights (n_train,) needs t (B,). All weights are optional; with none
    this is the plain mean squared error.
    """
    if model_out.shape != target.shape:
        raise ValueError(f"model_out {tuple(model_out.shape)} and target {tuple(target.shape)} differ in shape")
    err = (model_out.float() - target.float()).square()  # (B, C, L)
    w = torch.ones(err.shape[0], 1, 1, device=err.device)
    if subspace_weights is not None:
        w = w * _subspace_to_channels(subspace_weights.to(err.device, err.dtype), err.shape[1])
    if timestep_weights is not None:
        if t is None:
            raise ValueError("timestep_weights: needs the timesteps t (B,)")
        w = w * timestep_weights.to(err.device, err.dtype)[t.long()].reshape(-1, 1, 1)
    if sample_weights is not None:
        w = w * sample_weights.to(err.device, err.dtype).reshape(-1, 1, 1)
    w = w.expand_as(err)
    return (w * err).sum() / w.sum().clamp_min(1e-12)


def subspace_losses(eps_i: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Direct supervision of each structured-noise component: (4,) MSEs.

    eps_i (B, 4, C, L) holds one prediction per subspace; component k is compared
    with the true noise (or v target) `target` (B, C, L) on subspace k's own channels only.
    """
    n = len(SUBSPACES)
    if eps_i.dim() != 4 or eps_i.shape[1] != n or eps_i.shape[0] != target.shape[0] \
            or eps_i.shape[2:] != target.shape[1:]:
        raise ValueError(f"eps_i must be (B, {n}, C, L) matching target {tuple(target.shape)}, "
                         f"got {tuple(eps_i.shape)}")
    group = target.shape[1] // n
    return torch.stack([
        F.mse_loss(eps_i[:, k, k * group:(k + 1) * group].float(), target[:, k * group:(k + 1) * group].float())
        for k in range(n)
    ])
