"""The recording editor's heart-cycle segmenter: S1 / systole / S2 / diastole per STFT frame.

The editor (hldm.editing) changes a murmur only inside its phase, so which interval is
systole must be right. The envelope rule of hldm.eval.listener (two sounds a period, the
shorter interval is systole, else the lower-pitched sound is S1) labels 69 % of held-out
CirCor recordings right and swaps S1 and S2 on 19 %: at children's rates systole and
diastole last about as long. A network that has heard CirCor's annotated cycles tells S1
from S2 by their sound and their neighbourhood (Springer et al. 2016 and Renna et al. 2019
do the same with logistic regression or a CNN before a duration-aware HMM).

`PCGSegmenter`: (B, 129, T) log-STFT features (hldm.audio.features, 125 frames a second) ->
(B, 4, T) logits of the states S1, systole, S2, diastole. Dilated convolutions see about
+-1 s, a whole cycle at 60 bpm. `decode` turns the frame posteriors into a cycle-ordered
state path (`cycle_viterbi`): a state lasts at least MIN_FRAMES and the states follow
S1 -> systole -> S2 -> diastole -> S1, so the rows it gives are always a valid segmentation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hldm.audio.features import FRAMES_PER_SECOND

STATES = (1, 2, 3, 4)  # CirCor's .tsv states: S1, systole, S2, diastole; 0 (unannotated) is not predicted
IGNORE = -100
# Shortest plausible state (frames of 8 ms): S1/S2 last 40-150 ms, systole and diastole longer
MIN_FRAMES = {1: 4, 2: 8, 3: 4, 4: 8}


@dataclass
class SegmenterConfig:
    n_bins: int = 65  # 0-1 kHz: heart sounds and every murmur band; above it is mostly noise
    channels: int = 64
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SegmenterConfig":
        return cls(**{**d, "dilations": tuple(d["dilations"])})


class _Block(nn.Module):
    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(8, ch)
        self.mix = nn.Conv1d(ch, ch, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return h + self.mix(F.silu(self.norm(self.conv(h))))


class PCGSegmenter(nn.Module):
    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(nn.Conv1d(cfg.n_bins, cfg.channels, 5, padding=2), nn.GroupNorm(8, cfg.channels),
                                  nn.SiLU())
        self.blocks = nn.Sequential(*(_Block(cfg.channels, d) for d in cfg.dilations))
        self.out = nn.Conv1d(cfg.channels, len(STATES), 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, 129, T) features -> (B, 4, T) state logits."""
        return self.out(self.blocks(self.stem(feat[:, : self.cfg.n_bins])))

    def loss(self, feat: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against frame states (B, T) in 0..4 (0: unannotated, left out)."""
        target = torch.where(states > 0, states - 1, torch.full_like(states, IGNORE))
        return F.cross_entropy(self(feat), target, ignore_index=IGNORE)

    @torch.no_grad()
    def decode(self, feat: torch.Tensor) -> tuple[np.ndarray, float]:
        """(129, T) features of one clip -> rows (K, 3) of (start_s, end_s, state) as CirCor's .tsv, and
        the mean posterior of the decoded states (how sure the segmentation is, 0.25-1)."""
        log_p = F.log_softmax(self(feat[None].float())[0], dim=0).T.numpy()  # (T, 4)
        path = cycle_viterbi(log_p)
        return state_rows(path), float(np.exp(log_p[np.arange(len(path)), path - 1]).mean())


def cycle_viterbi(log_p: np.ndarray, min_frames: dict[int, int] = MIN_FRAMES) -> np.ndarray:
    """The most likely path (T,) of states 1..4 under frame log-probabilities (T, 4), where each
    state is held at least min_frames[state] frames and is followed only by the next in the cycle.

    Each state s is expanded into min_frames[s] chained sub-states (the last one may repeat), so
    the path is a plain Viterbi over sum(min_frames) sub-states; T ~ 1,000 frames for 8 s."""
    frames = log_p.shape[0]
    sub = [s for s in STATES for _ in range(min_frames[s])]  # sub-state -> state
    n = len(sub)
    last = np.cumsum([min_frames[s] for s in STATES]) - 1  # the repeating sub-state of each state
    emit = log_p[:, np.asarray(sub) - 1]  # (T, n)
    score = emit[0].copy()  # the clip may start mid-state: any sub-state may be the first
    back = np.zeros((frames, n), dtype=np.int32)
    prev = np.roll(np.arange(n), 1)  # sub-state i is entered from i - 1 (the first from the last of diastole)
    for t in range(1, frames):
        stay = np.full(n, -np.inf)
        stay[last] = score[last]
        move = score[prev]
        back[t] = np.where(stay >= move, np.arange(n), prev)
        score = np.maximum(stay, move) + emit[t]
    # the clip may end mid-state: any sub-state may be the last
    path = np.empty(frames, dtype=np.int32)
    path[-1] = int(np.argmax(score))
    for t in range(frames - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return np.asarray(sub)[path]


def state_rows(states: np.ndarray, fps: float = FRAMES_PER_SECOND) -> np.ndarray:
    """Frame states (T,) of frames centred at k / fps -> rows (K, 3) of (start_s, end_s, state), one per
    run of equal states; a boundary lies halfway between the centres of the frames either side of it."""
    change = np.flatnonzero(np.diff(states)) + 1
    bounds = np.concatenate([[0.0], (change - 0.5) / fps, [len(states) / fps]])
    return np.stack([bounds[:-1], bounds[1:], states[np.concatenate([[0], change])]], axis=1).astype(np.float64)
