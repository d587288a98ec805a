"""The H-LDM 3-stage trainer: one readable loop, no framework hiding it (nanoGPT style).

Stages (DESIGN.md "Training"), each writing to `<out>/<stage>/`:

1. `vae`: the MS-VAE, L1 recon + annealed beta*KL + delta*L_disentangle (`MSVAE.loss`).
2. `ldm`: the conditioner + U-Net on the frozen VAE. z0 = mu(x) * latent_scale
   (the posterior mean; the scale 1/std(mu) is estimated on training latents when
   the stage starts and saved in the model config), cosine schedule, 10% condition
   dropout, coarse-to-fine curriculum (`hldm.train.weighting`).
3. `finetune`: same objective with capped inverse-frequency weights for rare
   conditions/grades and direct supervision of each structured-noise eps_i.
4. `distill` (optional, after the three): a few-step student of a trained pipeline
   with guidance folded in (`hldm.train.distill`).

Every stage: AdamW, warm-up + cosine LR, gradient clipping, EMA weights (those are
validated each epoch and exported), seeded, autocast on CUDA only, atomic
checkpoints every `checkpoint_every` steps (`hldm.train.state`), exact resume,
DDP under torchrun (`hldm.train.distributed`). A finished stage leaves its EMA
weights as a pipeline dir in `<out>/<stage>/final`; the last stage's is exported
to `<out>/model` with a model card.

Exact resume: the batch order is a pure function of (seed, epoch) (a
DistributedSampler permutation, sliced past the batches already done), the
DataLoader draws from its own generator, and every RNG state is restored from
the checkpoint, so "N steps, kill, resume to 2N" runs the same steps on the same
batches with the same random draws as "2N steps". Stage `vae` then ends
bit-identical (same torch thread count). Stages `ldm` and `finetune` agree to
float rounding only: the text encoder caches prompt embeddings, and one computed
in another batch (a resumed process starts with an empty cache) can differ in the
last bit (tests/test_train.py checks both).
"""
from __future__ import annotations

import math
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm import tqdm

from hldm.clinical.vocabulary import WINDOW_SOURCES
from hldm.paths import REPO
from hldm.train import distributed as D
from hldm.train.config import STAGES, StageConfig, TrainConfig
from hldm.train.data import TrainData, build_data
from hldm.train.ema import EMA
from hldm.train.logging import MetricsLogger, read_metrics
from hldm.train.state import (CheckpointError, ConfigMismatchError, TrainState, capture_rng, check_config,
                              has_checkpoint, load_state, read_index, restore_rng, save_state)
from hldm.train.weighting import RareWeights, curriculum_subspace_weights, curriculum_timestep_weights

DEFAULT_HEART_RATE = 80.0  # bpm, for windows whose heart rate is unknown (the U-Net needs a period)
VAL_SEED = 7919  # validation draws its noise from this seed: the same draws every epoch


# ---------------------------------------------------------------- pure schedules

def lr_at(step: int, total: int, cfg: StageConfig) -> float:
    """Linear warm-up for `warmup_steps`, then cosine decay from lr to min_lr_ratio * lr at `total`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- models

def _merge(base: dict, over: dict, prefix: str = "model") -> dict:
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise ConfigMismatchError([f"{prefix}.{k}"], f"{prefix}.{k}: unknown key; allowed: {', '.join(sorted(base))}")
        out[k] = _merge(base[k], v, f"{prefix}.{k}") if isinstance(v, dict) and isinstance(base[k], dict) else v
    return out


def model_config(cfg: TrainConfig):
    """HLDMConfig = defaults overridden by the preset's [model] tables; the window length comes from [data]."""
    from hldm.models.hldm import HLDMConfig

    d = _merge(HLDMConfig().to_dict(), cfg.model)
    d["diffusion"]["window_seconds"] = cfg.data.seconds
    return HLDMConfig.from_dict(d)


