"""Blind rating sessions: which clips a reader hears, in what order, and their audio.

A session's clip set is a pure function of its seed: synthetic clips for findings
drawn with `hldm.data.simulator.sample_findings`, and, when a folder of real
recordings in CirCor layout is given, excerpts of real recordings. Readers who
use the same seed hear the same clips (their answers can be compared: kappa)
in their own shuffled order (seeded by seed and reader, so no order effect is
shared). Only the clip descriptions are stored; the audio is rendered again
when a clip is played, which is how a session resumes after a restart.

Blinding: every clip, real or synthetic, is 4-10 s long (same distribution),
4 kHz, scaled to the same RMS (`normalize_loudness`) and faded in and out over
FADE_S, so neither length, level, sample rate nor a cut-in click tells the
source. The excerpt of a real recording starts at a random point.
"""
from __future__ import annotations

import functools
import hashlib
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from hldm.audio.features import normalize_loudness
from hldm.audio.io import resample
from hldm.clinical.vocabulary import SAMPLE_RATE, Findings
from hldm.data.circor import load_circor
from hldm.data.simulator import sample_findings, simulate
from hldm.ratings.store import ClipSpec, RatingsError, RatingStore, Session, clean_findings

SECONDS_RANGE = (4.0, 10.0)  # every clip's length is drawn uniformly in this range, 0.5 s steps
MAX_CLIPS = 200
REAL_FRACTION = 0.5  # share of real clips when a real folder is given
FADE_S = 0.05
PEAK_LIMIT = 0.99

# (findings, seed, seconds) -> (N,) float32 audio at 4 kHz
ClipGenerator = Callable[[Findings, int, float], np.ndarray]


class SyntheticSource:
    """What renders synthetic clips. `checkpoint` is stored with each clip and names the
    weights and settings: the same string and seed must give the same audio. It may be given
    as a function, called once when first needed: a model's weights hash waits for its weights,
    which the app loads after serving its page."""

    def __init__(self, generate: ClipGenerator, checkpoint: str | Callable[[], str]):
        self.generate = generate
        self._checkpoint = checkpoint

    @functools.cached_property
    def checkpoint(self) -> str:
        return self._checkpoint if isinstance(self._checkpoint, str) else self._checkpoint()


def simulator_source() -> SyntheticSource:
    """The physiological simulator as the generator (tests, demos, self-rated sessions)."""
    return SyntheticSource(lambda f, seed, seconds: simulate(f, seconds=seconds, seed=seed).audio, "simulator")


