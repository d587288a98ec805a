"""1-D building blocks shared by the MS-VAE and the denoising U-Net.

Everything is over time with features as channels: tensors are (B, C, L).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide `channels` (tiny test configs use 4-16 channels)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Right-pad the time axis of (B, C, L) with zeros to a multiple of `multiple`."""
    extra = -x.shape[-1] % multiple
    return F.pad(x, (0, extra)) if extra else x


class ResBlock1D(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual path.

    With `emb_dim` set this is the Adaptive Condition ResBlock of H-LDM: the fused
    (timestep, condition) embedding is projected to `out_ch` and added as a per-channel
    bias between the two convolutions, h = conv2(drop(act(norm(conv1(x) + W e)))) + x.
    With `scale_shift` it also scales the normalised features (FiLM / AdaGN),
    h = conv2(drop(act(norm(conv1(x)) * (1 + W_s e) + W_b e))) + x: a bias alone let the
    trained denoiser all but ignore c (murmur grade moved eps by < 1 %).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None = None, dropout: float = 0.0,
                 scale_shift: bool = False):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, padding=1)
        self.scale_shift = bool(emb_dim) and scale_shift
        self.emb = (nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch * (2 if self.scale_shift else 1)))
                    if emb_dim else None)
        self.norm2 = group_norm(out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, L)
        if self.scale_shift:
            scale, shift = self.emb(emb)[:, :, None].chunk(2, dim=1)  # 2 x (B, out, 1)
            h = self.norm2(h) * (1 + scale) + shift
        elif self.emb is not None:
            h = self.norm2(h + self.emb(emb)[:, :, None])
        else:
            h = self.norm2(h)
        h = self.conv2(self.drop(F.silu(h)))
        return h + self.skip(x)


class Downsample(nn.Module):
    """Strided conv: (B, in, L) -> (B, out, ceil(L / 2))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then conv (no checkerboard from transposed convs): (B, in, L) -> (B, out, 2L)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
