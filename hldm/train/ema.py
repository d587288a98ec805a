"""Exponential moving average of model weights (the weights that are validated and shipped).

shadow <- d * shadow + (1 - d) * param, with the warm-up d_t = min(decay, (1 + t) / (10 + t))
so that short runs (the tiny preset) are not dominated by the random initialisation.
Floating-point parameters and buffers are averaged; integer buffers are copied.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def ema_decay(step: int, decay: float) -> float:
    """The decay used at update number `step` (0-based)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = ema_decay(self.updates, self.decay)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.dtype.is_floating_point:
                s.lerp_(v.detach().to(s.dtype), 1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, shadow: dict[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.shadow) - set(shadow))
        extra = sorted(set(shadow) - set(self.shadow))
        if missing or extra:
            raise KeyError(f"EMA state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, v in shadow.items():
            self.shadow[k].copy_(v)
        self.updates = updates

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily load the EMA weights into `model` (validation), restoring the live ones after."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(live)
