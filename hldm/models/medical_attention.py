"""Medical Attention: self-attention over time biased towards one cardiac period apart.

H-LDM equation (DESIGN.md "Denoiser"):

    MedAttn(Q, K, V) = softmax(Q K^T / sqrt(d) + M_cardiac) V

M_cardiac (B, heads, L, L) is an additive bias, the sum of
  * a periodic bump per head h: s_h * exp(-(|i-j| - k P)^2 / (2 (r_h P)^2)), k = the
    nearest multiple >= 1 of the cardiac period P (so peaks sit at |i-j| = P, 2P, ...),
    with learnable strength s_h and relative width r_h (a fraction of P, because
    beat-to-beat variability scales with the period; (r_h P)^2 + MIN_STD^2 in practice);
  * a learnable relative-position bias that is non-zero only for |i-j| <= `window`
    (sparse: a few numbers per head, the local context a convolution would see).
P comes from the heart rate of the condition: period_frames(hr) latent frames,
divided by 2**level at a U-Net level that is 2**level coarser in time.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hldm.audio.features import FRAMES_PER_SECOND
from hldm.models.blocks import group_norm

MIN_STD = 0.5  # frames


def period_frames(hr: torch.Tensor, time_downsample: int = 4) -> torch.Tensor:
    """Cardiac period in latent frames for heart rate `hr` (B,) bpm: 60 / hr * 125 / 4."""
    return 60.0 / hr * FRAMES_PER_SECOND / time_downsample


def cardiac_mask(L: int, period: torch.Tensor, width: float | torch.Tensor = 0.08,
                 strength: float | torch.Tensor = 2.0) -> torch.Tensor:
    """Additive attention bias favouring |i - j| near multiples (>= 1) of `period`.

    period (B,) in frames; width is relative to the period (std = width * period);
    strength is the bias at a peak. Scalar width/strength -> (B, L, L);
    per-head tensors (H,) -> (B, H, L, L). Values lie in [0, strength]. The std never
    drops below MIN_STD frames, so at a coarse level a peak still lands on a frame.
    """
    period = torch.as_tensor(period, dtype=torch.float32).reshape(-1)
    if not bool(torch.isfinite(period).all()) or bool((period <= 0).any()):
        raise ValueError(f"period: must be finite and > 0 frames, got {period.tolist()}")
    width = torch.as_tensor(width, dtype=period.dtype, device=period.device)
    strength = torch.as_tensor(strength, dtype=period.dtype, device=period.device)
    idx = torch.arange(L, device=period.device, dtype=period.dtype)
    dist = (idx[:, None] - idx[None, :]).abs()  # (L, L)
    if width.dim() == 1:  # per head: (B, H, L, L)
        p, w, s = period[:, None, None, None], width[None, :, None, None], strength[None, :, None, None]
    else:  # (B, L, L)
        p, w, s = period[:, None, None], width, strength
    k = torch.round(dist / p).clamp(min=1.0)
    dev = dist - k * p
    var = (w * p).pow(2) + MIN_STD ** 2
    return s * torch.exp(-0.5 * dev.pow(2) / var)


class MedicalAttention(nn.Module):
    """Multi-head self-attention over time with the cardiac bias; residual, pre-norm.

    forward(x (B, C, L), period (B,) frames at this resolution) -> (y (B, C, L), mask (B, L, L))
    where mask is M_cardiac averaged over heads, for display. With `cardiac=False`
    (the "-Medical Attention" ablation) it is plain self-attention: no bias
    parameters at all and an all-zero mask.

    Without gradients (sampling), M_cardiac is kept from the previous call and reused
    while L, the periods and the bias parameters are unchanged: every step of a
    sampling run asks for the same one, and rebuilding it was ~4% of a U-Net step on CPU.
    """

    def __init__(self, dim: int, heads: int = 4, cardiac: bool = True, window: int = 4,
                 init_width: float = 0.08, init_strength: float = 2.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: {heads} does not divide dim {dim}")
        self.heads, self.window, self.cardiac = heads, window, cardiac
        self.norm = group_norm(dim)
        self.qkv = nn.Conv1d(dim, 3 * dim, 1)
        self.proj = nn.Conv1d(dim, dim, 1)
        if cardiac:
            self.strength = nn.Parameter(torch.full((heads,), float(init_strength)))
            # softplus(width_raw) = init_width
            self.width_raw = nn.Parameter(torch.full((heads,), math.log(math.expm1(init_width))))
            self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * window + 1))
        # (key, bias) of the last call without gradients; one tuple, so that threads
        # sharing the model never pair one call's key with another's bias. Weight changes
        # are seen through the parameters' version counters (not through `.data`).
        self._reuse: tuple | None = None

    def bias(self, L: int, period: torch.Tensor) -> torch.Tensor:
        """M_cardiac for this layer: (B, heads, L, L)."""
        m = cardiac_mask(L, period, F.softplus(self.width_raw), self.strength)
        idx = torch.arange(L, device=period.device)
        rel = idx[None, :] - idx[:, None]  # (L, L) offset j - i
        table = F.pad(self.rel_bias, (0, 1))  # last column = 0 outside the window
        pos = torch.where(rel.abs() <= self.window, rel + self.window, 2 * self.window + 1)
        return m + table[:, pos][None]  # (B, H, L, L)

    def _reused_bias(self, L: int, period: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """M_cardiac (B, H, L, L) in `dtype`; without gradients, the previous call's when nothing it depends on changed."""
        if torch.is_grad_enabled():
            return self.bias(L, period.to(dtype)).to(dtype)
        params = (self.strength, self.width_raw, self.rel_bias)
        key = (L, dtype, period.device, tuple(period.tolist()), tuple((p.data_ptr(), p._version) for p in params))
        last = self._reuse
        if last is None or last[0] != key:
            last = self._reuse = (key, self.bias(L, period.to(dtype)).to(dtype))
        return last[1]

    def forward(self, x: torch.Tensor, period: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, L = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, L)
        # (B, H, L, d) each, d contiguous: SDPA then takes its fused CPU kernel (~3x the unfused one)
        q, k, v = qkv.transpose(-1, -2).contiguous().unbind(1)
        if self.cardiac:
            bias = self._reused_bias(L, period, x.dtype)  # (B, H, L, L)
            mask = bias.mean(dim=1)
        else:
            bias, mask = None, x.new_zeros(B, L, L)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, L, d)
        y = x + self.proj(h.transpose(-1, -2).reshape(B, C, L))
        return y, mask