def model_hash(module) -> str:
    """First 16 hex digits of a SHA-256 over a torch module's state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def pipeline_source(pipeline, steps: int | None = None, guidance: float | None = None,
                    sampler: str | None = None) -> SyntheticSource:
    """An HLDMPipeline as the generator; the clip's checkpoint is the weights' hash plus the sampling settings."""
    d = pipeline.config.diffusion
    steps, guidance, sampler = steps or d.steps, d.guidance if guidance is None else guidance, sampler or d.sampler

    def generate(f: Findings, seed: int, seconds: float) -> np.ndarray:
        return pipeline.generate(f, seed=seed, steps=steps, guidance=guidance, sampler=sampler, seconds=seconds).audio

    return SyntheticSource(generate, lambda: f"{model_hash(pipeline.model)}/{sampler}/{steps}/{guidance:g}")


def as_source(generator) -> SyntheticSource:
    """A SyntheticSource from itself or from an HLDMPipeline."""
    return generator if isinstance(generator, SyntheticSource) else pipeline_source(generator)


# ---------------------------------------------------------------- planning

@dataclass(frozen=True)
class RealRecording:
    real_id: str  # the recording stem, e.g. "13918_AV"
    path: Path
    seconds: float
    findings: dict  # CirCor annotation as findings (murmur status, timing, grade, location ...)


def real_recordings(real_dir: str | Path) -> list[RealRecording]:
    """Recordings of a CirCor-layout folder usable as blind clips: audio present, a known murmur
    status and auscultation site, at least SECONDS_RANGE[0] long. RatingsError if there are none."""
    try:
        index = load_circor(real_dir)
    except FileNotFoundError as exc:
        raise RatingsError(f"real dir: {exc}; expected CirCor layout (<id>.txt headers + .wav/.flac + .tsv)") from exc
    usable = [r for r in index.recordings
              if r.audio_path is not None and r.location is not None and r.murmur_status != "unknown"]
    out = []
    for r in usable:
        try:
            info = sf.info(str(r.audio_path))
        except (sf.LibsndfileError, RuntimeError):
            continue
        if info.frames / info.samplerate >= SECONDS_RANGE[0]:
            out.append(RealRecording(r.stem, r.audio_path.resolve(), info.frames / info.samplerate,
                                     clean_findings(r.findings.to_dict())))
    if not out:
        raise RatingsError(f"real dir: {real_dir} has no usable recording ({len(index.recordings)} listed, "
                           f"{len(usable)} with audio, a known murmur status and site; none >= "
                           f"{SECONDS_RANGE[0]:g} s)")
    return out


def _draw_seconds(rng: np.random.Generator) -> float:
    lo, hi = SECONDS_RANGE
    return float(lo + 0.5 * rng.integers(0, int((hi - lo) / 0.5) + 1))


def plan_clips(n: int, seed: int, checkpoint: str, real: list[RealRecording] | None = None,
               real_fraction: float = REAL_FRACTION) -> list[ClipSpec]:
    """The clip set of a session seed: n clips, round(n * real_fraction) of them real when
    recordings are given (each recording at most once), in a seed-determined order."""
    if not isinstance(n, int) or not 1 <= n <= MAX_CLIPS:
        raise RatingsError(f"n_clips: {n!r}; allowed: 1..{MAX_CLIPS}")
    if not 0.0 <= real_fraction <= 1.0:
        raise RatingsError(f"real_fraction: {real_fraction!r}; allowed: 0..1")
    rng = np.random.default_rng([int(seed), 1])
    n_real = min(round(n * real_fraction), len(real)) if real else 0
    clips = []
    for k in rng.permutation(len(real))[:n_real] if n_real else ():
        rec = real[int(k)]
        seconds = min(_draw_seconds(rng), math.floor(rec.seconds * 2) / 2)  # on the same 0.5 s grid
        start = round(float(rng.uniform(0.0, rec.seconds - seconds)), 3)
        clips.append(ClipSpec("real", seconds, rec.findings, real_id=rec.real_id, real_path=str(rec.path),
                              start_s=start))
    for _ in range(n - n_real):
        f = sample_findings(rng)
        clips.append(ClipSpec("synthetic", _draw_seconds(rng), clean_findings(f.to_dict()),
                              seed=int(rng.integers(0, 2**31 - 1)), checkpoint=checkpoint))
    return clips


def start_session(store: RatingStore, reader: str, n_clips: int, source: SyntheticSource,
                  real: Sequence[RealRecording] | str | Path | None = None, seed: int | None = None,
                  real_fraction: float = REAL_FRACTION) -> Session:
    """Store a new blind session for a registered reader: the seed's clip set, shuffled for this reader.
    real: a CirCor-layout folder or its `real_recordings` (scan once, reuse); seed None draws a fresh
    one (a session nobody else shares)."""
    r = store.reader(reader)
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    if isinstance(real, (str, Path)):
        real = real_recordings(real)
    clips = plan_clips(int(n_clips), seed, source.checkpoint, list(real) if real else None, real_fraction)
    order = np.random.default_rng([seed, 2, r.id]).permutation(len(clips))
    real_dir = ", ".join(sorted({str(x.path.parent) for x in real})) if real else None
    return store.create_session(r.name, [clips[int(k)] for k in order], seed, real_dir)


def resume_or_start(store: RatingStore, reader: str, n_clips: int, source: SyntheticSource,
                    real: Sequence[RealRecording] | str | Path | None = None,
                    seed: int | None = None) -> tuple[Session, bool]:
    """The reader's unfinished session if there is one (resumed = True), else a new one."""
    open_ = store.open_session(reader)
    if open_ is not None:
        return open_, True
    return start_session(store, reader, n_clips, source, real, seed), False


# ---------------------------------------------------------------- audio

def render(clip: ClipSpec, source: SyntheticSource | None = None) -> np.ndarray:
    """The clip's audio as the reader hears it: (N,) float32 at 4 kHz, same RMS, faded in and out."""
    if clip.source == "synthetic":
        if source is None or source.checkpoint != clip.checkpoint:
            raise RatingsError(f"clip made with generator {clip.checkpoint!r}; this app runs "
                               f"{getattr(source, 'checkpoint', None)!r}. Load that checkpoint to replay it.")
        audio = np.asarray(source.generate(Findings.from_dict(clip.findings), int(clip.seed), float(clip.seconds)),
                           dtype=np.float32)
    else:
        audio = _excerpt(Path(clip.real_path), float(clip.start_s), float(clip.seconds))
    return _blind(audio)


def _excerpt(path: Path, start_s: float, seconds: float) -> np.ndarray:
    try:
        info = sf.info(str(path))
        a = int(round(start_s * info.samplerate))
        x, sr = sf.read(str(path), start=a, stop=a + int(round(seconds * info.samplerate)), dtype="float32",
                        always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise RatingsError(f"real clip {path}: cannot be read ({exc})") from exc
    return resample(x.mean(axis=1), sr, SAMPLE_RATE)


def _blind(audio: np.ndarray) -> np.ndarray:
    x = normalize_loudness(np.nan_to_num(audio))
    n = min(int(FADE_S * SAMPLE_RATE), len(x) // 2)
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x
