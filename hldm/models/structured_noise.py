"""Structured Noise Prediction: the U-Net's output head.

H-LDM equation (DESIGN.md "Denoiser"):

    eps_hat = sum_{i=1..4} w_i(c) * eps_i,   w(c) = softmax(MLP(c)),  i over SUBSPACES

Each eps_i (B, 16, L) is a full-latent noise prediction from the head of subspace i
(rhythm, s1s2, murmur, noise); w(c) says which subspace the condition leans on and is
shown in the app over the sampling steps. Normalisation: w lies on the simplex, so
eps_hat is a convex combination. When every eps_i is an unbiased, unit-scale estimate
of the true noise (what stage 3 supervises directly) eps_hat is one too, whatever w is;
a factor such as n_sub * w_i would instead make each head's target depend on w.

`enabled=False` (the "-Structured Noise" ablation) is a single plain head: no
w-network, w is the constant uniform 1/4 and eps_i is eps repeated four times (a view),
so callers see the same shapes and per-head supervision reduces to supervising eps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hldm.models.blocks import group_norm


class StructuredNoiseHead(nn.Module):
    """forward(h (B, ch, L), c (B, D)) -> (eps (B, 16, L), w (B, 4), eps_i (B, 4, 16, L))."""

    def __init__(self, ch: int, cond_dim: int, n_sub: int = 4, latent_channels: int = 16,
                 hidden: int = 64, enabled: bool = True):
        super().__init__()
        self.n_sub, self.latent_channels, self.enabled = n_sub, latent_channels, enabled
        self.norm = group_norm(ch)
        self.out = nn.Conv1d(ch, (n_sub if enabled else 1) * latent_channels, 3, padding=1)
        if enabled:
            self.weights = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, n_sub))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, _, L = h.shape
        e = self.out(F.silu(self.norm(h)))  # (B, n_sub * 16, L) or (B, 16, L)
        if not self.enabled:
            w = e.new_full((B, self.n_sub), 1.0 / self.n_sub)
            return e, w, e[:, None].expand(B, self.n_sub, self.latent_channels, L)
        eps_i = e.reshape(B, self.n_sub, self.latent_channels, L)
        w = torch.softmax(self.weights(c), dim=-1)  # (B, n_sub)
        eps = torch.einsum("bi,bicl->bcl", w, eps_i)  # (B, 16, L)
        return eps, w, eps_i
