"""H-LDM: the container that holds the three trained parts and the config they are built from.

    x (B, 129, T) --MS-VAE encode--> mu (B, 16, L);  z0 = mu * latent_scale
    findings, prompts --conditioner--> c (B, D), hr (B,)
    z_t --U-Net(z_t, t, c, hr)--> eps_hat = sum_i w_i(c) eps_i  (+ Medical Attention masks)
    z0 / latent_scale --MS-VAE decode--> features (B, 129, T)

`latent_scale` (1 / std of the VAE posterior means, set by the trainer after stage
1) brings the latent to unit variance, which the noise schedule assumes (as Stable
Diffusion's 0.18215). The four ablations of the paper's Table III are flags on
`HLDMConfig` that switch the corresponding sub-config field (`ABLATIONS`); the flags
always mirror the sub-configs, so a config read back from JSON says which
ablation a checkpoint is.

Checkpoints (`save_model` / `load_model`) are directories of model.safetensors +
config.json + README.md written through hldm.models.checkpoint.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn

from hldm.diffusion.schedules import PREDICTION_TYPES, SAMPLERS
from hldm.models.checkpoint import CheckpointError, load_into, load_state, read_config, save_checkpoint
from hldm.models.condition import ConditionConfig, build_conditioner
from hldm.models.ms_vae import MSVAE, MSVAEConfig
from hldm.models.unet import ConditionalUNet1D, UNetConfig

MODEL_TYPE = "hldm"
FORMAT_VERSION = 1

# flag -> (sub-config, field, value when the component is removed)
ABLATIONS: dict[str, tuple[str, str, object]] = {
    "no_medical_attention": ("unet", "medical_attention", False),  # plain self-attention, no M_cardiac
    "labels_only": ("cond", "kind", "label"),  # one-hot attributes instead of L1/L2/L3 text + graph
    "no_disentangle": ("vae", "disentangle", False),  # no L_disentangle gradient into the encoder
    "no_structured_noise": ("unet", "structured_noise", False),  # a single eps head, w constant
}


@dataclass
class DiffusionConfig:
    """Diffusion settings saved with the weights; sampler/steps/guidance are generation defaults."""

    n_train: int = 1000  # training timesteps of the cosine schedule
    prediction_type: str = "epsilon"  # or "v_prediction"
    latent_scale: float = 1.0  # z0 = mu * latent_scale; the trainer sets 1 / std(mu) after stage 1
    sampler: str = "dpmpp"
    steps: int = 20
    guidance: float = 3.0
    window_seconds: float = 4.0  # length of the training windows (generation may be longer)
    speckle: bool = False  # a recorded noise's texture on the decoded magnitudes before Griffin-Lim (features.invert)
    gl_iters: int = 32  # Griffin-Lim iterations of the inversion (a generation default like steps)
    conform: bool = False  # edit each clip to its findings' rate, murmur phase and level (hldm.conformance)

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"diffusion.prediction_type: unknown value {self.prediction_type!r}; "
                             f"allowed: {', '.join(PREDICTION_TYPES)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"diffusion.sampler: unknown value {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if not 1 <= int(self.steps) <= int(self.n_train):
            raise ValueError(f"diffusion.steps: {self.steps!r}; allowed: 1..n_train ({self.n_train})")
        if not isinstance(self.gl_iters, int) or not 1 <= self.gl_iters <= 256:
            raise ValueError(f"diffusion.gl_iters: {self.gl_iters!r}; allowed: an integer in 1..256")
        if not self.latent_scale > 0:
            raise ValueError(f"diffusion.latent_scale: {self.latent_scale!r}; must be > 0")
        if not self.window_seconds > 0:
            raise ValueError(f"diffusion.window_seconds: {self.window_seconds!r}; must be > 0")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        _check_keys("diffusion", d, cls)
        return cls(**d)


def _check_keys(where: str, d: dict, cls) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


_SUBCONFIGS = {"vae": MSVAEConfig, "cond": ConditionConfig, "unet": UNetConfig, "diffusion": DiffusionConfig}


@dataclass
class HLDMConfig:
    """Everything needed to rebuild an HLDM; saved as JSON next to the weights.

    Ablation flags: True switches the component off in its sub-config; a flag
    left False is set from the sub-config, so flags and sub-configs never disagree.
    """

    vae: MSVAEConfig = field(default_factory=MSVAEConfig)
    cond: ConditionConfig = field(default_factory=ConditionConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    no_medical_attention: bool = False
    labels_only: bool = False
    no_disentangle: bool = False
    no_structured_noise: bool = False

    def __post_init__(self):
        for flag, (sub, name, off) in ABLATIONS.items():
            if getattr(self, flag):
                setattr(self, sub, replace(getattr(self, sub), **{name: off}))
            setattr(self, flag, getattr(getattr(self, sub), name) == off)
        if self.cond.dim != self.unet.cond_dim:
            raise ValueError(f"unet.cond_dim ({self.unet.cond_dim}) must equal cond.dim ({self.cond.dim})")
        if self.vae.latent_channels != self.unet.latent_channels:
            raise ValueError(f"unet.latent_channels ({self.unet.latent_channels}) must equal the VAE's "
                             f"{self.vae.latent_channels} (vae.latent_per_subspace x 4)")
        if self.vae.time_downsample != self.unet.time_downsample:
            raise ValueError(f"unet.time_downsample ({self.unet.time_downsample}) must equal "
                             f"vae.time_downsample ({self.vae.time_downsample})")

    @property
    def ablations(self) -> tuple[str, ...]:
        """The active ablation flags, () for the full model."""
        return tuple(flag for flag in ABLATIONS if getattr(self, flag))

    def to_dict(self) -> dict:
        d = {name: getattr(self, name).to_dict() for name in _SUBCONFIGS}
        d.update({flag: getattr(self, flag) for flag in ABLATIONS})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HLDMConfig":
        """Inverse of to_dict; missing keys take their defaults, unknown keys raise ValueError."""
        _check_keys("model config", d, cls)
        kwargs = {name: sub.from_dict(d[name]) for name, sub in _SUBCONFIGS.items() if name in d}
        for flag in ABLATIONS:
            if flag in d:
                if not isinstance(d[flag], bool):
                    raise ValueError(f"{flag}: must be true or false, got {d[flag]!r}")
                kwargs[flag] = d[flag]
        return cls(**kwargs)

    @classmethod
    def default(cls, **flags: bool) -> "HLDMConfig":
        """The shipped model's architecture (DESIGN.md: U-Net 128/256/256, one attention level)."""
        return cls(**flags)

    @classmethod
    def tiny(cls, **flags: bool) -> "HLDMConfig":
        """A few-thousand-parameter model for tests: builds and samples in well under a second."""
        return cls(
            vae=MSVAEConfig(channels=(8, 12, 16), aux_hidden=8),
            cond=ConditionConfig(dim=16, text_trainable_layers=0, graph_hidden=16, label_embed_dim=4,
                                 cache_size=64),
            unet=UNetConfig(channels=(16, 32), attention_levels=(1,), heads=2, cond_dim=16,
                            time_embed_dim=16, emb_dim=32, dropout=0.0),
            diffusion=DiffusionConfig(steps=4, n_train=1000),
            **flags,
        )


