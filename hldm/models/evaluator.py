"""In-domain PCG evaluator: a classifier whose embedding is our FAD feature space.

VGGish (the usual FAD encoder) is trained on 16 kHz everyday audio and downloads
its weights; this small 1-D CNN is trained on real CirCor training-split windows
(plus simulator clips for labels CirCor lacks) on the same log-STFT features the
generator uses, so FAD/IS/CF are measured by a listener that knows heart sounds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from hldm.clinical.vocabulary import (CONDITIONS, LOCATIONS, PITCHES, QUALITIES, SHAPES, TIMINGS,
                                      Findings)

# Each head's classes. Index 0 of the murmur-attribute heads means "no murmur", so
# an absent murmur is a class the evaluator must hear, not a missing label.
HEAD_CLASSES: dict[str, tuple] = {
    "murmur": ("absent", "present"),
    "grade": ("none", 1, 2, 3, 4, 5, 6),
    "timing": ("none",) + TIMINGS,
    "shape": ("none",) + SHAPES,
    "pitch": ("none",) + PITCHES,
    "quality": ("none",) + QUALITIES,
    "location": LOCATIONS,
    "condition": CONDITIONS,
}
IGNORE = -100  # cross_entropy's ignore_index: label unknown for this clip


def finding_targets(f: Findings) -> dict[str, int]:
    """Class index per head for one finding set; IGNORE where the data does not say."""
    present = f.murmur == "present"
    out = {"murmur": int(present)}
    for head in ("grade", "timing", "shape", "pitch", "quality"):
        value = getattr(f, head)
        if not present:
            out[head] = 0
        else:
            out[head] = HEAD_CLASSES[head].index(value) if value in HEAD_CLASSES[head] else IGNORE
    out["location"] = LOCATIONS.index(f.location) if f.location in LOCATIONS else IGNORE
    out["condition"] = CONDITIONS.index(f.condition) if f.condition in CONDITIONS else IGNORE
    return out


def decode_predictions(logits: dict[str, torch.Tensor]) -> dict[str, list]:
    """Head logits (B, K) -> per-clip class values (the vocabulary's, not indices)."""
    return {head: [HEAD_CLASSES[head][i] for i in out.argmax(-1).tolist()] for head, out in logits.items()}


@dataclass
class EvaluatorConfig:
    # The lowest n_bins of the 129 STFT bins are heard: 65 = 0-1 kHz, where S1/S2 and every murmur
    # pitch band (50-600 Hz) live; above it is mostly noise, and dropping it halves the first layer.
    n_bins: int = 65
    channels: tuple[int, ...] = (32, 64, 96)
    emb_dim: int = 96
    dropout: float = 0.1
    heads: dict[str, int] = field(default_factory=lambda: {k: len(v) for k, v in HEAD_CLASSES.items()})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluatorConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


class PCGEvaluator(nn.Module):
    """(B, 129, T) log-STFT features -> embedding (B, emb_dim) and per-head logits (first n_bins heard)."""

    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        self.cfg = cfg
        layers, ch_in = [], cfg.n_bins
        for ch in cfg.channels:
            # Stride 2 per block: a 4 s window (500 frames) ends near 60 frames, still
            # finer than one cardiac cycle, so timing within the cycle stays visible.
            layers += [nn.Conv1d(ch_in, ch, 5, stride=2, padding=2), nn.GroupNorm(8, ch), nn.SiLU(),
                       nn.Conv1d(ch, ch, 3, padding=1), nn.GroupNorm(8, ch), nn.SiLU()]
            ch_in = ch
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * ch_in, cfg.emb_dim), nn.SiLU(), nn.Dropout(cfg.dropout))
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.emb_dim, k) for name, k in cfg.heads.items()})

    def embedding(self, feat: torch.Tensor) -> torch.Tensor:
        h = self.body(feat[:, : self.cfg.n_bins])  # (B, C, T / 8)
        pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=1)  # (B, 2C)
        return self.embed(pooled)  # (B, emb_dim)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        emb = self.embedding(feat)
        return emb, {name: head(emb) for name, head in self.heads.items()}

    def loss(self, feat: torch.Tensor, targets: dict[str, torch.Tensor],
             weights: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of per-head cross-entropies; IGNORE labels drop out; optional class weights per head."""
        _, logits = self(feat)
        parts = {}
        total = feat.new_zeros(())
        for name, out in logits.items():
            tgt = targets[name]
            if (tgt != IGNORE).any():
                w = None if weights is None else weights.get(name)
                ce = F.cross_entropy(out, tgt, weight=w, ignore_index=IGNORE)
                total = total + ce
                parts[name] = float(ce.detach())
        return total, parts
