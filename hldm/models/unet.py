"""Conditional 1-D U-Net: the H-LDM denoiser over the MS-VAE latent (B, 16, L).

    e       = MLP([sinusoid(t) ; c])                          fused timestep + condition
    ResBlock: h = conv2(act(norm(conv1(act(norm(x))) + W e))) + x   (Adaptive Condition ResBlock;
              with scale_shift: norm(.) * (1 + W_s e) + W_b e, hldm.models.blocks)
    Attn    : softmax(Q K^T / sqrt(d) + M_cardiac(hr)) V      (hldm.models.medical_attention)
    eps_hat = sum_i w_i(c) eps_i                              (hldm.models.structured_noise)

Levels halve time and use `channels[i]` widths with a skip connection per level;
Medical Attention runs at `attention_levels` on the way down and up, and in the middle
block when the deepest level is one of them. Any L works: the input is zero-padded to
a multiple of 2**(levels - 1) and outputs are cropped back; attention masks are
returned at their level's (padded) resolution.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from hldm.models.blocks import Downsample, ResBlock1D, Upsample, pad_to_multiple
from hldm.models.medical_attention import MedicalAttention, period_frames
from hldm.models.structured_noise import StructuredNoiseHead


@dataclass
class UNetConfig:
    latent_channels: int = 16
    n_subspaces: int = 4
    channels: tuple[int, ...] = (128, 256, 256)
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = (1,)  # L/2: a period spans ~12 frames at 80 bpm
    heads: int = 4
    cond_dim: int = 256  # ConditionConfig.dim
    time_embed_dim: int = 128  # sinusoid size
    emb_dim: int = 256  # fused (t, c) embedding fed to every ResBlock
    time_downsample: int = 4  # STFT frames per latent frame, for the cardiac period
    medical_attention: bool = True  # False: plain self-attention ("-Medical Attention" ablation)
    structured_noise: bool = True  # False: single eps head ("-Structured Noise" ablation)
    scale_shift: bool = True  # False: the paper's bias-only Adaptive Condition ResBlock
    dropout: float = 0.1

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.attention_levels = tuple(int(a) for a in self.attention_levels)
        bad = [a for a in self.attention_levels if not 0 <= a < len(self.channels)]
        if bad:
            raise ValueError(f"attention_levels: {bad} out of range; allowed: 0..{len(self.channels) - 1}")
        if self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim: {self.time_embed_dim} must be even")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["attention_levels"] = list(self.channels), list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim): [cos(t f_k), sin(t f_k)], f_k geometric."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _per_item(x, B: int, name: str, device) -> torch.Tensor:
    """A scalar or (B,) value as a (B,) tensor."""
    x = torch.as_tensor(x, device=device).reshape(-1)
    if x.numel() not in (1, B):
        raise ValueError(f"{name}: expected a scalar or shape ({B},), got {x.numel()} values")
    return x.expand(B)


class ConditionalUNet1D(nn.Module):
    """forward(z_t (B, 16, L), t (B,), c (B, D), hr (B,) bpm) -> dict(eps, w, eps_i, attn)."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        ch, E, n = cfg.channels, cfg.emb_dim, len(cfg.channels)

        def res(i: int, o: int) -> ResBlock1D:
            return ResBlock1D(i, o, E, cfg.dropout, scale_shift=cfg.scale_shift)

        def attn(level: int) -> nn.Module:
            if level not in cfg.attention_levels:
                return nn.Identity()
            return MedicalAttention(ch[level], cfg.heads, cardiac=cfg.medical_attention)

        self.embed = nn.Sequential(nn.Linear(cfg.time_embed_dim + cfg.cond_dim, E), nn.SiLU(), nn.Linear(E, E))
        self.inp = nn.Conv1d(cfg.latent_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        for i in range(n):
            self.down.append(nn.ModuleDict({
                "res": nn.ModuleList(res(ch[i], ch[i]) for _ in range(cfg.blocks_per_level)), "attn": attn(i),
                "down": Downsample(ch[i], ch[i + 1]) if i + 1 < n else nn.Identity()}))
        self.mid = nn.ModuleList([res(ch[-1], ch[-1]), attn(n - 1), res(ch[-1], ch[-1])])
        self.up = nn.ModuleList()
        for i in reversed(range(n)):
            cur = ch[min(i + 1, n - 1)]  # width arriving from the level below (or the middle block)
            blocks = [res(cur + ch[i], ch[i])] + [res(ch[i], ch[i]) for _ in range(cfg.blocks_per_level - 1)]
            self.up.append(nn.ModuleDict({
                "res": nn.ModuleList(blocks), "attn": attn(i),
                "up": Upsample(ch[i], ch[i]) if i > 0 else nn.Identity()}))
        self.head = StructuredNoiseHead(ch[0], cfg.cond_dim, cfg.n_subspaces, cfg.latent_channels,
                                        enabled=cfg.structured_noise)

    def _attend(self, layer: nn.Module, h: torch.Tensor, period: torch.Tensor, level: int,
                masks: list[torch.Tensor]) -> torch.Tensor:
        if isinstance(layer, MedicalAttention):
            h, m = layer(h, period / 2 ** level)
            masks.append(m)
        return h

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor, hr: torch.Tensor) -> dict:
        cfg = self.config
        if z_t.dim() != 3 or z_t.shape[1] != cfg.latent_channels:
            raise ValueError(f"z_t: expected shape (B, {cfg.latent_channels}, L), got {tuple(z_t.shape)}")
        B, _, L = z_t.shape
        if c.shape != (B, cfg.cond_dim):
            raise ValueError(f"c: expected shape ({B}, {cfg.cond_dim}), got {tuple(c.shape)}")
        t = _per_item(t, B, "t", z_t.device)
        hr = _per_item(hr, B, "hr", z_t.device).float()
        if not bool(torch.isfinite(hr).all()) or bool((hr <= 0).any()):
            raise ValueError(f"hr: heart rate must be finite and > 0 bpm, got {hr.tolist()}")
        period = period_frames(hr, cfg.time_downsample)  # (B,) latent frames

        n = len(cfg.channels)
        emb = self.embed(torch.cat([timestep_embedding(t, cfg.time_embed_dim).to(c.dtype), c], dim=-1))
        h = self.inp(pad_to_multiple(z_t, 2 ** (n - 1)))  # (B, ch0, L_pad)
        skips, masks = [], []
        for i, level in enumerate(self.down):
            for block in level["res"]:
                h = block(h, emb)
            h = self._attend(level["attn"], h, period, i, masks)
            skips.append(h)
            h = level["down"](h)
        h = self.mid[0](h, emb)
        h = self._attend(self.mid[1], h, period, n - 1, masks)
        h = self.mid[2](h, emb)
        for j, level in enumerate(self.up):
            i = n - 1 - j
            h = torch.cat([h, skips.pop()], dim=1)
            for block in level["res"]:
                h = block(h, emb)
            h = self._attend(level["attn"], h, period, i, masks)
            h = level["up"](h)
        eps, w, eps_i = self.head(h, c)
        return {"eps": eps[..., :L], "w": w, "eps_i": eps_i[..., :L], "attn": masks}