GENERATION_DEFAULTS = ("sampler", "steps", "guidance", "speckle", "gl_iters", "conform")  # diffusion keys training never reads


def _comparable(model_cfg: dict) -> dict:
    """A model config without what training itself sets (the latent scale) or never reads (the
    generation defaults), for comparisons."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in model_cfg.items()}
    for key in ("latent_scale", *GENERATION_DEFAULTS):
        d.get("diffusion", {}).pop(key, None)
    return d


def _init_dir(path: str) -> Path:
    """A stage's `init_from`: absolute, or relative to the repository (as the presets write it)."""
    p = Path(path)
    return p if p.is_absolute() else REPO / p


def _vae_shape(vae_cfg) -> dict:
    """What decides a VAE's tensors (not its loss weights), for continuing one under a new loss."""
    d = vae_cfg.to_dict()
    return {k: d[k] for k in ("n_bins", "channels", "blocks_per_stage", "latent_per_subspace", "time_downsample",
                              "rhythm_pool", "aux_hidden")}


def initial_model(stage: str, cfg: TrainConfig, out: Path, device: torch.device) -> nn.Module:
    """Stage 1 builds a fresh HLDM (its VAE taken from `[vae] init_from` when set). Stage 2 builds one too
    (its conditioner and U-Net taken from `[ldm] init_from` when set, to train a denoiser further) and takes only the VAE from stage 1, whose
    denoiser and conditioner were never trained, so a new denoiser design can reuse a trained VAE.
    Stage 3 starts from stage 2's EMA weights, whole; stage 4 from its teacher, whole."""
    from hldm.models.checkpoint import load_into
    from hldm.models.hldm import HLDM, load_checkpoint

    if stage == "vae":
        model = HLDM(model_config(cfg))
        if cfg.vae.init_from:
            init = _init_dir(cfg.vae.init_from)
            (previous, state), asked = load_checkpoint(init), model_config(cfg)
            check_config(_vae_shape(previous.vae), _vae_shape(asked.vae), f"the VAE of {init}")
            load_into({"vae": model.vae}, {k: v for k, v in state.items() if k.startswith("vae.")})
        return model.to(device)
    prev = STAGES[STAGES.index(stage) - 1]
    prev_dir = out / prev / "final"
    if stage == "distill":  # the teacher, whole: a trained pipeline or this run's stage 3
        (teacher, state) = load_checkpoint(_init_dir(cfg.distill.init_from) if cfg.distill.init_from else prev_dir)
        model = HLDM(teacher)
        load_into(model.parts(), state)
        return model.to(device)
    if not prev_dir.is_dir():
        raise FileNotFoundError(f"stage {stage!r} starts from stage {prev!r}, but {prev_dir} does not exist; "
                                f"run `python -m hldm train --stage {prev}` with the same --out first")
    (previous, state), wanted = load_checkpoint(prev_dir), model_config(cfg)
    saved, asked = _comparable(previous.to_dict()), _comparable(wanted.to_dict())
    if stage == "ldm":
        saved, asked = saved["vae"], asked["vae"]
    check_config(saved, asked, f"the model of stage {prev!r} in {prev_dir}")
    model = HLDM(wanted if stage == "ldm" else previous)
    modules = {"vae": model.vae} if stage == "ldm" else model.parts()
    load_into(modules, {k: v for k, v in state.items() if k.split(".", 1)[0] in modules})
    if stage == "ldm" and cfg.ldm.init_from:
        init = _init_dir(cfg.ldm.init_from)
        (trained, trained_state) = load_checkpoint(init)
        denoiser = ("cond", "unet", "diffusion")
        check_config({k: v for k, v in _comparable(trained.to_dict()).items() if k in denoiser},
                     {k: v for k, v in _comparable(wanted.to_dict()).items() if k in denoiser}, f"the model in {init}")
        # Its latents must be these: the same encoder (a decoder trained further may differ).
        encoder = [k for k in state if k.startswith("vae.") and not k.startswith("vae.decoder.")]
        if not all(k in trained_state and torch.equal(trained_state[k], state[k]) for k in encoder):
            raise ConfigMismatchError(["ldm.init_from"],
                                      f"ldm.init_from: {init} was trained on another VAE encoder than {prev_dir}'s")
        load_into({"cond": model.cond, "unet": model.unet},
                  {k: v for k, v in trained_state.items() if k.split(".", 1)[0] in ("cond", "unet")})
        model.config.diffusion.latent_scale = trained.diffusion.latent_scale  # the scale it was fitted at
    return model.to(device)


