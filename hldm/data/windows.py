"""Training windows: fixed-length PCG crops with features, findings, prompts and factor labels.

Real windows (`CirCorWindows`) start at an S1 onset of the TSV segmentation and are kept
only when the whole crop lies in one annotated stretch (no state-0 row) and inside the
audio. Simulated windows (`SimulatedWindows`) come from `hldm.data.simulator` with ground
truth for every factor and the clean components.

Every crop is loudness-normalised on its own (`normalize_loudness`) and turned into
features by `to_features`, so frame k of `features` and of `labels["s1s2"]` is centred
on sample 32 k of the crop (125 frames/s), for real and simulated windows alike.

Cache: decoding a FLAC is what costs (about 20 ms a recording); the STFT of one 4 s
crop takes under 1 ms. So the decoded waveform of each recording is cached once, as
float32 .npy under `hldm.paths.cache_dir()/audio/` (memory-mapped on read, about 0.6 GB
for our CirCor copy), and each window's features are computed from it exactly, rather
than storing 129 x 500 features per overlapping window (several GB).
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from hldm.audio.features import HOP, TARGET_RMS, n_frames, normalize_loudness, to_features
from hldm.audio.io import load_audio
from hldm.clinical.prompts import Prompts, build_prompts
from hldm.clinical.validation import FindingsError, validate
from hldm.clinical.vocabulary import HEART_RATE_RANGE, SAMPLE_RATE, TIMINGS, Findings
from hldm.data.circor import CONTIGUITY_TOLERANCE_S, Recording, annotated_spans, cycle_intervals
from hldm.data.simulator import sample_findings, simulate
from hldm.paths import cache_dir

CACHE_VERSION = 1
OPEN_RECORDINGS = 128  # memory-mapped cached recordings kept open (each holds a file descriptor)
S1S2_STATES = (1, 3)
LABEL_KEYS = ("heart_rate", "s1s2", "murmur", "grade", "timing", "noise_level")
COMPONENTS = ("s1s2", "murmur", "noise")


@functools.lru_cache(maxsize=1 << 16)
def _prompts(findings: Findings) -> Prompts:
    # Windows of a recording differ only in heart rate (whole bpm): each text is built once
    # per (recording, bpm), about 10k for CirCor; building one costs about 1 ms.
    return build_prompts(findings)


def frame_states(segmentation: np.ndarray, start_s: float, frames: int) -> np.ndarray:
    """(frames,) int64: the state (1-4) of the row holding each frame centre (start_s + k * HOP / SR),
    0 where no row does (unannotated)."""
    t = start_s + np.arange(frames) * (HOP / SAMPLE_RATE)
    row = np.searchsorted(segmentation[:, 0], t, side="right") - 1
    inside = (row >= 0) & (t < segmentation[np.clip(row, 0, None), 1])
    return np.where(inside, segmentation[np.clip(row, 0, None), 2], 0).astype(np.int64)


def s1s2_mask(segmentation: np.ndarray, start_s: float, frames: int) -> np.ndarray:
    """(frames,) float32, 1 where the frame centre lies in an S1 or S2 row."""
    return np.isin(frame_states(segmentation, start_s, frames), S1S2_STATES).astype(np.float32)


def factor_labels(findings: Findings, murmur_known: bool, heart_rate: float, s1s2: np.ndarray,
                  noise_level: float) -> dict[str, torch.Tensor]:
    """The label dict of a WindowItem (see docs/ARCHITECTURE.md); unknown = nan (float) or -1 (index)."""
    present = findings.murmur == "present"
    if not murmur_known:
        murmur, grade = math.nan, -1
    else:
        murmur = 1.0 if present else 0.0
        grade = (findings.grade if findings.grade is not None else -1) if present else 0
    timing = TIMINGS.index(findings.timing) if present and findings.timing in TIMINGS else -1
    return {
        "heart_rate": torch.tensor(heart_rate, dtype=torch.float32),
        "s1s2": torch.from_numpy(s1s2),
        "murmur": torch.tensor(murmur, dtype=torch.float32),
        "grade": torch.tensor(grade, dtype=torch.int64),
        "timing": torch.tensor(timing, dtype=torch.int64),
        "noise_level": torch.tensor(noise_level, dtype=torch.float32),
    }


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CirCorWindows(Dataset):
    """Cycle-aligned crops of real recordings -> WindowItem dicts.

    `recordings`: CirCor `Recording`s (e.g. `index.recordings_of(split["train"])`). Those
    without audio, usable segmentation or a mapped location, or whose findings `validate`
    refuses (CirCor's "nan" age group: 64 pregnant women and 3 others in our copy), are
    left out and listed in `.skipped` {reason: [stems]}; nothing is filled in. `min_spacing_s` > 0 keeps only starts at least that far
    apart (e.g. `seconds` for non-overlapping evaluation windows); 0 uses every S1 onset.
    """

    def __init__(self, recordings: list[Recording], seconds: float = 4.0, cache: bool = True,
                 min_spacing_s: float = 0.0):
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0; got {seconds}")
        self.seconds = float(seconds)
        self.cache = cache
        self.n_samples = int(round(self.seconds * SAMPLE_RATE))
        self.frames = n_frames(self.n_samples)
        self.recordings: list[Recording] = []
        self._findings: list[Findings] = []  # validated, one per kept recording
        self.skipped: dict[str, list[str]] = {}
        self.windows: list[tuple[int, float]] = []  # (index into self.recordings, S1 onset s)
        self._intervals: list[np.ndarray] = []
        self._cache_paths: dict[str, Path] = {}
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        for rec in recordings:
            reason = self._unusable(rec)
            if reason is None:
                try:
                    findings = validate(rec.findings)
                except FindingsError as exc:
                    reason = f"findings refused ({exc.field})"
            if reason:
                self.skipped.setdefault(reason, []).append(rec.stem)
                continue
            info = sf.info(str(rec.audio_path))
            length_s = info.frames / info.samplerate
            starts = self._starts(rec.segmentation, length_s, min_spacing_s)
            if not starts:
                self.skipped.setdefault("no complete annotated window", []).append(rec.stem)
                continue
            self.windows += [(len(self.recordings), s) for s in starts]
            self.recordings.append(rec)
            self._findings.append(findings)
            self._intervals.append(cycle_intervals(rec.segmentation))

    @staticmethod
    def _unusable(rec: Recording) -> str | None:
        if rec.audio_path is None:
            return "no audio"
        if rec.segmentation is None:
            return "no segmentation"
        if rec.location is None:
            return "unmapped location"
        return None

    def _starts(self, seg: np.ndarray, length_s: float, min_spacing_s: float) -> list[float]:
        spans = annotated_spans(seg)
        starts: list[float] = []
        for onset in seg[seg[:, 2] == 1, 0]:
            end = onset + self.seconds
            if round(onset * SAMPLE_RATE) + self.n_samples > round(length_s * SAMPLE_RATE):
                continue
            if not any(a - CONTIGUITY_TOLERANCE_S <= onset and end <= b + CONTIGUITY_TOLERANCE_S for a, b in spans):
                continue
            if starts and onset - starts[-1] < min_spacing_s:
                continue
            starts.append(float(onset))
        return starts

    def __len__(self) -> int:
        return len(self.windows)

    def _cache_path(self, rec: Recording) -> Path:
        if rec.stem not in self._cache_paths:
            stat = rec.audio_path.stat()
            key = f"{rec.audio_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v{CACHE_VERSION}"
            self._cache_paths[rec.stem] = cache_dir() / "audio" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
        return self._cache_paths[rec.stem]

    def audio(self, rec: Recording) -> np.ndarray:
        """The whole recording, float32 (N,) at 4 kHz (from the cache when enabled)."""
        # CirCor recordings run to about 65 s; the upload limits of load_audio do not apply here.
        if not self.cache:
            return load_audio(rec.audio_path, max_seconds=3600, max_bytes=1 << 31)
        path = self._cache_path(rec)
        if not path.is_file():
            _atomic_save(path, load_audio(rec.audio_path, max_seconds=3600, max_bytes=1 << 31))
        return np.load(path, mmap_mode="r")

    def _recording_audio(self, r: int) -> np.ndarray:
        """`audio` of self.recordings[r], keeping the last OPEN_RECORDINGS memory maps open."""
        if r in self._open:
            self._open.move_to_end(r)
            return self._open[r]
        audio = self.audio(self.recordings[r])
        if self.cache:
            self._open[r] = audio
            if len(self._open) > OPEN_RECORDINGS:
                self._open.popitem(last=False)
        return audio

    def warm_cache(self, progress: bool = False) -> int:
        """Decode every recording into the cache now; returns how many were decoded."""
        from tqdm import tqdm

        todo = [r for r in self.recordings if self.cache and not self._cache_path(r).is_file()]
        for rec in tqdm(todo, disable=not progress, desc="decoding"):
            self.audio(rec)
        return len(todo)

    def window_heart_rate(self, i: int) -> float:
        """60 / median S1-to-S1 interval of the cycles starting inside window i (nan if none)."""
        r, onset = self.windows[i]
        pairs = self._intervals[r]
        inside = pairs[(pairs[:, 0] >= onset - CONTIGUITY_TOLERANCE_S) & (pairs[:, 0] < onset + self.seconds)]
        return float(60.0 / np.median(inside[:, 1] - inside[:, 0])) if len(inside) else math.nan

    def __getitem__(self, i: int) -> dict:
        r, onset = self.windows[i]
        rec = self.recordings[r]
        start = int(round(onset * SAMPLE_RATE))
        crop = np.array(self._recording_audio(r)[start:start + self.n_samples], dtype=np.float32)  # (N,)
        features = to_features(normalize_loudness(crop))  # (129, T)
        hr = self.window_heart_rate(i)
        # The window's own rate conditions it; a rate outside the product's range keeps the recording's.
        in_range = HEART_RATE_RANGE[0] <= hr <= HEART_RATE_RANGE[1]  # False for nan
        findings = self._findings[r].with_(heart_rate=float(round(hr))) if in_range else self._findings[r]
        labels = factor_labels(findings, rec.murmur_status != "unknown", hr,
                               s1s2_mask(rec.segmentation, start / SAMPLE_RATE, self.frames), math.nan)
        return {"features": features, "findings": findings, "prompts": _prompts(findings), "labels": labels,
                "source": "circor",
                "meta": {"stem": rec.stem, "patient_id": rec.patient_id, "start_s": start / SAMPLE_RATE}}


class SimulatedWindows(Dataset):
    """`n` simulator clips of `seconds`, item i fully determined by (seed, i)."""

    def __init__(self, n: int, seconds: float = 4.0, seed: int = 0):
        if n < 0 or not seconds > 0:
            raise ValueError(f"need n >= 0 and seconds > 0; got n={n}, seconds={seconds}")
        self.n, self.seconds, self.seed = int(n), float(seconds), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} simulated windows")
        rng = np.random.default_rng([self.seed, i])
        sim = simulate(sample_findings(rng), seconds=self.seconds, seed=int(rng.integers(2**31)))
        audio = np.asarray(sim.audio, dtype=np.float32)  # (N,)
        # One gain for the mix and its parts, so the components still add up to the clip.
        gain = TARGET_RMS / max(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))), 1e-8)
        frames = n_frames(len(audio))
        findings = sim.findings
        labels = factor_labels(findings, True, float(sim.heart_rate),
                               s1s2_mask(np.asarray(sim.segmentation, dtype=np.float64), 0.0, frames),
                               float(sim.factors["noise_level"]))
        return {"features": to_features(audio * gain), "findings": findings, "prompts": _prompts(findings),
                "labels": labels, "source": "sim",
                "components": {k: to_features(np.asarray(sim.components[k], dtype=np.float32) * gain)
                               for k in COMPONENTS},
                "meta": {"seed": self.seed, "index": i}}


def collate(items: list[dict]) -> dict:
    """WindowItems -> batch: features (B, 129, T), labels stacked, findings/prompts/source/meta lists;
    `components` (each (B, 129, T)) only when every item has them."""
    batch = {
        "features": torch.stack([it["features"] for it in items]),
        "labels": {k: torch.stack([it["labels"][k] for it in items]) for k in LABEL_KEYS},
        "findings": [it["findings"] for it in items],
        "prompts": [it["prompts"] for it in items],
        "source": [it["source"] for it in items],
        "meta": [it.get("meta", {}) for it in items],
    }
    if all("components" in it for it in items):
        batch["components"] = {k: torch.stack([it["components"][k] for it in items]) for k in COMPONENTS}
    return batch
