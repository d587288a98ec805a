"""Stage "distill": a few-step student of a trained pipeline (`hldm.diffusion.distillation`).

The student starts as a copy of the teacher and trains its U-Net only: the conditioner (text,
graph, fusion) stays the teacher's and is run once per batch for both. Conditions are those
of inference (the training windows' findings and prompts, source "real", no dropout), on the
noised latents of the training windows at the student's own timesteps. The trained student's
generation defaults become sampler "ddim", `steps` steps, guidance 1 (guidance is inside it).
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from hldm.diffusion.distillation import student_grid, teacher_steps, x0_for_step
from hldm.diffusion.loss import clamp_x0, diffusion_loss, output_for_x0, q_sample
from hldm.diffusion.samplers import X0_LIMIT
from hldm.train.trainer import DiffusionObjective, known_rate


class DistillObjective(DiffusionObjective):
    """MSE between the student's output at (x_t, t) and the output implying the teacher's x0 target."""

    def __init__(self, model: torch.nn.Module, total_steps: int, steps: int, substeps: int, guidance: float):
        super().__init__(model, total_steps, cond_dropout=0.0)
        self.teacher = copy.deepcopy(model.unet).requires_grad_(False)
        model.cond.requires_grad_(False)
        t, s = student_grid(self.n_train, steps, self.prediction_type)
        self.register_buffer("grid_t", t, persistent=False)
        self.register_buffer("grid_s", s, persistent=False)
        self.substeps, self.guidance = substeps, guidance
        model.config.diffusion = dataclasses.replace(model.config.diffusion, sampler="ddim", steps=steps,
                                                     guidance=1.0)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.cond.eval()  # frozen and shared with the teacher: no dropout in the condition
        self.teacher.eval()
        return self

    def forward(self, batch: dict, step: int | None):
        m, abar, pred = self.model, self.alphas_cumprod, self.prediction_type
        z0 = self.latents(batch)  # (B, 16, L)
        B, dev = z0.shape[0], z0.device
        with torch.no_grad():
            c, hr = m.condition(batch["findings"], batch["prompts"])  # (B, D), (B,)
            hr = known_rate(hr)
            both_c, both_hr = torch.cat([c, m.cond.null(B)]), torch.cat([hr, hr])
            k = torch.randint(0, len(self.grid_t), (B,), device=dev)
            t, s = self.grid_t[k], self.grid_s[k]
            x_t = q_sample(z0, t, torch.randn_like(z0), abar)

            def guided_x0(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
                out = self.teacher(torch.cat([x, x]), torch.cat([u, u]), both_c, both_hr)["eps"]  # (2B, C, L)
                return clamp_x0(out[B:] + self.guidance * (out[:B] - out[B:]), x, u, abar, X0_LIMIT, pred)[1]

            x_s = teacher_steps(guided_x0, x_t, t, s, self.substeps, abar)
            target = output_for_x0(x0_for_step(x_t, x_s, t, s, abar), x_t, t, abar, pred)
        loss = diffusion_loss(m.unet(x_t, t, c, hr)["eps"], target)
        return loss, {"loss": float(loss.detach()), "mse": float(loss.detach())}
