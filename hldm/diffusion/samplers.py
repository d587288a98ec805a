"""Samplers for the H-LDM denoiser, k-diffusion style: one small loop per algorithm.

Reverse process of H-LDM: starting from z_T ~ N(0, I) (B, 16, L), each step
asks the conditional U-Net for eps_hat = sum_i w_i(c) eps_i (structured noise
prediction, DESIGN.md "Denoiser") under classifier-free guidance (Ho & Salimans
2022): eps_cfg = eps(z_t, null) + g * (eps(z_t, c) - eps(z_t, null)), then lets a
diffusers scheduler take the step. The conditional and the null branch run in
ONE forward of batch 2B. Each step calls `callback({"x", "i", "t", "w", "attn",
"denoised"})` so callers can watch w_i(c) and the Medical Attention masks
without touching the loop.

Determinism: the initial noise (and DDPM's per-step noise) come from CPU
torch.Generators seeded per batch row, then move to the device, so a seed gives
the same noise on CPU and CUDA, and row k of a batch seeded s equals a single
run seeded s + k.

A denoiser is any `denoise_fn(x (B, C, L), t (B,), **cond) -> dict` with keys
"eps" (B, C, L) (the output in the model's parameterisation: eps, or v),
"w" (B, 4) and "attn" (list of (B, L', L') masks); each cond value has batch B first.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hldm.diffusion.loss import clamp_x0
from hldm.diffusion.schedules import make_scheduler

# Scaled latents have unit variance overall (latent_scale; the murmur subspace ~2.2 in the cpu
# model), so |z0| > 12 is never data but a blown-up prediction at high noise.
X0_LIMIT = 12.0
Model = Callable[[torch.Tensor, torch.Tensor], dict]  # (x (B,C,L), t (B,)) -> {"eps", "w", "attn"}
Callback = Callable[[dict], None]
Ties = tuple[torch.Tensor, torch.Tensor]  # (source row (B,) long, channels taken from it (B, C) bool)


def tie(x: torch.Tensor, ties: Ties | None) -> torch.Tensor:
    """x (B, C, L) with each row's tied channels replaced by its source row's.

    A what-if ties the subspaces its edit must not move to the unedited row: applied to the
    model output and to the state after every step, the tied channels follow the source row
    exactly (stochastic samplers included) while the free ones are denoised in their context.
    """
    if ties is None:
        return x
    src, mask = ties
    return torch.where(mask[..., None], x[src], x)


def cpu_generators(seed: int | Sequence[int], batch: int = 1) -> list[torch.Generator]:
    """One CPU generator per batch row: seeds seed, seed+1, ... for an int, else the given seeds."""
    seeds = [seed + k for k in range(batch)] if isinstance(seed, int) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"seed: {len(seeds)} seeds for a batch of {batch}")
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def initial_noise(shape: Sequence[int], generators: list[torch.Generator],
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """z_T (B, C, L): row k drawn on the CPU from generators[k], then moved to `device`.

    The generators go on to feed DDPM's per-step noise, so no noise is drawn twice.
    """
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generators]).to(device)


def guided(denoise_fn: Callable[..., dict], cond: dict, uncond: dict | None, guidance: float) -> Model:
    """Classifier-free guidance as a model of (x, t): cond and uncond rows in one forward of batch 2B.

    With guidance == 1 (or no uncond) the null branch is skipped: eps_cfg equals eps(z_t, c).
    The returned w and attn are those of the conditional branch (what the app displays).
    """
    if uncond is None or guidance == 1.0:
        return lambda x, t: denoise_fn(x, t, **cond)
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}

    def model(x: torch.Tensor, t: torch.Tensor) -> dict:
        b = x.shape[0]
        out = denoise_fn(torch.cat([x, x]), torch.cat([t, t]), **both)  # batch 2B
        e_c, e_u = out["eps"][:b], out["eps"][b:]
        return {"eps": e_u + guidance * (e_c - e_u), "w": out["w"][:b],
                "attn": [m[:b] for m in out.get("attn", [])]}

    return model


def _run(model: Model, x: torch.Tensor, scheduler, timesteps: torch.Tensor, callback: Callback | None,
         ties: Ties | None = None, **step_kwargs) -> torch.Tensor:
    """The shared loop: model output -> scheduler step -> callback."""
    abar = scheduler.alphas_cumprod
    pred = scheduler.config.prediction_type
    for i, t in enumerate(timesteps):
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        out = model(x, t_batch)
        out["eps"], denoised = clamp_x0(tie(out["eps"], ties), x, t_batch, abar, X0_LIMIT, pred)
        x = tie(scheduler.step(out["eps"], t, x, **step_kwargs).prev_sample, ties)
        if callback is not None:
            callback({"x": x, "i": i, "t": int(t), "w": out["w"], "attn": out.get("attn", []),
                      "denoised": denoised})
    return x


def sample_ddpm(model: Model, x: torch.Tensor, scheduler, timesteps: torch.Tensor,
                callback: Callback | None = None, generators: list[torch.Generator] | None = None,
                ties: Ties | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), stochastic: x_{t-1} = mu_theta(x_t, t) + sigma_t z.

    `generators` (one CPU generator per row) make the per-step z reproducible.
    """
    return _run(model, x, scheduler, timesteps, callback, ties, generator=generators)