class HLDM(nn.Module):
    """MS-VAE (.vae) + condition encoder (.cond) + conditional U-Net (.unet), built from an HLDMConfig."""

    def __init__(self, config: HLDMConfig | None = None):
        super().__init__()
        self.config = config or HLDMConfig()
        self.vae = MSVAE(self.config.vae)
        self.cond = build_conditioner(self.config.cond)
        self.unet = ConditionalUNet1D(self.config.unet)

    def parts(self) -> dict[str, nn.Module]:
        """The three modules a checkpoint stores, by the name their tensors are prefixed with."""
        return {"vae": self.vae, "cond": self.cond, "unet": self.unet}

    def condition(self, findings: list, prompts: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(c (B, D), hr (B,)) for validated findings and their prompts."""
        return self.cond(findings, prompts)

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor, hr: torch.Tensor) -> dict:
        """The U-Net: z_t (B, 16, L), t (B,), c (B, D), hr (B,) -> dict(eps, w, eps_i, attn)."""
        return self.unet(z_t, t, c, hr)

    def to_latent(self, features: torch.Tensor) -> torch.Tensor:
        """Features (B, 129, T) -> diffusion latent z0 = mu * latent_scale (B, 16, ceil(T / 4))."""
        mu, _ = self.vae.encode(features)
        return mu * self.config.diffusion.latent_scale

    def from_latent(self, z0: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Diffusion latent (B, 16, L) -> features (B, 129, n_frames or 4L)."""
        return self.vae.decode(z0 / self.config.diffusion.latent_scale, n_frames)

    def attention_names(self) -> list[str]:
        """Names of the U-Net's Medical Attention layers, in the order their masks are returned."""
        levels = self.config.unet.attention_levels
        n = len(self.config.unet.channels)
        down = [f"down{i}" for i in range(n) if i in levels]
        mid = ["mid"] if n - 1 in levels else []
        up = [f"up{i}" for i in reversed(range(n)) if i in levels]
        return down + mid + up

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part and in total, and `stored`: tensor elements a checkpoint holds
        (the MiniLM base re-loaded from its package is counted in `cond` but not stored)."""
        parts = self.parts()
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
        counts["total"] = sum(counts.values())
        counts["stored"] = sum(t.numel() for m in parts.values() for t in m.state_dict().values())
        return counts


def save_model(directory: str | os.PathLike, model: HLDM, card: str | None = None) -> Path:
    """Write model.safetensors + config.json + README.md into `directory` (atomically)."""
    config = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, "config": model.config.to_dict()}
    default_card = (f"# H-LDM Studio model\n\nAblations: {', '.join(model.config.ablations) or 'none (full model)'}."
                    "\n\nLoad with `hldm.pipeline.HLDMPipeline.from_pretrained(dir)`.")
    return save_checkpoint(directory, model.parts(), config, card or default_card)


def load_model(directory: str | os.PathLike) -> HLDM:
    """Rebuild an HLDM from a directory written by `save_model`, on CPU, in eval mode.

    Raises CheckpointError for a missing or non-H-LDM directory, a bad config or
    weights that do not fit the config.
    """
    config, state = load_checkpoint(directory)
    model = HLDM(config)
    load_into(model.parts(), state)
    return model.eval()


def load_checkpoint(directory: str | os.PathLike) -> tuple[HLDMConfig, dict[str, torch.Tensor]]:
    """The validated config and the raw "<module>.<key>" tensors of a `save_model` directory, without
    building the model (a caller that needs one module, e.g. stage 2 taking the VAE, loads only it)."""
    raw, state = load_state(directory)
    return _validated(directory, raw), state


def load_config(directory: str | os.PathLike) -> HLDMConfig:
    """The validated config of a `save_model` directory, without reading its weights (the app builds
    its page from the generation defaults while the weights load)."""
    return _validated(directory, read_config(directory))


def _validated(directory, raw: dict) -> HLDMConfig:
    if raw.get("model_type") != MODEL_TYPE or not isinstance(raw.get("config"), dict):
        raise CheckpointError(f"{directory}: config.json is not an H-LDM model config "
                              f"(model_type {raw.get('model_type')!r}, expected {MODEL_TYPE!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: format_version {raw.get('format_version')!r} not supported; "
                              f"this code reads version {FORMAT_VERSION}")
    try:
        return HLDMConfig.from_dict(raw["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{directory}: invalid model config: {e}") from e
