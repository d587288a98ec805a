"""Loss weighting schedules of stages 2 and 3: small pure functions, plotted in train/README.md.

Stage 2, coarse-to-fine curriculum (rhythm -> sounds -> details). With
progress p in [0, 1] through the stage and `end` the point where the curriculum
hands over to uniform weights:

- subspace weights: each subspace has a level, rhythm 0, s1s2 1, murmur 2,
  noise 2 (the details). A focus f = 2 * min(p / end, 1) sweeps the levels; a
  subspace gets floor + (1 - floor) * max(0, 1 - |level - f|), so at p = 0 the
  rhythm group dominates, at p = end/2 the S1/S2 group, at p = end murmur and
  noise. From `end` to 1 the weights blend linearly into uniform. No subspace
  ever drops below `floor` relative weight, so none is forgotten.
- timestep weights: w(t) = 1 + a * (2 t / (n - 1) - 1) with a = strength * (1 - p / end)
  (0 after `end`): early in the stage high-noise timesteps (global structure)
  count more, then the emphasis flattens so the low-noise detail steps catch up.

Both feed `hldm.diffusion.loss.diffusion_loss` (subspace_weights, timestep_weights),
which divides by the summed weights: the schedule moves emphasis, not loss scale.

Stage 3, rare-pathology weights: inverse class frequency over the training set,
separately for the condition (or murmur status when no condition is labelled,
as in CirCor) and for the grade, multiplied, normalised to mean 1 and capped.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import torch

from hldm.clinical.vocabulary import SUBSPACES, Findings

SUBSPACE_LEVELS = {"rhythm": 0.0, "s1s2": 1.0, "murmur": 2.0, "noise": 2.0}
CURRICULUM_FLOOR = 0.3
TIMESTEP_STRENGTH = 0.5


def curriculum_subspace_weights(progress: float, end: float = 0.75,
                                floor: float = CURRICULUM_FLOOR) -> torch.Tensor:
    """(4,) loss weights over SUBSPACES at `progress` in [0, 1], mean 1."""
    p = min(max(progress, 0.0), 1.0)
    focus = 2.0 * min(p / end, 1.0) if end > 0 else 2.0
    w = torch.tensor([floor + (1 - floor) * max(0.0, 1 - abs(SUBSPACE_LEVELS[s] - focus)) for s in SUBSPACES])
    if p > end:
        blend = (p - end) / (1 - end)
        w = (1 - blend) * w + blend * torch.ones_like(w) * w.mean()
    return w / w.mean()


def curriculum_timestep_weights(n_train: int, progress: float, end: float = 0.75,
                                strength: float = TIMESTEP_STRENGTH) -> torch.Tensor:
    """(n_train,) loss weight per timestep: high t favoured early, uniform from `end` on."""
    p = min(max(progress, 0.0), 1.0)
    a = strength * max(0.0, 1 - p / end) if end > 0 else 0.0
    t = torch.linspace(-1.0, 1.0, n_train)
    return 1.0 + a * t


def frequency_keys(f: Findings) -> tuple[str, str]:
    """(condition key, grade key) of one training item."""
    condition = f.condition if f.condition else f"murmur {f.murmur}"
    grade = f"grade {f.grade}" if f.grade else "no grade"
    return condition, grade


def _inverse_frequency(keys: Sequence[Hashable]) -> dict[Hashable, float]:
    counts = Counter(keys)
    n, k = len(keys), len(counts)
    return {key: n / (k * c) for key, c in counts.items()}


class RareWeights:
    """Per-item loss weights for stage 3, fitted on the training set's findings."""

    def __init__(self, findings: Sequence[Findings], cap: float = 5.0):
        if not findings:
            raise ValueError("findings: need at least one training item to compute frequencies")
        keys = [frequency_keys(f) for f in findings]
        self.cap = cap
        self.condition = _inverse_frequency([c for c, _ in keys])
        self.grade = _inverse_frequency([g for _, g in keys])
        raw = [self.condition[c] * self.grade[g] for c, g in keys]
        self.norm = sum(raw) / len(raw)

    def weight(self, f: Findings) -> float:
        """Capped inverse-frequency weight; 1.0 for a class never seen in training."""
        c, g = frequency_keys(f)
        raw = self.condition.get(c, self.norm ** 0.5) * self.grade.get(g, self.norm ** 0.5)
        return min(self.cap, raw / self.norm)

    def __call__(self, findings: Sequence[Findings]) -> torch.Tensor:
        return torch.tensor([self.weight(f) for f in findings], dtype=torch.float32)  # (B,)

    def table(self) -> dict:
        """Readable summary for the model card: per-class factors."""
        return {"cap": self.cap, "condition": dict(sorted(self.condition.items())),
                "grade": dict(sorted(self.grade.items()))}