# ---------------------------------------------------------------- objectives

def _to(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    out["features"] = batch["features"].to(device, non_blocking=True)
    out["labels"] = {k: v.to(device, non_blocking=True) for k, v in batch["labels"].items()}
    return out


class VAEObjective(nn.Module):
    """Stage 1. forward(batch, step) -> (loss, parts); step None = validation (final KL weight).

    decoder_only: only the decoder trains; the encoder (in eval mode, as stage 2 uses it) and
    the heads stay as they were, so every latent a trained denoiser was fitted on keeps its
    meaning and the new decoder renders that denoiser's samples.
    """

    def __init__(self, model: nn.Module, decoder_only: bool = False):
        super().__init__()
        self.vae = model.vae
        self.decoder_only = decoder_only
        if decoder_only:
            for name, p in self.vae.named_parameters():
                p.requires_grad_(name.startswith("decoder."))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.decoder_only:
            self.vae.encoder.eval()
        return self

    def forward(self, batch: dict, step: int | None):
        vae = self.vae
        if step is None:
            total, parts = vae.loss(batch["features"], batch["labels"], beta=float(vae.config.beta_max))
        else:
            total, parts = vae.loss(batch["features"], batch["labels"], step=step)
        return total, {"loss": float(total.detach()), **{k: v for k, v in parts.items() if k != "total"}}


def known_rate(hr: torch.Tensor) -> torch.Tensor:
    """hr (B,) with unknown rates (NaN, 0) replaced by DEFAULT_HEART_RATE."""
    return torch.where(torch.isfinite(hr) & (hr > 0), hr, torch.full_like(hr, DEFAULT_HEART_RATE))


class DiffusionObjective(nn.Module):
    """Stages 2 and 3: the denoising loss on the frozen VAE's scaled posterior mean.

    curriculum_end None: uniform subspace and timestep weights. rare: per-sample
    weights (stage 3). eps_i_weight > 0 adds the mean of `subspace_losses`.
    Validation (step None) is the plain unweighted loss without condition dropout.
    """

    def __init__(self, model: nn.Module, total_steps: int, cond_dropout: float,
                 curriculum_end: float | None = None, rare: RareWeights | None = None, eps_i_weight: float = 0.0):
        super().__init__()
        from hldm.diffusion.schedules import cosine_alphas_cumprod

        self.model = model
        self.total_steps = total_steps
        self.cond_dropout = cond_dropout
        self.curriculum_end = curriculum_end
        self.rare = rare
        self.eps_i_weight = eps_i_weight
        dcfg = model.config.diffusion
        self.n_train = int(dcfg.n_train)
        self.prediction_type = dcfg.prediction_type
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(self.n_train).float(), persistent=False)
        self._mu: dict[tuple, torch.Tensor] = {}  # window key -> its VAE posterior mean (16, L), CPU
        for p in model.vae.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.vae.eval()  # frozen: its posterior mean is the data
        return self

    @torch.no_grad()
    def latents(self, batch: dict) -> torch.Tensor:
        """z0 = mu * latent_scale of the batch's windows, (B, 16, L).

        The VAE is frozen and every window is deterministic, so each window's mu is computed
        once, in the first batch that holds it, and kept (16 x 125 floats a 4 s window, ~90 MB
        for 11,500 windows): later epochs skip the encoder. Keyed by the window's source and meta.
        """
        # A window without meta cannot be told from another: encoded every time, never kept.
        keys = [(src, tuple(sorted(meta.items()))) if meta else None
                for src, meta in zip(batch["source"], batch["meta"])]
        todo = [i for i, k in enumerate(keys) if k is None or k not in self._mu]
        fresh = {}
        if todo:
            mu, _ = self.model.vae.encode(batch["features"][todo])
            fresh = dict(zip(todo, mu.float().cpu()))
            self._mu.update({keys[i]: row for i, row in fresh.items() if keys[i] is not None})
        mu = torch.stack([fresh[i] if i in fresh else self._mu[k] for i, k in enumerate(keys)])
        return mu.to(batch["features"].device) * self.model.config.diffusion.latent_scale

    def forward(self, batch: dict, step: int | None):
        from hldm.diffusion.loss import diffusion_loss, q_sample, subspace_losses, training_target

        m = self.model
        z0 = self.latents(batch)  # (B, 16, L)
        B, dev = z0.shape[0], z0.device
        drop = torch.rand(B, device=dev) < self.cond_dropout if step is not None else None
        c, hr = m.cond(batch["findings"], batch["prompts"], drop_mask=drop,
                       sources=[WINDOW_SOURCES[s] for s in batch["source"]])
        hr = known_rate(hr)
        t = torch.randint(0, self.n_train, (B,), device=dev)
        noise = torch.randn_like(z0)
        z_t = q_sample(z0, t, noise, self.alphas_cumprod)
        out = m.unet(z_t, t, c, hr)
        target = training_target(z0, t, noise, self.alphas_cumprod, self.prediction_type)

        sub_w = time_w = sample_w = None
        if step is not None and self.curriculum_end is not None:
            progress = step / self.total_steps
            sub_w = curriculum_subspace_weights(progress, self.curriculum_end)
            time_w = curriculum_timestep_weights(self.n_train, progress, self.curriculum_end)
        if step is not None and self.rare is not None:
            sample_w = self.rare(batch["findings"])
        loss = diffusion_loss(out["eps"], target, t, sub_w, time_w, sample_w)
        parts = {"mse": float(diffusion_loss(out["eps"].detach(), target))}
        if self.eps_i_weight > 0 and out.get("eps_i") is not None:
            from hldm.clinical.vocabulary import SUBSPACES

            sub = subspace_losses(out["eps_i"], target)  # (4,)
            loss = loss + self.eps_i_weight * sub.mean()
            parts.update({f"eps_{name}": float(v) for name, v in zip(SUBSPACES, sub.detach())})
        if sub_w is not None:
            parts.update({f"w_{name}": float(v) for name, v in zip(("rhythm", "s1s2", "murmur", "noise"), sub_w)})
        return loss, {"loss": float(loss.detach()), **parts}


