"""Training run configuration: one TOML preset -> `TrainConfig` (train/tiny.toml, cpu.toml, paper.toml).

A preset has top-level `name` and `seed`, a `[model]` table of overrides for
`hldm.models.hldm.HLDMConfig` (nested tables: `[model.vae]`, `[model.unet]`, ...),
a `[data]` table (`DataConfig`) and one table per stage (`[vae]`, `[ldm]`,
`[finetune]`). Every key is checked: an unknown key or a bad value raises
`ConfigError` naming it and what is allowed, before anything trains.

The resolved config (`TrainConfig.to_dict()`) is stored in every checkpoint; a
resume compares it key by key (`hldm.train.state.check_config`).
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hldm.paths import REPO

STAGES = ("vae", "ldm", "finetune", "distill")
DATA_SOURCES = ("circor", "sim", "mix")
PRESET_DIR = REPO / "train"


class ConfigError(ValueError):
    """A preset key or value that is not allowed; `.field` names it (dotted)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class DataConfig:
    """What the stages train on.

    source "circor": CirCor train split only; "sim": simulator only; "mix": both,
    with `sim_fraction` of the training windows drawn from the simulator (grades
    IV-VI and the rare conditions CirCor lacks). Without the real data, "circor"
    and "mix" fall back to the simulator with a printed notice.
    """

    source: str = "mix"
    seconds: float = 4.0  # window length
    sim_fraction: float = 0.3  # share of simulated windows in the training set ("mix")
    sim_windows: int = 2000  # training windows for "sim" (and the cap for "mix")
    val_sim_windows: int = 128  # simulated validation windows ("sim" and "mix")
    max_real_windows: int = 0  # 0 = every CirCor training window; else a seeded subset
    # Re-timed real windows with placed murmurs (hldm.data.augment), on top of the real ones ("circor", "mix").
    augmented_windows: int = 0
    # Val windows overlap heavily (one per S1 onset); a seeded subset keeps each epoch's check cheap.
    max_val_windows: int = 0  # 0 = every CirCor validation window
    split_seed: int = 0  # patient-level split (hldm.data.circor.load_or_make_split)
    num_workers: int = 0


@dataclass
class StageConfig:
    """Optimisation settings shared by the three stages.

    The stage runs `epochs` passes over the training set (`max_steps` > 0 caps the
    total, for quick presets). LR: linear warm-up over `warmup_steps`, then cosine
    decay to `min_lr_ratio` x lr (`lr_at`).
    """

    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 16
    lr: float = 2e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 200  # steps; a checkpoint is also written at the end of the stage
    log_every: int = 1  # steps between metric rows
    # A pipeline dir (repo-relative or absolute) whose weights the stage starts from instead of a
    # fresh init: stage 1 takes its VAE, stage 2 its conditioner and U-Net (same model config and
    # VAE required), to train further under a new loss, data or budget. "" = fresh.
    init_from: str = ""
    # Stage 1 only: train the decoder alone (the encoder, hence the latents a trained denoiser
    # was fitted on, stay as they were); with init_from, a sharper decoder for an existing model.
    decoder_only: bool = False


@dataclass
class LDMStageConfig(StageConfig):
    """Stage 2, the U-Net on the frozen VAE latent (coarse-to-fine curriculum, `hldm.train.curriculum`)."""

    cond_dropout: float = 0.1
    curriculum: bool = True
    curriculum_end: float = 0.75  # fraction of the stage after which all weights are uniform
    latent_scale_batches: int = 8  # training batches used to estimate the latent scale factor


@dataclass
class FinetuneStageConfig(StageConfig):
    """Stage 3, clinical fine-tuning: capped inverse-frequency weights + direct eps_i supervision."""

    cond_dropout: float = 0.1
    rare_weight_cap: float = 5.0
    eps_i_weight: float = 0.5


@dataclass
class DistillStageConfig(StageConfig):
    """Stage 4, a few-step student (`hldm.train.distill`): `steps` DDIM steps without a null branch, each
    taught by `substeps` guided DPM-Solver++(2M) steps of the teacher (`init_from`, else stage 3's
    result) at `guidance`."""

    steps: int = 6
    substeps: int = 4
    guidance: float = 3.0


# Stage 1 (MS-VAE) needs nothing beyond StageConfig: its KL annealing (beta_max,
# kl_anneal_steps) and delta are part of the model config ([model.vae]).
STAGE_CONFIGS = {"vae": StageConfig, "ldm": LDMStageConfig, "finetune": FinetuneStageConfig,
                 "distill": DistillStageConfig}


