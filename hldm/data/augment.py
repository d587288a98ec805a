"""Augmented real windows: CirCor recordings as the canvas for what CirCor lacks (DESIGN.md "Data").

CirCor holds children's hearts at 70-140 bpm with systolic murmurs of grades I-III. A
real recording, re-timed and with a murmur placed in the right phase, keeps everything
that makes it sound real (its stethoscope, chest, noise floor, breathing, S1/S2) and
gains a finding it never had; its labels are exact by construction:

1. Tempo (`retime_anchors`, `vocode`): the cycles after a window's S1 onset are re-timed to a new rate.
   S1 and S2 keep their length; systole (S1 onset -> S2 onset) scales with Weissler's
   electromechanical systole QS2 = 546 - 2.0 HR ms, so diastole takes most of the change,
   as it does in a heart; each RR keeps its ratio to the source's mean, so the natural
   beat-to-beat variation stays. The audio follows a piecewise-linear time map through a
   phase vocoder on the project's STFT (pitch kept), with the phase reset to the source's
   inside S1 and S2, which are copied, not stretched.
2. Murmur placement: on a murmur-free canvas, a condition's murmur and extra sounds
   (`hldm.data.simulator.render_additions`: early-diastolic decrescendo, mid-diastolic
   rumble, continuous through S2, late-systolic after a click, opening snap, S3, S4) are
   rendered on the canvas's own re-timed beats.
3. Grade: the murmur's level is set relative to the canvas's heart sounds (the median
   S1/S2 peak stands where the simulator's REF_PEAK does), 6 dB per Levine grade, so
   grades II and IV-VI exist on real backgrounds.

Canvases with a real murmur are re-timed only and keep their labels. A rate far from
a child's (under 80 bpm) may relabel the canvas's age group to one with that resting
rate (the sound of a slow heart is what the model must learn for adults; CirCor has no
adults); the model card says so. Items are deterministic in (seed, i).
"""
from __future__ import annotations

import math

import librosa
import numpy as np
from torch.utils.data import Dataset

from hldm.audio.features import HOP, N_FFT, n_frames, normalize_loudness, to_features
from hldm.clinical.knowledge_graph import AGE_DEFAULTS, CONDITION_PROFILES
from hldm.clinical.validation import FindingsError, validate
from hldm.clinical.vocabulary import CONDITIONS, HEART_RATE_RANGE, SAMPLE_RATE, Findings
from hldm.data.simulator import REF_PEAK, beat_times, render_additions, sample_findings
from hldm.data.windows import CirCorWindows, _prompts, factor_labels, s1s2_mask

RATE_RANGE = (40.0, 180.0)  # bpm drawn for augmented windows (log-uniform)
MURMUR_PROB = 0.75  # a murmur-free canvas gets a placed murmur this often
ADULT_RATE = 80.0  # below this, the canvas may be relabelled to an older age group
OLDER_AGES = ("adolescent", "young adult", "adult", "older adult")
MURMUR_CONDITIONS = tuple(c for c in CONDITIONS if CONDITION_PROFILES[c].has_murmur)
MAX_TRIES = 16


def qs2_ms(heart_rate: float) -> float:
    """Weissler's electromechanical systole (Q-S2, ms) at a heart rate; floored for rates past 200 bpm."""
    return max(546.0 - 2.0 * float(heart_rate), 120.0)


def source_cycles(seg: np.ndarray, onset: float, tol: float = 1e-3) -> np.ndarray:
    """Contiguous complete cycles from the S1 onset `onset`: (K, 5) rows
    (S1 on, S1 off = systole on, S2 on, S2 off = diastole on, next S1 on), in seconds."""
    rows = seg[seg[:, 2] > 0]
    k = int(np.argmin(np.abs(rows[:, 0] - onset)))
    cycles = []
    while k + 3 < len(rows) and tuple(rows[k:k + 4, 2].astype(int)) == (1, 2, 3, 4):
        r = rows[k:k + 4]
        if np.any(np.abs(r[1:, 0] - r[:-1, 1]) > tol):
            break
        if cycles and abs(r[0, 0] - cycles[-1][4]) > tol:
            break
        cycles.append((r[0, 0], r[0, 1], r[2, 0], r[2, 1], r[3, 1]))
        k += 4
    return np.asarray(cycles, dtype=np.float64).reshape(-1, 5)