def item_findings(ds: Dataset, i: int):
    """Findings of item i, looking through Subset/ConcatDataset; uses a cheap `findings_at` when offered."""
    if isinstance(ds, Subset):
        return item_findings(ds.dataset, ds.indices[i])
    if isinstance(ds, ConcatDataset):
        import bisect

        d = bisect.bisect_right(ds.cumulative_sizes, i)
        return item_findings(ds.datasets[d], i - (ds.cumulative_sizes[d - 1] if d else 0))
    if hasattr(ds, "findings_at"):
        return ds.findings_at(i)
    return ds[i]["findings"]


@torch.no_grad()
def estimate_latent_scale(objective: DiffusionObjective, loader, n_batches: int, device: torch.device,
                          info: D.DistInfo) -> float:
    """1 / std of the VAE posterior means over the first training batches (all ranks pooled)."""
    s = torch.zeros(3, dtype=torch.float64, device=device)  # sum, sum of squares, count
    m = objective.model
    for i, batch in enumerate(loader):
        if i >= n_batches:
            break
        mu, _ = m.vae.encode(batch["features"].to(device))
        s += torch.stack([mu.double().sum(), mu.double().square().sum(),
                          torch.tensor(mu.numel(), dtype=torch.float64, device=device)])
    D.all_reduce_sum(s, info)
    mean = s[0] / s[2]
    std = (s[1] / s[2] - mean ** 2).clamp_min(1e-12).sqrt()
    return float(1.0 / std)