@dataclass
class TrainConfig:
    name: str = "custom"
    seed: int = 0
    model: dict = field(default_factory=dict)  # overrides for HLDMConfig, applied by hldm.train.trainer
    data: DataConfig = field(default_factory=DataConfig)
    vae: StageConfig = field(default_factory=StageConfig)
    ldm: LDMStageConfig = field(default_factory=LDMStageConfig)
    finetune: FinetuneStageConfig = field(default_factory=FinetuneStageConfig)
    distill: DistillStageConfig = field(default_factory=DistillStageConfig)

    def stage(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ConfigError("stage", f"unknown value {name!r}; allowed: {', '.join(STAGES)}")
        return getattr(self, name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        top = {f.name for f in fields(cls)}
        _check_keys("", d, top)
        kwargs = {k: d[k] for k in ("name", "seed") if k in d}
        if not isinstance(kwargs.get("name", ""), str):
            raise ConfigError("name", f"must be a string, got {kwargs['name']!r}")
        if not isinstance(kwargs.get("seed", 0), int) or isinstance(kwargs.get("seed"), bool):
            raise ConfigError("seed", f"must be an integer, got {kwargs['seed']!r}")
        model = d.get("model", {})
        if not isinstance(model, dict):
            raise ConfigError("model", "must be a table of HLDMConfig overrides")
        kwargs["model"] = model
        kwargs["data"] = _build(DataConfig, d.get("data", {}), "data")
        for stage in STAGES:
            kwargs[stage] = _build(STAGE_CONFIGS[stage], d.get(stage, {}), stage)
        cfg = cls(**kwargs)
        _validate(cfg)
        return cfg


def _check_keys(prefix: str, d: dict, allowed: set[str]) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(where, f"unknown key; allowed{' in [' + prefix + ']' if prefix else ''}: "
                                 f"{', '.join(sorted(allowed))}")


def _build(cls, d: dict, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(prefix, "must be a table")
    types = {f.name: f.type for f in fields(cls)}
    _check_keys(prefix, d, set(types))
    defaults = cls()
    out = {}
    for key, value in d.items():
        want = type(getattr(defaults, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise ConfigError(f"{prefix}.{key}", f"must be {want.__name__}, got {value!r}")
        out[key] = value
    return cls(**out)


def _validate(cfg: TrainConfig) -> None:
    d = cfg.data
    if d.source not in DATA_SOURCES:
        raise ConfigError("data.source", f"unknown value {d.source!r}; allowed: {', '.join(DATA_SOURCES)}")
    if not 0.0 <= d.sim_fraction < 1.0:
        raise ConfigError("data.sim_fraction", f"must be in [0, 1), got {d.sim_fraction}")
    if d.seconds <= 0:
        raise ConfigError("data.seconds", f"must be > 0, got {d.seconds}")
    for key in ("sim_windows", "val_sim_windows", "max_real_windows", "augmented_windows", "num_workers"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key}", f"must be >= 0, got {getattr(d, key)}")
    for stage in STAGES:
        s = cfg.stage(stage)
        for key in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            if getattr(s, key) < 1:
                raise ConfigError(f"{stage}.{key}", f"must be >= 1, got {getattr(s, key)}")
        for key in ("max_steps", "warmup_steps"):
            if getattr(s, key) < 0:
                raise ConfigError(f"{stage}.{key}", f"must be >= 0, got {getattr(s, key)}")
        if s.lr <= 0:
            raise ConfigError(f"{stage}.lr", f"must be > 0, got {s.lr}")
        if not 0.0 <= s.ema_decay < 1.0:
            raise ConfigError(f"{stage}.ema_decay", f"must be in [0, 1), got {s.ema_decay}")
        if hasattr(s, "cond_dropout") and not 0.0 <= s.cond_dropout < 1.0:
            raise ConfigError(f"{stage}.cond_dropout", f"must be in [0, 1), got {s.cond_dropout}")
    for key in ("steps", "substeps"):
        if getattr(cfg.distill, key) < 1:
            raise ConfigError(f"distill.{key}", f"must be >= 1, got {getattr(cfg.distill, key)}")
    if not cfg.distill.guidance >= 1.0:
        raise ConfigError("distill.guidance", f"must be >= 1, got {cfg.distill.guidance}")
    if cfg.finetune.rare_weight_cap < 1.0:
        raise ConfigError("finetune.rare_weight_cap", f"must be >= 1, got {cfg.finetune.rare_weight_cap}")


def resolve_preset(name_or_path: str | Path) -> Path:
    """'tiny' -> train/tiny.toml; a path is taken as is."""
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.exists():
        p = PRESET_DIR / f"{name_or_path}.toml"
    if not p.is_file():
        shipped = ", ".join(sorted(q.stem for q in PRESET_DIR.glob("*.toml")))
        raise ConfigError("config", f"no preset file {str(p)!r}; shipped presets: {shipped}")
    return p


def load_config(name_or_path: str | Path) -> TrainConfig:
    """Read and validate a TOML preset (a name under train/ or a path).

    A preset may start from another: `base = "cpu"` (a preset name, or a path relative to the
    preset's folder) takes that preset's tables and overrides only the keys it sets, so an
    ablation is its one changed flag instead of a copy of the whole preset.
    """
    return TrainConfig.from_dict(_read_preset(resolve_preset(name_or_path), ()))


def _read_preset(path: Path, chain: tuple[Path, ...]) -> dict:
    if path.resolve() in chain:
        raise ConfigError("base", f"{path} is its own base (chain: {' -> '.join(map(str, chain))})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML: {e}") from e
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError("base", f"must be a preset name or a .toml path, got {base!r}")
    base_path = resolve_preset(path.parent / base if base.endswith(".toml") else base)
    return _overlay(_read_preset(base_path, (*chain, path.resolve())), raw)


def _overlay(base: dict, over: dict) -> dict:
    """base with over's keys set, tables merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _overlay(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out