def retime_anchors(cycles: np.ndarray, heart_rate: float, max_variation: float | None = None) -> np.ndarray:
    """Source cycles (K, 5) -> the same landmarks re-timed to `heart_rate`, (K, 5), starting at 0.

    RR_k' = 60 / heart_rate * RR_k / mean(RR), with RR_k / mean(RR) clipped to 1 +- max_variation
    when given (a recording's beat-to-beat variation is a few per cent; a generated clip's may be
    a missed or extra beat); systole' = systole * QS2(new) / QS2(source); S1 and S2 keep their
    lengths; diastole takes the rest (at least 40 ms).
    """
    rr = cycles[:, 4] - cycles[:, 0]
    src_rate = 60.0 / float(np.mean(rr))
    ratio = rr / np.mean(rr)
    if max_variation is not None:
        ratio = np.clip(ratio, 1.0 - max_variation, 1.0 + max_variation)
    new_rr = 60.0 / heart_rate * ratio
    s1 = cycles[:, 1] - cycles[:, 0]
    s2 = cycles[:, 3] - cycles[:, 2]
    systole = (cycles[:, 2] - cycles[:, 0]) * qs2_ms(heart_rate) / qs2_ms(src_rate)
    systole = np.maximum(systole, s1 + 0.02)
    diastole = np.maximum(new_rr - systole - s2, 0.04)
    out = np.empty_like(cycles)
    start = 0.0
    for k in range(len(cycles)):
        out[k] = (start, start + s1[k], start + systole[k], start + systole[k] + s2[k],
                  start + systole[k] + s2[k] + diastole[k])
        start = out[k, 4]
    return out