def make_objective(stage: str, model: nn.Module, scfg: StageConfig, total: int, data: TrainData,
                   info: D.DistInfo) -> nn.Module:
    if stage == "vae":
        return VAEObjective(model, scfg.decoder_only)
    if stage == "ldm":
        return DiffusionObjective(model, total, scfg.cond_dropout,
                                  curriculum_end=scfg.curriculum_end if scfg.curriculum else None)
    if stage == "distill":
        from hldm.train.distill import DistillObjective

        return DistillObjective(model, total, scfg.steps, scfg.substeps, scfg.guidance)
    findings = [item_findings(data.train, i) for i in range(len(data.train))]
    return DiffusionObjective(model, total, scfg.cond_dropout, rare=RareWeights(findings, scfg.rare_weight_cap),
                              eps_i_weight=scfg.eps_i_weight)


# ---------------------------------------------------------------- data loading

def epoch_loader(dataset: Dataset, sampler, epoch: int, skip_batches: int, batch_size: int,
                 num_workers: int, seed: int) -> DataLoader:
    """The batches of `epoch` after the first `skip_batches` (a resume lands mid-epoch)."""
    from hldm.data.windows import collate

    sampler.set_epoch(epoch)
    indices = list(sampler)[skip_batches * batch_size:]
    # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, collate_fn=collate, drop_last=True,
                      num_workers=num_workers, generator=gen, persistent_workers=False)


@torch.no_grad()
def validate(objective: nn.Module, model: nn.Module, ema: EMA, dataset: Dataset, scfg: StageConfig,
             info: D.DistInfo, num_workers: int) -> dict[str, float]:
    """Mean validation metrics of the EMA weights; same noise draws every epoch, training RNG untouched."""
    from hldm.data.windows import collate

    if len(dataset) == 0:
        return {}
    rng = capture_rng()
    sampler = D.DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=scfg.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=num_workers)
    sums: dict[str, float] = {}
    count = 0
    objective.eval()
    try:
        with ema.applied(model):
            torch.manual_seed(VAL_SEED)
            for batch in loader:
                with _autocast(info.device):
                    _, parts = objective(_to(batch, info.device), None)
                n = batch["features"].shape[0]
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * n
                count += n
    finally:
        objective.train()
        restore_rng(rng)
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=info.device)
    D.all_reduce_sum(t, info)
    return {k: float(v / t[-1]) for k, v in zip(keys, t[:-1])}


# ---------------------------------------------------------------- mixed precision

def _amp_dtype(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device):
    dtype = _amp_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


# ---------------------------------------------------------------- one stage

@dataclass
class StageResult:
    stage: str
    step: int
    total_steps: int
    completed: bool
    wall_s: float
    dir: Path


def stage_run_config(stage: str, cfg: TrainConfig, info: D.DistInfo) -> dict:
    """What a stage's checkpoint must agree with to be resumed."""
    return {"stage": stage, "seed": cfg.seed, "model": cfg.model, "data": cfg.to_dict()["data"],
            "stage_config": cfg.to_dict()[stage], "world_size": info.world_size}


def toml_keys(run_cfg: dict, stage: str) -> dict:
    """`run_cfg` with the stage's settings under its TOML table name, so a mismatch names e.g. `ldm.lr`."""
    d = dict(run_cfg)
    d[stage] = d.pop("stage_config")
    return d