def sample_ddim(model: Model, x: torch.Tensor, scheduler, timesteps: torch.Tensor,
                callback: Callback | None = None, generators: list[torch.Generator] | None = None,
                ties: Ties | None = None) -> torch.Tensor:
    """Deterministic DDIM sampling (Song et al. 2021, eq. 12 with eta = 0)."""
    return _run(model, x, scheduler, timesteps, callback, ties, eta=0.0)


def sample_dpmpp(model: Model, x: torch.Tensor, scheduler, timesteps: torch.Tensor,
                 callback: Callback | None = None, generators: list[torch.Generator] | None = None,
                 ties: Ties | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), second-order multistep in data prediction (Lu et al. 2022, Algorithm 2)."""
    return _run(model, x, scheduler, timesteps, callback, ties)


def sample_dpmpp_sde(model: Model, x: torch.Tensor, scheduler, timesteps: torch.Tensor,
                     callback: Callback | None = None, generators: list[torch.Generator] | None = None,
                     ties: Ties | None = None) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022): DPM-Solver++ with seeded noise re-injected each step."""
    return _run(model, x, scheduler, timesteps, callback, ties, generator=generators)


# DPM++(3M) and UniPC are deterministic multistep solvers like DPM++(2M): the same loop drives them.
SAMPLER_FUNCTIONS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp": sample_dpmpp, "dpmpp_sde": sample_dpmpp_sde,
                     "dpmpp3": sample_dpmpp, "unipc": sample_dpmpp}


def sample(denoise_fn: Callable[..., dict], x_T: torch.Tensor, cond: dict, uncond: dict | None = None,
           sampler: str = "dpmpp", steps: int = 20, guidance: float = 3.0, callback: Callback | None = None,
           generators: list[torch.Generator] | None = None, prediction_type: str = "epsilon", n_train: int = 1000,
           init: torch.Tensor | None = None, strength: float = 1.0, ties: Ties | None = None) -> torch.Tensor:
    """Run sampler `sampler` for `steps` steps from noise x_T (B, C, L); returns z_0 (B, C, L).

    cond / uncond: keyword inputs of denoise_fn for the conditional and the null
    branch (uncond None: no guidance). generators: per-row CPU generators for the
    stochastic sampler's step noise (pass those that drew x_T). SDEdit (Meng et al. 2022):
    with `init` (B, C, L) a clean latent and 0 < strength <= 1, x_T is used as the
    noise that takes init to t = strength * T, and only the last strength * steps
    steps run. ties: see `tie` (what-if edits that hold some subspaces to another row).
    """
    if sampler not in SAMPLER_FUNCTIONS:
        raise ValueError(f"sampler: unknown value {sampler!r}; allowed: {', '.join(SAMPLER_FUNCTIONS)}")
    if not isinstance(steps, int) or steps < 1 or steps > n_train:
        raise ValueError(f"steps: must be an integer in 1..{n_train}, got {steps!r}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength: must be in (0, 1], got {strength!r}")
    scheduler = make_scheduler(sampler, n_train, prediction_type)
    scheduler.set_timesteps(steps, device=x_T.device)
    timesteps = scheduler.timesteps
    x = x_T
    if init is not None:
        timesteps = timesteps[steps - max(1, round(steps * strength)):]
        x = scheduler.add_noise(init, x_T, timesteps[:1].repeat(init.shape[0]))
    model = guided(denoise_fn, cond, uncond, guidance)
    return SAMPLER_FUNCTIONS[sampler](model, x, scheduler, timesteps, callback, generators, ties)
