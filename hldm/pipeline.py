"""HLDMPipeline: the one public entry point (app, CLI, evaluation and benchmarks all call it).

    pipe = HLDMPipeline.from_pretrained("checkpoints/default")
    g = pipe.generate({"murmur": "present", "timing": "holosystolic", "grade": 3, ...}, seed=0)
    g.audio      # np.float32 (N,) at g.sr = 4000 Hz
    pipe.generate({"condition": "aortic stenosis", "grade": 4})  # its typical findings, at IV/VI
    w = pipe.what_if(findings, {"grade": 4}, seed=0)     # same initial noise on both sides

Generation follows H-LDM end to end: findings are validated
(hldm.clinical.validation) and turned into L1/L2/L3 prompts, the conditioner
gives c and the heart rate, a sampler (hldm.diffusion) runs classifier-free
guided reverse diffusion in the MS-VAE latent from seeded noise, the VAE decodes
to STFT features and Griffin-Lim (seeded) gives the waveform; with `conform` (the
shipped model's default) the clip is then edited to its findings' heart rate, murmur
phase and level (hldm.conformance), where the model falls back to what CirCor shows it.
Everything is
deterministic for a seed. Batches: row k of a call with seed s uses seed s + k
(its initial noise, its sampler noise and its Griffin-Lim phase), so it equals a
single call with seed s + k up to float rounding.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from hldm.audio.features import FRAMES_PER_SECOND, invert, n_frames, normalize_loudness, to_features
from hldm.clinical.prompts import Prompts, build_prompts, findings_from_prompt
from hldm.clinical.validation import FindingsError, validate, validate_dict
from hldm.clinical.vocabulary import SAMPLE_RATE, SUBSPACES, Findings, held_subspaces, timing_phase
from hldm.diffusion.samplers import cpu_generators, initial_noise, sample
from hldm.models.hldm import HLDM, HLDMConfig, load_model, save_model
from hldm.models.ms_vae import subspace_slice

MAX_SECONDS = 60.0
MIN_SECONDS = 0.5
Interval = tuple[float, float, str]  # (start_s, end_s, "S1" | "S2" | "murmur")
FindingsLike = Findings | Prompts | dict
Progress = Callable[[int, int], None]  # (steps done, total steps)

# Where in its phase (0 = start, 1 = end) a murmur of each timing sits: systole runs
# from the end of S1 to the start of S2, diastole from the end of S2 to the next S1.
MURMUR_SPAN = {
    "early-systolic": (0.0, 0.4), "mid-systolic": (0.2, 0.8), "late-systolic": (0.6, 1.0),
    "holosystolic": (0.0, 1.0), "early-diastolic": (0.0, 0.4), "mid-diastolic": (0.3, 0.7),
    "holodiastolic": (0.0, 1.0), "continuous": (0.0, 1.0),
}


@dataclass
class Generation:
    """One generated clip and what produced it.

    latent (16, L) is the VAE latent the decoder read (the space `encode` returns);
    weights (n_steps, 4) are w_i(c) of the structured-noise head at each sampling step
    (SUBSPACES order); attention maps each Medical Attention layer to its M_cardiac
    (L', L') at the last step; intervals come from the VAE's S1/S2 head on the latent
    and the requested murmur timing, or with conformance from the conformed clip's segmentation;
    features are the decoded ones, or the conformed audio's. conformance: what hldm.conformance
    did (empty when it was off). timings / cpu_timings: wall seconds and process CPU
    seconds (all threads) of each stage (STAGES) of the call that made this clip, shared
    by every clip of a batched call; other processes on the cores inflate the first far
    more than the second.
    """

    audio: np.ndarray  # (N,) float32
    sr: int
    features: np.ndarray  # (129, T) float32
    latent: np.ndarray  # (16, L) float32
    weights: np.ndarray  # (n_steps, 4) float32
    attention: dict[str, np.ndarray]
    prompts: Prompts
    findings: Findings
    intervals: list[Interval]
    seed: int
    sampler: str
    steps: int
    guidance: float
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)
    conformance: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sr

    def to_json(self) -> dict:
        """JSON-able record of the request and the displayed traces (no audio)."""
        return {"findings": self.findings.to_dict(),
                "prompts": {"l1": self.prompts.l1, "l2": self.prompts.l2, "l3": self.prompts.l3},
                "seed": self.seed, "sampler": self.sampler, "steps": self.steps, "guidance": self.guidance,
                "seconds": self.seconds, "sr": self.sr, "device": self.device,
                "weights": {name: self.weights[:, i].round(5).tolist() for i, name in enumerate(SUBSPACES)},
                "intervals": [[round(a, 4), round(b, 4), kind] for a, b, kind in self.intervals],
                "conformance": self.conformance}


@dataclass
class WhatIf:
    """Two generations from the same initial noise; only the findings in changed_fields differ.

    subspace_delta: per latent subspace, ||z_b - z_a|| / ||z_a|| over its channels.
    held: the subspaces b was tied to a's while sampling (see `held_subspaces`; empty: none).
    """

    a: Generation
    b: Generation
    changed_fields: tuple[str, ...]
    subspace_delta: dict[str, float]
    held: tuple[str, ...] = ()


def intervals_from_s1s2(prob: np.ndarray, frame_seconds: float, timing: str | None = None,
                        threshold: float = 0.5) -> list[Interval]:
    """S1/S2/murmur intervals from per-frame S1-or-S2 probabilities (L,).

    Runs of frames above `threshold` are heart sounds; they alternate S1, S2 and
    the shorter of the two alternating gaps is systole (true at any heart rate a
    patient can have: systole is the shorter phase). With a murmur `timing`, a
    murmur interval is placed in each systole or diastole (MURMUR_SPAN); a
    continuous murmur spans S2 from the end of S1 to the next S1.
    """
    above = np.concatenate([[False], np.asarray(prob) > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    sounds = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]  # frame [start, end)
    if not sounds:
        return []
    gaps = [sounds[k + 1][0] - sounds[k][1] for k in range(len(sounds) - 1)]
    s1_parity = 0 if len(gaps) < 2 or np.mean(gaps[0::2]) <= np.mean(gaps[1::2]) else 1
    labels = ["S1" if k % 2 == s1_parity else "S2" for k in range(len(sounds))]
    out: list[Interval] = [(a * frame_seconds, b * frame_seconds, lab) for (a, b), lab in zip(sounds, labels)]
    if timing is not None:
        phase = timing_phase(timing)
        lo, hi = MURMUR_SPAN[timing]
        for k in range(len(sounds) - 1):
            if phase == "continuous":
                if labels[k] != "S1" or k + 2 >= len(sounds):
                    continue
                start, end = sounds[k][1], sounds[k + 2][0]
            elif (labels[k] == "S1") == (phase == "systolic"):
                start, end = sounds[k][1], sounds[k + 1][0]
            else:
                continue
            span = end - start
            out.append(((start + lo * span) * frame_seconds, (start + hi * span) * frame_seconds, "murmur"))
    return sorted(out)


# Stages of a generation call, in order (Generation.timings).
STAGES = ("condition", "denoise", "decode", "invert", "conform")


class _StageClock:
    """Wall and CPU time per stage; on CUDA it waits for queued kernels so each stage is charged its own work."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = (time.perf_counter(), time.process_time())
        self.wall[stage], self.cpu[stage] = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class HLDMPipeline:
    """Findings -> heart-sound audio with an HLDM (see module docstring)."""

    def __init__(self, model: HLDM, device: str | torch.device | None = None):
        self.device = torch.device(device or default_device())
        self.model = model.eval().to(self.device)
        self.config: HLDMConfig = model.config

    # -- construction --------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None) -> "HLDMPipeline":
        """Load a model directory (model.safetensors + config.json); CheckpointError if it is not one."""
        return cls(load_model(directory), device)

    @classmethod
    def from_config(cls, config: HLDMConfig, seed: int = 0, device: str | torch.device | None = None) -> "HLDMPipeline":
        """A randomly initialised model (tests, benchmarks); the same seed gives the same weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HLDM(config)
        return cls(model, device)

    def save_pretrained(self, directory: str | os.PathLike, card: str | None = None) -> Path:
        return save_model(directory, self.model, card)

    # -- generation ----------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, findings: FindingsLike | Sequence[FindingsLike], seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None, seconds: float = 10.0,
                 batch: int = 1, progress: Progress | None = None,
                 conform: bool | None = None) -> Generation | list[Generation]:
        """Generate a clip of `seconds` for findings (Findings, a dict of fields, or Prompts).

        A dict with a condition starts from the condition's typical findings; its other
        fields override them (`validate_dict`).

        steps / guidance / sampler / conform default to the model config's (conform: edit the
        clip to its findings' rate, murmur phase and level; not for Prompts given verbatim,
        whose findings are not all known). Returns one
        Generation; with batch > 1 (the same findings, seeds seed..seed+batch-1) or
        a list of findings (one clip each, seeds seed, seed+1, ...) a list of
        Generations, computed in one batched run. Invalid findings raise
        FindingsError and nothing is generated.
        """
        if isinstance(findings, (list, tuple)):
            if batch != 1:
                raise ValueError(f"batch: {batch} given with a list of findings; the list sets the batch")
            if not findings:
                raise ValueError("findings: empty list")
            items = [self._resolve(f) for f in findings]
        else:
            if not isinstance(batch, int) or batch < 1:
                raise ValueError(f"batch: must be an integer >= 1, got {batch!r}")
            items = [self._resolve(findings)] * batch
        verbatim = [isinstance(f, Prompts) for f in (findings if isinstance(findings, (list, tuple)) else [findings])]
        gens = self._run(items, [seed + k for k in range(len(items))], steps, guidance, sampler, seconds,
                         progress=progress, conform=[self._conforms(conform) and not v for v in verbatim * batch])
        return gens[0] if len(gens) == 1 and not isinstance(findings, (list, tuple)) else gens

    @torch.inference_mode()
    def what_if(self, findings: FindingsLike, change: dict, seed: int = 0, steps: int | None = None,
                guidance: float | None = None, sampler: str | None = None, seconds: float = 10.0,
                progress: Progress | None = None, hold: bool = True, conform: bool | None = None) -> WhatIf:
        """Generate under `findings` and under `findings` with `change` applied, from the SAME noise.

        hold: the subspaces the change may not move (a grade edit: rhythm, S1/S2, noise) are
        tied to the unedited clip's at every step, so only what the edit is about changes.
        conform: as in `generate`, the two sides as a pair (`conformance.conform_pair`): side b takes
        side a's segmentation and time map unless the change is the heart rate, and a grade change
        keeps the murmur's texture.
        """
        (fa, pa), (fb, pb), changed = self._change(findings, change)
        held = held_subspaces(changed) if hold else ()
        a, b = self._run([(fa, pa), (fb, pb)], [seed, seed], steps, guidance, sampler, seconds, progress=progress,
                         held=held, conform=[self._conforms(conform) and not isinstance(findings, Prompts)] * 2,
                         paired=True, shared_timing="heart_rate" not in changed)
        return WhatIf(a, b, changed, subspace_delta(a.latent, b.latent), held)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray | str | os.PathLike | bytes) -> np.ndarray:
        """A recording (waveform (N,) at 4 kHz, or a WAV/FLAC path or bytes) -> VAE posterior mean (16, L)."""
        mu, _ = self._encode(audio)
        return mu[0].cpu().numpy()

    @torch.inference_mode()
    def edit(self, audio: np.ndarray | str | os.PathLike | bytes, findings: FindingsLike, change: dict | None = None,
             strength: float = 0.5, seed: int = 0, steps: int | None = None, guidance: float | None = None,
             sampler: str | None = None, progress: Progress | None = None, hold: bool = True) -> WhatIf:
        """What-if on a real recording, SDEdit-style (Meng et al. 2022).

        The recording's latent is noised to t = strength * T with seeded noise and
        denoised twice from that same point: under `findings` (side a, the
        recording as the model reads it) and under `findings` + `change` (side b).
        strength near 0 keeps the recording, 1 ignores it. hold: as in `what_if`.
        """
        (fa, pa), (fb, pb), changed = self._change(findings, change or {})
        held = held_subspaces(changed) if hold else ()
        mu, n_feat = self._encode(audio)
        z0 = (mu * self.config.diffusion.latent_scale).expand(2, -1, -1)
        a, b = self._run([(fa, pa), (fb, pb)], [seed, seed], steps, guidance, sampler, n_feat / FRAMES_PER_SECOND,
                         progress=progress, init=z0, strength=strength, held=held)
        return WhatIf(a, b, changed, subspace_delta(a.latent, b.latent), held)

    # -- internals -----------------------------------------------------------------

    def _resolve(self, item: FindingsLike) -> tuple[Findings, Prompts]:
        """Validated findings and the prompts to condition on (given Prompts are used verbatim)."""
        if isinstance(item, Prompts):
            return findings_from_prompt(item.l2, Findings()), item
        if isinstance(item, Findings):
            f = validate(item)
        elif isinstance(item, dict):
            f = validate_dict(item)
        else:
            raise TypeError(f"findings: expected Findings, a dict of findings fields or Prompts, "
                            f"got {type(item).__name__}")
        return f, build_prompts(f)

    def _change(self, findings: FindingsLike, change: dict):
        if not isinstance(change, dict):
            raise TypeError(f"change: expected a dict of findings fields, got {type(change).__name__}")
        fa, pa = self._resolve(findings)
        fb = validate_dict({**fa.to_dict(), **change})
        pb = pa if fb == fa else build_prompts(fb)
        changed = tuple(f.name for f in fields(Findings) if getattr(fa, f.name) != getattr(fb, f.name))
        return (fa, pa), (fb, pb), changed

    def _encode(self, audio) -> tuple[torch.Tensor, int]:
        """Posterior mean (1, 16, L) of a recording and its feature frame count."""
        if not isinstance(audio, np.ndarray):
            from hldm.audio.io import load_audio

            audio = load_audio(audio)
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1 or not np.isfinite(x).all():
            raise ValueError(f"audio: expected a finite mono waveform (N,) at {SAMPLE_RATE} Hz, got shape {x.shape}")
        if not MIN_SECONDS * SAMPLE_RATE <= len(x) <= MAX_SECONDS * SAMPLE_RATE:
            raise ValueError(f"audio: {len(x) / SAMPLE_RATE:.2f} s; allowed: {MIN_SECONDS}..{MAX_SECONDS} s")
        feat = to_features(normalize_loudness(x)).to(self.device)[None]  # (1, 129, T)
        mu, _ = self.model.vae.encode(feat)
        return mu, feat.shape[-1]

    def _settings(self, steps, guidance, sampler, seconds) -> tuple[int, float, str, int]:
        d = self.config.diffusion
        steps = d.steps if steps is None else steps
        guidance = d.guidance if guidance is None else float(guidance)
        sampler = d.sampler if sampler is None else sampler
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance: must be a finite number >= 0, got {guidance!r}")
        if not isinstance(seconds, (int, float)) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds: {seconds!r}; allowed: {MIN_SECONDS}..{MAX_SECONDS}")
        return steps, guidance, sampler, n_frames(round(seconds * SAMPLE_RATE))

    def _conforms(self, conform: bool | None) -> bool:
        return self.config.diffusion.conform if conform is None else bool(conform)

    def _run(self, items: list[tuple[Findings, Prompts]], seeds: list[int], steps, guidance, sampler, seconds,
             progress: Progress | None = None, init: torch.Tensor | None = None,
             strength: float = 1.0, held: tuple[str, ...] = (), conform: Sequence[bool] = (),
             paired: bool = False, shared_timing: bool = True) -> list[Generation]:
        """held (a what-if pair, rows a and b): those subspaces of b are tied to a's (`samplers.tie`).
        conform: per row, whether hldm.conformance edits it; paired: rows a and b of a what-if, conformed as
        a pair (`conformance.conform_pair`, with shared_timing)."""
        steps, guidance, sampler, n_feat = self._settings(steps, guidance, sampler, seconds)
        clock = _StageClock(self.device)
        m, dcfg = self.model, self.config.diffusion
        B = len(items)
        findings, prompts = [f for f, _ in items], [p for _, p in items]
        gens = cpu_generators(seeds, B)
        C = self.config.vae.latent_channels
        x_T = initial_noise((B, C, m.vae.latent_length(n_feat)), gens, self.device)
        ties = pair_ties(held, C, self.device) if held else None
        c, hr = m.condition(findings, prompts)  # (B, D), (B,)
        clock.lap("condition")
        weights, last_attn = [], []
        n_run = max(1, round(steps * strength)) if init is not None else steps

        def record(step: dict) -> None:
            weights.append(step["w"].float().cpu())  # (B, 4)
            last_attn[:] = step["attn"]
            if progress is not None:
                progress(step["i"] + 1, n_run)

        z0 = sample(m.denoise, x_T, {"c": c, "hr": hr}, {"c": m.cond.null(B), "hr": hr}, sampler=sampler,
                    steps=steps, guidance=guidance, callback=record, generators=gens,
                    prediction_type=dcfg.prediction_type, n_train=dcfg.n_train, init=init, strength=strength,
                    ties=ties)
        clock.lap("denoise")
        latent = z0 / dcfg.latent_scale  # (B, 16, L)
        feat = m.vae.decode(latent, n_feat).float()  # (B, 129, T)
        s1s2 = m.vae.predict_s1s2(latent).float().cpu().numpy()  # (B, L)
        clock.lap("decode")
        audio = invert(feat, n_iter=dcfg.gl_iters, seed=seeds, speckle=dcfg.speckle)  # (B, N): the whole batch at once
        clock.lap("invert")
        feat = feat.cpu().numpy()
        conformed = _conform(audio, feat, findings, seeds, list(conform) or [False] * B, paired, shared_timing)
        clock.lap("conform")
        w = torch.stack(weights, dim=1).numpy()  # (B, n_steps, 4)
        names = m.attention_names()
        frame_s = self.config.vae.time_downsample / FRAMES_PER_SECOND
        out = []
        for k, (f, p) in enumerate(items):
            timing = f.timing if f.murmur == "present" else None
            clip, features, seg, record = conformed[k]
            out.append(Generation(
                audio=clip, sr=SAMPLE_RATE, features=features,
                latent=latent[k].float().cpu().numpy(), weights=w[k],
                attention={name: a[k].float().cpu().numpy() for name, a in zip(names, last_attn)},
                prompts=p, findings=f,
                intervals=seg.intervals(timing) if seg is not None else intervals_from_s1s2(s1s2[k], frame_s, timing),
                seed=seeds[k], sampler=sampler, steps=steps, guidance=guidance, device=str(self.device),
                timings=dict(clock.wall), cpu_timings=dict(clock.cpu), conformance=record))
        return out


def _conform(audio: np.ndarray, feat: np.ndarray, findings: list[Findings], seeds: list[int], conform: list[bool],
             paired: bool, shared_timing: bool) -> list[tuple[np.ndarray, np.ndarray, object, dict]]:
    """Per clip of audio (B, N) and its decoded features (B, 129, T): (audio, features, segmentation or
    None, record) after hldm.conformance where asked (paired: rows a and b of a what-if, conformed as a pair)."""
    from hldm.conformance import conform as conform_clip, conform_pair

    if paired and all(conform):
        done = list(conform_pair((audio[0], audio[1]), (findings[0], findings[1]), (seeds[0], seeds[1]), shared_timing))
    else:
        done = [conform_clip(audio[k], findings[k], seeds[k])[0] if conform[k] else None for k in range(len(audio))]
    out = []
    for k, d in enumerate(done):
        if d is None:
            out.append((audio[k], feat[k], None, {}))
            continue
        features = to_features(normalize_loudness(d.audio)).numpy()[:, :feat.shape[-1]] \
            if d.segmentation is not None else feat[k]
        out.append((d.audio, features, d.segmentation, d.record))
    return out


def pair_ties(held: tuple[str, ...], n_channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ties for a (a, b) pair: b takes the `held` subspaces' channels from a; a is free."""
    mask = torch.zeros(2, n_channels, dtype=torch.bool, device=device)
    for name in held:
        mask[1, subspace_slice(name, n_channels)] = True
    return torch.zeros(2, dtype=torch.long, device=device), mask


def subspace_delta(za: np.ndarray, zb: np.ndarray) -> dict[str, float]:
    """Relative L2 change of each latent subspace: ||zb_s - za_s|| / ||za_s||, za/zb (16, L)."""
    group = za.shape[0] // len(SUBSPACES)
    out = {}
    for i, name in enumerate(SUBSPACES):
        a, b = za[i * group:(i + 1) * group], zb[i * group:(i + 1) * group]
        out[name] = float(np.linalg.norm(b - a) / max(float(np.linalg.norm(a)), 1e-12))
    return out


__all__ = ["STAGES", "FindingsError", "Generation", "HLDMPipeline", "WhatIf", "intervals_from_s1s2", "subspace_delta"]