def train_stage(stage: str, cfg: TrainConfig, out: Path, data: TrainData, info: D.DistInfo, *,
                resume: bool = False, stop_after: int | None = None, log=print) -> StageResult:
    scfg = cfg.stage(stage)
    stage_dir = out / stage
    run_cfg = stage_run_config(stage, cfg, info)
    dev = info.device

    state = None
    if has_checkpoint(stage_dir):
        index = read_index(stage_dir)
        if not resume:
            raise FileExistsError(f"{stage_dir} already holds a checkpoint at step {index['step']}; "
                                  f"pass --resume to continue it, or choose a new --out")
        check_config(toml_keys(index["meta"]["run"], stage), toml_keys(run_cfg, stage),
                     f"the checkpoint in {stage_dir}")
        if index["meta"].get("completed") and (stage_dir / "final").is_dir():
            log(f"[{stage}] already complete at step {index['step']}; skipping")
            return StageResult(stage, index["step"], index["meta"]["total_steps"], True,
                               index["meta"]["wall_s"], stage_dir)
        state = load_state(stage_dir, dev)

    stage_seed = cfg.seed + 1000 * STAGES.index(stage)
    seed_everything(stage_seed)  # the same initial weights on every rank
    model = initial_model(stage, cfg, out, dev)
    seed_everything(stage_seed + info.rank)  # each rank its own noise, dropout and timesteps
    if state is not None and "latent_scale" in state.meta:
        model.config.diffusion.latent_scale = state.meta["latent_scale"]

    sampler = D.make_sampler(data.train, info, seed=cfg.seed)
    steps_per_epoch = len(sampler) // scfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{stage}.batch_size: {scfg.batch_size} per process x {info.world_size} processes "
                         f"exceeds the {len(data.train)} training windows; lower it or add data")
    total = scfg.epochs * steps_per_epoch
    if scfg.max_steps:
        total = min(total, scfg.max_steps)

    objective = make_objective(stage, model, scfg, total, data, info).to(dev)
    if stage == "ldm" and state is None and not scfg.init_from:
        loader = epoch_loader(data.train, sampler, 0, 0, scfg.batch_size, cfg.data.num_workers, cfg.seed)
        model.config.diffusion.latent_scale = estimate_latent_scale(
            objective, loader, scfg.latent_scale_batches, dev, info)
        log(f"[{stage}] latent scale factor {model.config.diffusion.latent_scale:.4f} (1 / std of mu)")

    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=scfg.lr, weight_decay=scfg.weight_decay, betas=(0.9, 0.999))
    ema = EMA(model, scfg.ema_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=_amp_dtype(dev) == torch.float16)
    step, wall_before = 0, 0.0
    if state is not None:
        model.load_state_dict(state.model)
        ema.load_state_dict(state.ema, state.meta["ema_updates"])
        optimizer.load_state_dict(state.optimizer)
        scaler.load_state_dict(state.meta["scaler"])
        if len(state.rng) != info.world_size:
            raise CheckpointError(f"{stage_dir}: checkpoint holds RNG states of {len(state.rng)} processes, "
                                  f"this run has {info.world_size}")
        restore_rng(state.rng[info.rank])
        step, wall_before = state.step, float(state.meta["wall_s"])
        log(f"[{stage}] resumed at step {step}/{total}")
    elif info.is_main:
        log(f"[{stage}] {total} steps ({steps_per_epoch}/epoch x {scfg.epochs} epochs"
            f"{', capped by max_steps' if scfg.max_steps and total == scfg.max_steps else ''}), "
            f"{sum(p.numel() for p in params):,} trainable parameters, world size {info.world_size}, device {dev}")

    ddp_objective = D.wrap_ddp(objective, info, find_unused=stage != "vae")
    logger = MetricsLogger(stage_dir, resume_step=step, enabled=info.is_main)
    bar = tqdm(total=total, initial=step, desc=stage, disable=not info.is_main, dynamic_ncols=True)
    t_start = time.time()

    def checkpoint(completed: bool) -> None:
        rng = D.gather_objects(capture_rng(), info)
        if info.is_main:
            meta = {"run": run_cfg, "total_steps": total, "steps_per_epoch": steps_per_epoch,
                    "ema_updates": ema.updates, "scaler": scaler.state_dict(), "completed": completed,
                    "wall_s": wall_before + time.time() - t_start, "model_config": model.config.to_dict()}
            if stage != "vae":
                meta["latent_scale"] = float(model.config.diffusion.latent_scale)
            save_state(stage_dir, TrainState(step, model.state_dict(), ema.state_dict(),
                                             optimizer.state_dict(), rng, meta))
        D.barrier(info)

    objective.train()
    try:
        while step < total:
            epoch, done_in_epoch = divmod(step, steps_per_epoch)
            loader = epoch_loader(data.train, sampler, epoch, done_in_epoch, scfg.batch_size,
                                  cfg.data.num_workers, cfg.seed)
            for batch in loader:
                lr = lr_at(step, total, scfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with _autocast(dev):
                    loss, parts = ddp_objective(_to(batch, dev), step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, scfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                ema.update(model)
                step += 1

                metrics = D.all_reduce_mean({**parts, "lr": lr, "grad_norm": float(grad_norm)}, info)
                if step % scfg.log_every == 0 or step == total:
                    logger.log(step, epoch, "train", metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if step % steps_per_epoch == 0 or step == total:
                    val = validate(objective, model, ema, data.val, scfg, info, cfg.data.num_workers)
                    logger.log(step, epoch, "val", val)
                    if val:
                        bar.write(f"[{stage}] epoch {epoch + 1} step {step}: val loss {val['loss']:.4f}")
                if step == total or step % scfg.checkpoint_every == 0 or step == stop_after:
                    checkpoint(completed=step == total)
                if step == stop_after and step < total:
                    log(f"[{stage}] stopped at step {step}/{total} (--stop-after); continue with --resume")
                    return StageResult(stage, step, total, False, wall_before + time.time() - t_start, stage_dir)
                if step >= total:
                    break
    finally:
        bar.close()
        logger.close()

    D.assert_in_sync(model, info)
    if info.is_main:
        with ema.applied(model):
            save_pipeline(model, stage_dir / "final", card=f"# H-LDM stage {stage!r} EMA weights\n\n"
                                                          f"Intermediate result of `python -m hldm train`; "
                                                          f"see the exported model for the full card.")
    D.barrier(info)
    return StageResult(stage, step, total, True, wall_before + time.time() - t_start, stage_dir)


# ---------------------------------------------------------------- export

def save_pipeline(model: nn.Module, directory: Path, card: str) -> Path:
    from hldm.models.hldm import save_model

    return save_model(directory, model, card)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def hardware(info: D.DistInfo) -> str:
    if info.device.type == "cuda":
        name = torch.cuda.get_device_name(info.device)
        return f"{info.world_size} x {name} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return (f"{info.world_size} process(es) on CPU ({platform.machine()}, {os.cpu_count()} cores visible, "
            f"{torch.get_num_threads()} torch threads each), torch {torch.__version__}")


def final_losses(stage_dir: Path, metric: str = "loss", last: int = 50) -> dict[str, float | None]:
    """Mean train `metric` over the last `last` logged steps and the last validation value."""
    path = stage_dir / "metrics.csv"
    if not path.is_file():
        return {"train": None, "val": None}
    rows = read_metrics(path)
    train = [r["value"] for r in rows if r["split"] == "train" and r["metric"] == metric][-last:]
    val = [r["value"] for r in rows if r["split"] == "val" and r["metric"] == metric]
    return {"train": sum(train) / len(train) if train else None, "val": val[-1] if val else None}


def model_card(cfg: TrainConfig, out: Path, data: TrainData, info: D.DistInfo, stages: list[str]) -> str:
    lines = [f"# H-LDM Studio model: preset `{cfg.name}`", "",
             "EMA weights of the 3-stage trainer (`python -m hldm train`), loadable with "
             "`HLDMPipeline.from_pretrained(dir)`.", "", "## Data", ""]
    card = data.card()
    lines += [f"- source: {card['source']}"
              + (" (CirCor DigiScope train split, patient-level 70/15/15, test patients never read)"
                 if card["source"] != "sim" else " (physiological simulator only)"),
              f"- training windows: {card['windows'].get('train_real', 0)} real + "
              f"{card['windows'].get('train_augmented', 0)} augmented real (re-timed, placed murmurs; "
              f"hldm.data.augment) + {card['windows'].get('train_sim', 0)} simulated ({cfg.data.seconds:g} s each); "
              f"simulated share {card['sim_fraction']:.1%} (config sim_fraction {cfg.data.sim_fraction:g})",
              f"- validation windows: {card['windows'].get('val_real', 0)} real + {card['windows'].get('val_sim', 0)} simulated",
              f"- split sha256: {card['split_sha256'] or 'n/a (no real data)'} (split seed {cfg.data.split_seed})"]
    if card["notice"]:
        lines.append(f"- notice: {card['notice']}")
    lines += ["", "## Training", "", f"- hardware: {hardware(info)}", f"- seed: {cfg.seed}", "",
              "| stage | steps | epochs | batch/process | wall time | final train loss | final val loss |",
              "|---|---|---|---|---|---|---|"]
    total_wall = 0.0
    for stage in stages:
        meta = read_index(out / stage)["meta"]
        losses = final_losses(out / stage, "loss" if stage == "vae" else "mse")
        total_wall += meta["wall_s"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {stage} | {meta['total_steps']} | {meta['total_steps'] / meta['steps_per_epoch']:.1f} | "
                     f"{cfg.stage(stage).batch_size} | {duration(meta['wall_s'])} | "
                     f"{fmt(losses['train'])} | {fmt(losses['val'])} |")
    lines += ["", f"Total wall time: {duration(total_wall)}. Losses: `vae` is the full MS-VAE objective "
                  "(L1 recon + beta KL + delta disentanglement); `ldm` and `finetune` give the plain, unweighted "
                  "denoising MSE (comparable between the two stages). Train: mean of the last 50 steps; "
                  "val: EMA weights on the validation windows, the same noise draws every epoch."]
    return "\n".join(lines) + "\n"


def export(cfg: TrainConfig, out: Path, data: TrainData, info: D.DistInfo, last_stage: str) -> Path:
    """Copy the last stage's EMA weights to `<out>/model` with the model card."""
    from hldm.models.hldm import load_model

    model = load_model(out / last_stage / "final")
    stages = [s for s in STAGES if has_checkpoint(out / s)]
    return save_pipeline(model, out / "model", model_card(cfg, out, data, info, stages))


# ---------------------------------------------------------------- the run

def run(stages: list[str], cfg: TrainConfig, out: Path, *, resume: bool = False, stop_after: int | None = None,
        device: str | None = None, log=print) -> list[StageResult]:
    """Train `stages` in order (each needs the previous one's result in `out`, or distill its `init_from`);
    export after `finetune` or `distill`."""
    info = D.init_distributed(device)
    if not info.is_main:
        log = lambda *a, **k: None  # noqa: E731
    try:
        out = Path(out)
        data = build_data(cfg.data, cfg.seed, log=log)
        log(f"data: {data.card()}")
        results = []
        for stage in stages:
            res = train_stage(stage, cfg, out, data, info, resume=resume, stop_after=stop_after, log=log)
            results.append(res)
            if not res.completed:
                break
        if results and results[-1].completed and results[-1].stage in ("finetune", "distill") and info.is_main:
            path = export(cfg, out, data, info, results[-1].stage)
            log(f"exported {path}")
        D.barrier(info)
        return results
    finally:
        D.cleanup(info)