def vocode(audio: np.ndarray, src_t: np.ndarray, dst_t: np.ndarray, n_out: int,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Re-time `audio` along the piecewise-linear map dst_t -> src_t (seconds, both increasing).

    A phase vocoder on the project's STFT (n_fft 256, hop 32): output frame k takes the
    source magnitude interpolated at src(k * hop) and advances each bin's phase by its
    instantaneous frequency, so pitch is kept whatever the local rate. Where the map's
    slope is 1 (S1 and S2) the source phase is used as is, so heart sounds are copied
    with their transients intact. A plain vocoder turns a 3x-stretched noise floor into
    steady streaks (each source frame repeated with coherent phase); with `rng`, a
    stretched frame reads its source position jittered by up to half the stretch, so the
    floor keeps a noise's frame-to-frame variation. audio (N,) -> (n_out,) float32.
    """
    spec = librosa.stft(audio.astype(np.float32), n_fft=N_FFT, hop_length=HOP, center=True)  # (129, F)
    n_src = spec.shape[1]
    frames = n_out // HOP + 1
    t_out = np.arange(frames) * HOP / SAMPLE_RATE
    pos = np.interp(t_out, dst_t, src_t) * SAMPLE_RATE / HOP  # (frames,) source frame position
    seg = np.clip(np.searchsorted(dst_t, t_out, side="right") - 1, 0, len(dst_t) - 2)
    slope = (src_t[seg + 1] - src_t[seg]) / np.maximum(dst_t[seg + 1] - dst_t[seg], 1e-9)
    identity = np.abs(slope - 1.0) < 1e-6
    if rng is not None:
        stretch = np.clip(1.0 / np.maximum(slope, 1e-3) - 1.0, 0.0, 4.0)  # 0 where not stretched
        pos = pos + stretch * rng.uniform(-0.5, 0.5, frames)
    pos = np.clip(pos, 0, n_src - 1.001)
    i = pos.astype(int)
    a = (pos - i)[None]
    mag = (1 - a) * np.abs(spec[:, i]) + a * np.abs(spec[:, i + 1])  # (129, frames)
    omega = 2 * np.pi * HOP * np.arange(spec.shape[0]) / N_FFT  # expected advance per hop
    dphi = np.angle(spec[:, i + 1]) - np.angle(spec[:, i]) - omega[:, None]
    dphi = omega[:, None] + (dphi + np.pi) % (2 * np.pi) - np.pi  # (129, frames)
    src_phase = np.angle(spec[:, np.rint(pos).astype(int)])
    phase = np.empty_like(mag)
    phase[:, 0] = src_phase[:, 0]
    for k in range(1, frames):
        phase[:, k] = src_phase[:, k] if identity[k] else phase[:, k - 1] + dphi[:, k - 1]
    out = librosa.istft(mag * np.exp(1j * phase), hop_length=HOP, n_fft=N_FFT, center=True, length=n_out)
    return out.astype(np.float32)


def heart_sound_peak(audio: np.ndarray, seg: np.ndarray) -> float:
    """The canvas's reference level: the larger of the median S1 and median S2 peak |x|."""
    peaks = {1: [], 3: []}
    for start, end, state in seg:
        if int(state) in peaks:
            lo, hi = int(start * SAMPLE_RATE), min(int(math.ceil(end * SAMPLE_RATE)), len(audio))
            if hi > lo:
                peaks[int(state)].append(float(np.max(np.abs(audio[lo:hi]))))
    levels = [np.median(v) for v in peaks.values() if v]
    return float(max(levels)) if levels else float(np.max(np.abs(audio)))


def place_findings(audio: np.ndarray, anchors: np.ndarray, findings: Findings, seed: int) -> np.ndarray:
    """A murmur-free canvas (N,) with `findings`' murmur and extra sounds added on its own beats.

    anchors: the canvas's cycles (K, 5) as `retime_anchors` gives them (seconds from the
    clip start). The additions are rendered at the simulator's REF_PEAK scale and scaled
    by the canvas's heart-sound peak over REF_PEAK, so the grade sets the murmur's level
    relative to this recording's S1/S2.
    """
    beats = [beat_times(c[0], c[4] - c[0], systole=c[2] - c[0]) for c in anchors]
    add = render_additions(findings, beats, len(audio), seed=seed)
    scale = heart_sound_peak(audio, segmentation_of(anchors)) / REF_PEAK
    return (audio + (add["murmur"] + add["extra"]) * scale).astype(np.float32)


def segmentation_of(anchors: np.ndarray) -> np.ndarray:
    """Re-timed cycles (K, 5) -> CirCor-style rows (4K, 3): start_s, end_s, state 1..4."""
    rows = []
    for c in anchors:
        rows += [(c[0], c[1], 1), (c[1], c[2], 2), (c[2], c[3], 3), (c[3], c[4], 4)]
    return np.asarray(rows, dtype=np.float64)


def window_rate(anchors: np.ndarray, seconds: float) -> float:
    """60 / median RR of the re-timed cycles starting inside the window (what CirCorWindows labels)."""
    inside = anchors[anchors[:, 0] < seconds]
    return float(60.0 / np.median(inside[:, 4] - inside[:, 0]))


class AugmentedWindows(Dataset):
    """`n` augmented windows on the canvas of `base` (a CirCorWindows of the train split).

    Item i: a base window drawn with (seed, i), re-timed to a rate drawn log-uniform in
    RATE_RANGE, and, on a murmur-free canvas, given a condition's murmur (MURMUR_PROB)
    at a grade level relative to its own heart sounds. Same WindowItem dict as
    CirCorWindows, source "augmented", with the item index in its meta.
    """

    def __init__(self, base: CirCorWindows, n: int, seconds: float | None = None, seed: int = 0):
        if n < 0:
            raise ValueError(f"n: {n}; must be >= 0")
        self.base, self.n, self.seed = base, int(n), int(seed)
        self.seconds = float(seconds or base.seconds)
        self.n_samples = int(round(self.seconds * SAMPLE_RATE))
        # Canvases whose murmur status is known (CirCor's "Unknown" would give no label).
        self._canvas = [j for j, (r, _) in enumerate(base.windows) if base.recordings[r].murmur_status != "unknown"]
        if self.n and not self._canvas:
            raise ValueError("base: no window with a known murmur status to use as a canvas")

    def __len__(self) -> int:
        return self.n

    def findings_at(self, i: int) -> Findings:
        return self[i]["findings"]

    def _draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray, np.ndarray]:
        """A canvas window, its source cycles and their re-timing, long enough for the window."""
        rate = float(np.exp(rng.uniform(*np.log(RATE_RANGE))))
        for _ in range(MAX_TRIES):
            j = self._canvas[int(rng.integers(len(self._canvas)))]
            r, onset = self.base.windows[j]
            cycles = source_cycles(self.base.recordings[r].segmentation, onset)
            if len(cycles) < 2:
                continue
            anchors = retime_anchors(cycles, rate)
            need = int(np.searchsorted(anchors[:, 4], self.seconds)) + 1  # cycles covering the window
            if need <= len(anchors):
                return j, cycles[:need], anchors[:need]
        # Nothing long enough at this rate (a fast rate on short stretches): the last canvas at its own rate.
        return j, cycles, retime_anchors(cycles, 60.0 / float(np.mean(cycles[:, 4] - cycles[:, 0])))

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} augmented windows")
        rng = np.random.default_rng([self.seed, i])
        j, cycles, anchors = self._draw(rng)
        r, onset = self.base.windows[j]
        rec = self.base.recordings[r]
        pad = 0.05  # s of source context either side, so the STFT's edges fall outside the window
        lo = max(int(round((cycles[0, 0] - pad) * SAMPLE_RATE)), 0)
        hi = int(round((cycles[-1, 4] + pad) * SAMPLE_RATE))
        source = np.asarray(self.base._recording_audio(r)[lo:hi], dtype=np.float32)
        t0 = lo / SAMPLE_RATE
        src_t = np.concatenate([[t0], cycles.reshape(-1), [hi / SAMPLE_RATE]]) - t0
        dst_t = np.concatenate([[0.0], anchors.reshape(-1) + (cycles[0, 0] - t0), [0.0]])
        dst_t[-1] = dst_t[-2] + (src_t[-1] - src_t[-2])
        src_t, dst_t = _strictly_increasing(src_t, dst_t)
        start = int(round((cycles[0, 0] - t0) * SAMPLE_RATE))
        audio = vocode(source, src_t, dst_t, start + self.n_samples, rng)[start:]  # (N,)

        rate = window_rate(anchors, self.seconds)
        findings = self._findings(self.base._findings[r], rec.murmur_status, rate, rng)
        if findings.murmur == "present" and rec.murmur_status == "absent":
            audio = place_findings(audio, anchors, findings, seed=int(rng.integers(2**31)))
        features = to_features(normalize_loudness(audio))
        labels = factor_labels(findings, True, rate, s1s2_mask(segmentation_of(anchors), 0.0, n_frames(self.n_samples)),
                               math.nan)
        return {"features": features, "findings": findings, "prompts": _prompts(findings), "labels": labels,
                "source": "augmented",
                "meta": {"stem": rec.stem, "patient_id": rec.patient_id, "start_s": float(onset), "index": i}}

    @staticmethod
    def _findings(canvas: Findings, status: str, rate: float, rng: np.random.Generator) -> Findings:
        """The canvas's findings at the new rate, with a placed murmur on a murmur-free canvas."""
        # The window's median RR can land a beat outside the range the product accepts.
        f = canvas.with_(heart_rate=float(np.clip(round(rate), *HEART_RATE_RANGE)))
        if rate < ADULT_RATE and canvas.age_group not in OLDER_AGES and rng.random() < 0.5:
            age = OLDER_AGES[int(rng.integers(len(OLDER_AGES)))]
            _, height, weight = AGE_DEFAULTS[age]
            f = f.with_(age_group=age, height_cm=round(height * rng.uniform(0.93, 1.07), 1),
                        weight_kg=round(weight * rng.uniform(0.85, 1.15), 1), pregnant=False)
        if status != "absent" or rng.random() >= MURMUR_PROB:
            return validate(f)
        for _ in range(MAX_TRIES):
            m = sample_findings(rng, MURMUR_CONDITIONS[int(rng.integers(len(MURMUR_CONDITIONS)))])
            try:
                return validate(f.with_(murmur=m.murmur, timing=m.timing, shape=m.shape, grade=m.grade,
                                        pitch=m.pitch, quality=m.quality, radiation=m.radiation,
                                        extra_sounds=m.extra_sounds, condition=m.condition))
            except FindingsError:
                continue  # e.g. a condition that contradicts the canvas's demographics
        return validate(f)


def _strictly_increasing(src_t: np.ndarray, dst_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop anchors that repeat a time (zero-length TSV rows), keeping the map well defined."""
    keep = np.concatenate([[True], (np.diff(src_t) > 1e-9) & (np.diff(dst_t) > 1e-9)])
    return src_t[keep], dst_t[keep]
