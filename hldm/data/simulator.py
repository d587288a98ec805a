"""A physiological phonocardiogram simulator with ground truth for every factor.

`simulate(findings, seconds, seed)` renders a 4 kHz PCG as the sum of three
clean components, "s1s2" (heart sounds and extra sounds), "murmur" and "noise",
and returns the CirCor-style segmentation, the realised heart rate and every
factor it drew. It is the test fixture of the project, the ground truth for
the MS-VAE's disentanglement, and the source of grades CirCor lacks (IV-VI).
numpy + scipy.signal only; a 4 s clip takes a few milliseconds.

Model (times in seconds, levels relative to REF_PEAK, the M1 peak at the mitral area):

- Rhythm: RR intervals around 60/HR with respiratory sinus arrhythmia (RR
  shortens in inspiration) and beat-to-beat jitter; the intervals inside the
  clip are re-centred so the realised rate equals the requested one. Systole
  (S1 onset -> S2 onset) = 0.33 * sqrt(RR). The clip starts 0-0.1 s before
  the first S1 onset (in the previous beat's diastole).
- S1 = M1 + T1 (T1 20-30 ms later), S2 = A2 + P2: damped two-component
  sinusoids, S1 35-110 Hz, S2 50-150 Hz. The A2-P2 split widens with
  inspiration (15 ms expiration -> 50 ms inspiration) or is fixed at about
  50 ms ("fixed split S2", as in atrial septal defect). S1 is loudest at the
  apex (MV, TV), S2 at the base (AV, PV), P2 mainly at PV: SITE_GAIN_DB.
- Extra sounds (Findings.extra_sounds): ejection click 50 ms after M1,
  midsystolic click at 55 % of systole, opening snap 80 ms after A2, S3
  150 ms after A2 and S4 90 ms before S1 (low-frequency, 25-45 Hz).
- Murmur: band-limited noise (blowing: smooth; harsh: wider band with 25-55 Hz
  roughness; rumbling: narrow lower band with 8-20 Hz roughness) or a harmonic
  tone (musical: three harmonics with slow vibrato) whose band follows pitch
  (PITCH_BAND_HZ), gated by the timing window of every beat (MURMUR_WINDOWS,
  "continuous" runs through S2) and shaped by the envelope (crescendo,
  decrescendo, diamond peaking mid-window or at S2 for continuous, plateau).
- Loudness: the murmur's RMS over its active windows is GRADE_DB[grade] dB
  relative to REF_PEAK: 6 dB per Levine grade from -30 dB (I) to 0 dB (VI);
  diastolic grades I-IV use the same rows. A thrill (grade IV+) is not a sound.
- Location: a murmur is loudest at its condition's typical sites (knowledge
  graph profile; Findings.location when no condition is given). Auscultation sites form the
  chain AV - PV - TV - MV; each step away attenuates by LOCATION_DB_PER_STEP
  (-6 dB) and low-passes (first order, 600 Hz / steps), as the chest wall
  damps high frequencies more.
- Recording: white + pink noise plus friction bursts (about 0.3 per second,
  30-150 ms, 20-400 Hz). Every component goes through the stethoscope response
  (zero-phase 20-800 Hz Butterworth), so the components still sum exactly to
  the audio; the filtered noise is then scaled to RMS noise_level * REF_PEAK.

Seeds: one seed spawns independent streams for rhythm, heart sounds, murmur,
noise and extra sounds, so changing only the murmur (e.g. its grade) leaves
s1s2 and noise identical, and adding an extra sound leaves S1/S2 as they were:
what-if tests and disentanglement scores rely on this.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt, sosfiltfilt

from hldm.clinical.knowledge_graph import AGE_DEFAULTS, CONDITION_PROFILES
from hldm.clinical.validation import (PREGNANCY_AGE_GROUPS, SHAPES_BY_TIMING, canonical, validate,
                                      validate_dict)
from hldm.clinical.vocabulary import (CONDITIONS, EXTRA_SOUNDS, LOCATIONS, SAMPLE_RATE, SEXES, Findings,
                                      max_grade)

REF_PEAK = 0.25  # M1 peak amplitude at the mitral area; every level below is relative to it
MAX_SECONDS = 600.0

# Levine grade -> murmur RMS (over its active windows) in dB re REF_PEAK. Monotonic, 6 dB a grade.
GRADE_DB = {1: -30.0, 2: -24.0, 3: -18.0, 4: -12.0, 5: -6.0, 6: 0.0}

PITCH_BAND_HZ = {"low": (50.0, 150.0), "medium": (100.0, 300.0), "high": (200.0, 600.0)}

# Chain of auscultation sites; distance in steps between two sites = |index difference|.
SITE_ORDER = ("AV", "PV", "TV", "MV")
LOCATION_DB_PER_STEP = -6.0
# Heart-sound gains (dB) per recording site: S1 at the apex, S2 at the base, P2 mainly pulmonic.
SITE_GAIN_DB = {  # site: (S1, A2, P2)
    "AV": (-4.0, 0.0, -10.0),
    "PV": (-4.0, -1.0, -4.0),
    "TV": (0.0, -4.0, -10.0),
    "MV": (0.0, -4.0, -14.0),
}

STETHOSCOPE_BAND_HZ = (20.0, 800.0)
# Default draw (log-uniform) of noise RMS / REF_PEAK. On 96 random CirCor recordings the RMS of
# mid-diastole over the median S1 peak has 5/50/95th percentiles 0.03/0.11/0.30.
NOISE_LEVEL_RANGE = (0.01, 0.2)
FRICTION_RATE_HZ = 0.3

# Respiration rate (breaths/min) by age group: paces the RR variability and the S2 split.
AGE_RESP_RATE = {"neonate": 45, "infant": 35, "child": 24, "adolescent": 17,
                 "young adult": 15, "adult": 14, "older adult": 15}

# Envelope when neither the findings nor the condition's profile give one that fits the timing.
DEFAULT_SHAPE = {"early-systolic": "decrescendo", "mid-systolic": "diamond", "late-systolic": "crescendo",
                 "holosystolic": "plateau", "early-diastolic": "decrescendo",
                 "mid-diastolic": "decrescendo", "holodiastolic": "decrescendo", "continuous": "diamond"}
EXTRA_SOUND_PROB = 0.3  # chance of each non-hallmark extra sound of a condition in sample_findings
HALLMARK_PROB = 0.9
MURMUR_OPTIONAL_ABSENT_PROB = 0.15  # e.g. a click without the murmur of mitral valve prolapse


@dataclass
class SimulatedPCG:
    """One simulated clip and its ground truth (all arrays at SAMPLE_RATE)."""

    audio: np.ndarray  # (N,) float32, == s1s2 + murmur + noise
    components: dict[str, np.ndarray]  # "s1s2", "murmur", "noise": each (N,) float32
    segmentation: np.ndarray  # (K, 3) rows (start_s, end_s, state): 1 S1, 2 systole, 3 S2, 4 diastole
    heart_rate: float  # bpm realised (from the S1 onsets inside the clip)
    factors: dict  # every drawn factor, JSON-serialisable
    findings: Findings  # the findings rendered, murmur attributes completed
    sr: int = field(default=SAMPLE_RATE)

    def labels(self) -> dict:
        """Findings, segmentation and factors as one JSON-serialisable dict (the CLI's .json)."""
        return {"findings": self.findings.to_dict(), "sr": self.sr, "seconds": len(self.audio) / self.sr,
                "heart_rate": self.heart_rate, "segmentation": self.segmentation.tolist(),
                "factors": self.factors}


# ----------------------------------------------------------------------------- findings


def _shapes_for(timing: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
    allowed = SHAPES_BY_TIMING[timing]
    return tuple(c for c in candidates if c in allowed) or (DEFAULT_SHAPE[timing],)


def complete_findings(findings: Findings) -> Findings:
    """Fill the murmur attributes validation leaves optional (shape, pitch, quality).

    From the condition's knowledge-graph profile when it has one, else generic defaults.
    """
    if findings.murmur != "present":
        return findings
    prof = CONDITION_PROFILES[findings.condition] if findings.condition else None
    return findings.with_(shape=findings.shape or _shapes_for(findings.timing, prof.shapes if prof else ())[0],
                          pitch=findings.pitch or (prof.pitches[0] if prof and prof.pitches else "medium"),
                          quality=findings.quality or (prof.qualities[0] if prof and prof.qualities else "blowing"))


def _validated(findings: Findings | dict) -> Findings:
    return validate_dict(findings) if isinstance(findings, dict) else validate(findings)


def sample_findings(rng: np.random.Generator, condition: str | None = None) -> Findings:
    """Clinically coherent random findings for one of the 17 conditions (uniform when None).

    Drawn from the condition's knowledge-graph profile: one of its typical timings,
    a shape that fits the timing, a grade uniform in its Levine range (so grades
    I-VI and every timing occur over the 17 conditions), pitch, quality, site,
    radiation, hallmark and other extra sounds, an age group it occurs in and the
    age's resting heart rate, height and weight with some spread.
    """
    if condition is None:
        condition = CONDITIONS[int(rng.integers(len(CONDITIONS)))]
    prof = CONDITION_PROFILES[canonical("condition", condition)]
    pick = (lambda options: options[int(rng.integers(len(options)))])
    age = pick(prof.ages)
    hr0, height0, weight0 = AGE_DEFAULTS[age]
    sex = pick(SEXES)
    extras = set(s for s in prof.hallmark_sounds if rng.random() < HALLMARK_PROB)
    extras |= set(s for s in prof.extra_sounds if s not in prof.hallmark_sounds and rng.random() < EXTRA_SOUND_PROB)
    base = dict(condition=prof.name, location=pick(prof.locations or LOCATIONS),
                extra_sounds=tuple(s for s in EXTRA_SOUNDS if s in extras),
                heart_rate=round(float(np.clip(hr0 * rng.uniform(0.85, 1.15), 45.0, 190.0)), 1),
                age_group=age, sex=sex, height_cm=round(height0 * rng.uniform(0.9, 1.1), 1),
                weight_kg=round(weight0 * rng.uniform(0.8, 1.2), 1),
                pregnant=bool(sex == "female" and age in PREGNANCY_AGE_GROUPS and rng.random() < 0.05))
    if not prof.has_murmur or (prof.murmur_optional and rng.random() < MURMUR_OPTIONAL_ABSENT_PROB):
        return Findings(murmur="absent", **base)
    timing = pick(prof.timings)
    lo, hi = prof.grades
    return Findings(murmur="present", timing=timing, shape=pick(_shapes_for(timing, prof.shapes)),
                    grade=int(rng.integers(lo, min(hi, max_grade(timing)) + 1)), pitch=pick(prof.pitches),
                    quality=pick(prof.qualities), radiation=pick(prof.radiations), **base)


def location_steps(findings: Findings) -> int:
    """Steps along AV-PV-TV-MV from the murmur's typical site(s) to the recording site."""
    prof = CONDITION_PROFILES[findings.condition] if findings.condition else None
    sites = prof.locations if prof and prof.locations else (findings.location,)
    here = SITE_ORDER.index(findings.location)
    return min(abs(here - SITE_ORDER.index(s)) for s in sites)


# ----------------------------------------------------------------------------- signal pieces


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def _transient(freqs, weights, rise: float, tau: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A damped multi-component sinusoid, peak 1: sum_k w_k sin(2 pi f_k t + phi_k) (1 - e^-t/rise) e^-t/tau."""
    t = np.arange(int(6 * tau * sr)) / sr
    env = (1.0 - np.exp(-t / rise)) * np.exp(-t / tau)
    phases = rng.uniform(0, 2 * np.pi, len(freqs))
    x = sum(w * np.sin(2 * np.pi * f * t + p) for f, w, p in zip(freqs, weights, phases)) * env
    return x / max(np.max(np.abs(x)), 1e-12)


def _add(buf: np.ndarray, x: np.ndarray, at_s: float, sr: int) -> None:
    i = int(round(at_s * sr))
    lo, hi = max(i, 0), min(i + len(x), len(buf))
    if hi > lo:
        buf[lo:hi] += x[lo - i: hi - i]


def _rhythm(hr: float, seconds: float, rng: np.random.Generator, resp_hz: float) -> dict:
    """S1 onsets (one beat before the clip included) and RR intervals whose in-clip mean is 60/hr."""
    period = 60.0 / hr
    t0 = rng.uniform(0.0, 0.1)
    n = int(math.ceil(seconds / (0.8 * period))) + 2
    resp_phase = rng.uniform(0, 2 * np.pi)
    rsa = rng.uniform(0.02, 0.05)  # fractional RR swing with breathing
    jitter = rng.normal(0.0, 0.015, n)
    approx = t0 + period * np.arange(n)
    rr = period * (1.0 + rsa * np.cos(2 * np.pi * resp_hz * approx + resp_phase) + jitter)
    for _ in range(6):  # re-centre the intervals inside the clip; their count can change once or twice
        onsets = t0 + np.concatenate([[0.0], np.cumsum(rr)])
        k = int(np.sum(onsets < seconds)) - 1  # intervals 0..k-1 lie inside the clip
        k = max(k, 1)
        if abs(rr[:k].mean() - period) < 1e-9:
            break
        rr[:k] += period - rr[:k].mean()
    onsets = t0 + np.concatenate([[0.0], np.cumsum(rr)])
    inside = onsets[onsets < seconds]
    realised = 60.0 / np.mean(np.diff(inside)) if len(inside) > 1 else 60.0 / rr[0]
    prev_rr = period * (1.0 + rng.normal(0.0, 0.015))
    starts = np.concatenate([[t0 - prev_rr], onsets[:-1]])
    rrs = np.concatenate([[prev_rr], rr])
    keep = starts < seconds
    return dict(starts=starts[keep], rr=rrs[keep], t0=t0, heart_rate=float(realised),
                rr_std=float(np.std(np.diff(inside))) if len(inside) > 2 else 0.0,
                resp_phase=resp_phase, rsa=rsa)


def _inspiration(t: np.ndarray | float, resp_hz: float, phase: float):
    """0 (end-expiration) .. 1 (peak inspiration); in phase with the RR shortening of _rhythm."""
    return 0.5 * (1.0 + np.cos(2 * np.pi * resp_hz * np.asarray(t) + phase))


def beat_times(start: float, rr: float, systole: float | None = None) -> dict:
    """One cardiac cycle's landmarks (s): S1 onset, S2 onset, next S1 onset, phase lengths.

    Systole (S1 onset -> S2 onset) defaults to 0.33 * sqrt(RR); a real recording's
    annotated systole can be given instead.
    """
    sys_ = 0.33 * math.sqrt(rr) if systole is None else float(systole)
    return dict(s1=start, s2=start + sys_, next=start + rr, sys=sys_, dia=rr - sys_,
                s1_dur=min(0.12, 0.4 * sys_))


def _heart_sounds(f: Findings, beats: list[dict], n: int, sr: int, rng: np.random.Generator,
                  resp_hz: float, resp_phase: float) -> tuple[np.ndarray, list[float], list[float], list[float]]:
    """The S1/S2 part of the s1s2 component (before the stethoscope), per-beat amplitude,
    S2 split (ms) and S2 end times."""
    g_s1, g_a2, g_p2 = (_db(x) for x in SITE_GAIN_DB[f.location])
    fixed = "fixed split S2" in f.extra_sounds
    fixed_split = rng.uniform(0.045, 0.055)
    buf = np.zeros(n)
    amps, splits, s2_ends = [], [], []
    for b in beats:
        amp = rng.uniform(0.9, 1.1)
        amps.append(amp)
        m1 = b["s1"] + 0.01
        _add(buf, amp * g_s1 * _transient((rng.uniform(35, 50), rng.uniform(60, 90)), (1.0, 0.6),
                                          0.004, rng.uniform(0.016, 0.022), sr, rng), m1, sr)
        _add(buf, amp * g_s1 * 0.6 * _transient((rng.uniform(45, 60), rng.uniform(80, 110)), (1.0, 0.5),
                                                0.004, rng.uniform(0.014, 0.02), sr, rng),
             m1 + rng.uniform(0.02, 0.03), sr)
        a2 = b["s2"] + 0.01
        split = fixed_split if fixed else 0.015 + 0.035 * float(_inspiration(a2, resp_hz, resp_phase))
        splits.append(1000.0 * split)
        _add(buf, amp * g_a2 * 0.8 * _transient((rng.uniform(55, 75), rng.uniform(100, 150)), (1.0, 0.6),
                                                0.003, rng.uniform(0.012, 0.016), sr, rng), a2, sr)
        _add(buf, amp * g_p2 * 0.8 * _transient((rng.uniform(50, 70), rng.uniform(90, 130)), (1.0, 0.5),
                                                0.003, rng.uniform(0.011, 0.015), sr, rng), a2 + split, sr)
        s2_ends.append(a2 + split + 0.06)
    return buf, amps, splits, s2_ends


def _extra_sounds(f: Findings, beats: list[dict], amps: list[float], n: int, sr: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Clicks, snap, S3 and S4 at their physiological times (before the stethoscope).

    Their own random stream, so adding one leaves S1 and S2 unchanged.
    """
    buf = np.zeros(n)
    r = rng
    for b, amp in zip(beats, amps):
        m1, a2 = b["s1"] + 0.01, b["s2"] + 0.01
        for sound, at, freqs, tau, level in (
                ("ejection click", m1 + 0.05, (r.uniform(120, 180), r.uniform(220, 300)), 0.006, 0.5),
                ("midsystolic click", b["s1"] + 0.55 * b["sys"], (r.uniform(120, 180), r.uniform(220, 300)),
                 0.006, 0.45),
                ("opening snap", a2 + r.uniform(0.07, 0.09), (r.uniform(100, 150), r.uniform(180, 250)), 0.008, 0.5),
                ("S3", a2 + r.uniform(0.13, 0.17), (r.uniform(25, 35), r.uniform(38, 45)), 0.03, 0.35),
                ("S4", b["next"] - 0.09, (r.uniform(25, 35), r.uniform(38, 45)), 0.025, 0.3)):
            if sound in f.extra_sounds:
                _add(buf, amp * level * _transient(freqs, (1.0, 0.5), 0.004, tau, sr, r), at, sr)
    return buf


def _envelope_template(shape: str, u: np.ndarray, peak: float = 0.5) -> np.ndarray:
    """Murmur amplitude over its window, u in [0, 1]; diamond peaks at `peak`."""
    if shape == "crescendo":
        return 0.15 + 0.85 * u
    if shape == "decrescendo":
        return 1.0 - 0.85 * u
    if shape == "diamond":
        rise = np.where(u < peak, u / max(peak, 1e-6), (1.0 - u) / max(1.0 - peak, 1e-6))
        return 0.15 + 0.85 * rise
    return np.ones_like(u)  # plateau


def murmur_window(timing: str, b: dict) -> tuple[float, float, float]:
    """(start, end, diamond peak as a fraction of the window) of a murmur in one beat."""
    s1, s2, sys_, dia = b["s1"], b["s2"], b["sys"], b["dia"]
    a2 = s2 + 0.01
    win = {"early-systolic": (s1 + 0.02, s1 + 0.02 + 0.45 * sys_),
           "mid-systolic": (s1 + 0.15 * sys_, s1 + 0.85 * sys_),
           "late-systolic": (s1 + 0.5 * sys_, s2 - 0.005),
           "holosystolic": (s1 + 0.005, s2),
           "early-diastolic": (a2, a2 + 0.55 * dia),
           "mid-diastolic": (s2 + max(0.1, 0.15 * dia), s2 + 0.65 * dia),
           "holodiastolic": (a2, b["next"] - 0.01),
           "continuous": (s1 + 0.25 * sys_, s2 + 0.75 * dia)}[timing]
    peak = (s2 - win[0]) / (win[1] - win[0]) if timing == "continuous" else 0.5
    return win[0], win[1], peak


def _bandpass(lo: float, hi: float, sr: int, order: int = 2) -> np.ndarray:
    return butter(order, [lo, min(hi, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")


def _lowpass_noise(rng: np.random.Generator, n: int, cutoff: float, sr: int) -> np.ndarray:
    x = sosfilt(butter(2, cutoff, btype="lowpass", fs=sr, output="sos"), rng.standard_normal(n))
    return x / max(np.std(x), 1e-12)


def _murmur(f: Findings, beats: list[dict], n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The murmur component (before location and stethoscope filtering), RMS over its windows = grade level."""
    t = np.arange(n) / sr
    env = np.zeros(n)
    ramp = int(0.008 * sr)
    for b in beats:
        start, end, peak = murmur_window(f.timing, b)
        lo, hi = max(int(round(start * sr)), 0), min(int(round(end * sr)), n)
        if hi - lo < 2:
            continue
        u = (t[lo:hi] - start) / (end - start)
        e = _envelope_template(f.shape, u, peak) * _db(rng.normal(0.0, 1.0))  # beat-to-beat +-1 dB
        k = min(ramp, (hi - lo) // 2)
        fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k) if k else np.ones(0)
        e[:k] *= fade
        e[hi - lo - k:] *= fade[::-1]
        env[lo:hi] = np.maximum(env[lo:hi], e)
    band = PITCH_BAND_HZ[f.pitch]
    centre = math.sqrt(band[0] * band[1])
    if f.quality == "musical":
        f0 = centre * rng.uniform(0.9, 1.1)
        vibrato = 1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sr
        carrier = sum(a * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
        carrier = carrier + 0.1 * sosfilt(_bandpass(*band, sr), rng.standard_normal(n))
        rough = np.ones(n)
    else:
        lo_hz, hi_hz, rough_hz, depth = {"blowing": (band[0], band[1], None, 0.0),
                                         "harsh": (band[0] * 0.8, band[1] * 1.3, (25, 55), 0.8),
                                         "rumbling": (band[0], band[0] + 0.6 * (band[1] - band[0]), (8, 20), 0.7),
                                         }[f.quality]
        carrier = sosfilt(_bandpass(lo_hz, hi_hz, sr), rng.standard_normal(n))
        rough = np.ones(n)
        if rough_hz:
            rough = np.abs(1.0 + depth * _lowpass_noise(rng, n, rng.uniform(*rough_hz), sr))
    x = carrier * rough * env
    active = env > 0
    rms = math.sqrt(np.mean(x[active] ** 2)) if active.any() else 0.0
    target_db = GRADE_DB[f.grade]
    if rms > 0:
        x *= REF_PEAK * _db(target_db) / rms
    return x, dict(murmur_db_target=target_db, pitch_band_hz=list(band), active=active)


def _located_murmur(f: Findings, beats: list[dict], n: int, sr: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """_murmur as it reaches the recording site: damped and low-passed per step from its typical site."""
    murmur, info = _murmur(f, beats, n, sr, rng)
    steps = location_steps(f)
    if steps:
        murmur = sosfilt(butter(1, 600.0 / steps, btype="lowpass", fs=sr, output="sos"), murmur)
        murmur *= _db(LOCATION_DB_PER_STEP * steps)
    return murmur, info


def _stethoscope(x: np.ndarray, sr: int) -> np.ndarray:
    return sosfiltfilt(_bandpass(*STETHOSCOPE_BAND_HZ, sr), x)


def render_additions(findings: Findings, beats: list[dict], n: int, seed: int) -> dict[str, np.ndarray]:
    """The murmur and the extra sounds of `findings` for given beats, as a stethoscope hears them.

    beats: `beat_times` dicts, e.g. from a real recording's segmentation. Levels are
    relative to REF_PEAK (the M1 peak), so a caller scales them to its own heart sounds:
    the murmur's RMS over its windows is GRADE_DB[grade] dB re REF_PEAK, minus the
    location damping. Returns {"murmur": (n,), "extra": (n,)} float32, each zeros when absent.
    """
    f = complete_findings(_validated(findings))
    r_murmur, r_extra = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    murmur = _located_murmur(f, beats, n, SAMPLE_RATE, r_murmur)[0] if f.murmur == "present" else np.zeros(n)
    extra = _extra_sounds(f, beats, [1.0] * len(beats), n, SAMPLE_RATE, r_extra) * REF_PEAK
    return {"murmur": _stethoscope(murmur, SAMPLE_RATE).astype(np.float32),
            "extra": _stethoscope(extra, SAMPLE_RATE).astype(np.float32)}


def _noise(n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Recording noise at unit scale: white + pink (std 1) plus friction bursts (std 3)."""
    pink_frac = rng.uniform(0.3, 0.9)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    pink = np.fft.irfft(spec / np.sqrt(np.maximum(freqs, 1.0)), n)
    pink /= max(np.std(pink), 1e-12)
    x = pink_frac * pink + (1.0 - pink_frac) * rng.standard_normal(n)
    x /= max(np.std(x), 1e-12)
    n_bursts = int(rng.poisson(FRICTION_RATE_HZ * n / sr))
    burst_band = _bandpass(20.0, 400.0, sr)
    for _ in range(n_bursts):
        dur = rng.uniform(0.03, 0.15)
        m = int(dur * sr)
        burst = sosfilt(burst_band, rng.standard_normal(m)) * np.hanning(m)
        burst *= 3.0 / max(np.std(burst), 1e-12)
        _add(x, burst, rng.uniform(0.0, n / sr - dur), sr)
    return x, dict(pink_fraction=float(pink_frac), friction_bursts=n_bursts)


def _segmentation(beats: list[dict], s2_ends: list[float], seconds: float) -> np.ndarray:
    rows = []
    for b, s2_end in zip(beats, s2_ends):
        s1_end = b["s1"] + b["s1_dur"]
        rows += [(b["s1"], s1_end, 1), (s1_end, b["s2"], 2), (b["s2"], s2_end, 3), (s2_end, b["next"], 4)]
    seg = np.array(rows, dtype=np.float64)
    seg[:, :2] = np.clip(seg[:, :2], 0.0, seconds)
    return seg[seg[:, 1] > seg[:, 0]]


# ----------------------------------------------------------------------------- public API


def simulate(findings: Findings | dict, seconds: float = 4.0, seed: int = 0,
             noise_level: float | None = None) -> SimulatedPCG:
    """Render `seconds` of PCG at 4 kHz for `findings`; deterministic for a seed.

    noise_level: RMS of the noise component relative to REF_PEAK (0 = clean; None
    draws it log-uniformly in NOISE_LEVEL_RANGE, which spans real CirCor recordings).
    """
    f = complete_findings(_validated(findings))
    if not (0.0 < float(seconds) <= MAX_SECONDS):
        raise ValueError(f"seconds: {seconds!r} out of range; allowed: 0 < seconds <= {MAX_SECONDS:g}")
    if noise_level is not None and not (0.0 <= float(noise_level) <= 1.0):
        raise ValueError(f"noise_level: {noise_level!r} out of range; allowed: 0 <= noise_level <= 1")
    sr = SAMPLE_RATE
    n = int(round(seconds * sr))
    seconds = n / sr
    r_rhythm, r_sounds, r_murmur, r_noise, r_extra = (np.random.default_rng(s)
                                                      for s in np.random.SeedSequence(seed).spawn(5))
    resp_hz = AGE_RESP_RATE.get(f.age_group, 18) / 60.0 * r_rhythm.uniform(0.9, 1.1)
    rhythm = _rhythm(f.heart_rate, seconds, r_rhythm, resp_hz)
    starts, rrs = rhythm["starts"], rhythm["rr"].copy()
    rrs[:-1] = np.diff(starts)  # so each beat's end is exactly the next beat's start
    beats = [beat_times(s, rr) for s, rr in zip(starts, rrs)]

    s1s2, amps, splits, s2_ends = _heart_sounds(f, beats, n, sr, r_sounds, resp_hz, rhythm["resp_phase"])
    s1s2 = (s1s2 + _extra_sounds(f, beats, amps, n, sr, r_extra)) * REF_PEAK
    if noise_level is None:
        noise_level = float(np.exp(r_noise.uniform(*np.log(NOISE_LEVEL_RANGE))))
    noise, noise_factors = _noise(n, sr, r_noise)

    steps = location_steps(f)
    murmur_factors: dict = dict(murmur_db_target=None, murmur_rms_db=None, pitch_band_hz=None)
    murmur = np.zeros(n)
    if f.murmur == "present":
        murmur, info = _located_murmur(f, beats, n, sr, r_murmur)
        active = info.pop("active")
        murmur_factors.update(info, active_fraction=float(active.mean()))

    s1s2, murmur, noise = (_stethoscope(x, sr) for x in (s1s2, murmur, noise))
    noise *= REF_PEAK * float(noise_level) / max(np.std(noise), 1e-12)  # level as heard, bursts included
    comps = {"s1s2": s1s2.astype(np.float32), "murmur": murmur.astype(np.float32),
             "noise": noise.astype(np.float32)}
    audio = comps["s1s2"] + comps["murmur"] + comps["noise"]
    if f.murmur == "present" and active.any():
        murmur_factors["murmur_rms_db"] = float(
            20 * np.log10(np.sqrt(np.mean(comps["murmur"][active].astype(np.float64) ** 2)) / REF_PEAK))

    s1_onsets = [b["s1"] for b in beats if 0.0 <= b["s1"] < seconds]
    factors = dict(heart_rate=rhythm["heart_rate"], rr_std=rhythm["rr_std"], rsa=rhythm["rsa"],
                   respiration_rate=resp_hz * 60.0, first_s1_s=rhythm["t0"], s1_onsets_s=s1_onsets,
                   split_ms=float(np.mean(splits)), split_ms_per_beat=[float(x) for x in splits],
                   fixed_split="fixed split S2" in f.extra_sounds,
                   noise_level=float(noise_level), location_steps=steps,
                   location_gain_db=LOCATION_DB_PER_STEP * steps if f.murmur == "present" else 0.0,
                   ref_peak=REF_PEAK, **murmur_factors, **noise_factors)
    return SimulatedPCG(audio=audio, components=comps, segmentation=_segmentation(beats, s2_ends, seconds),
                        heart_rate=rhythm["heart_rate"], factors=factors, findings=f, sr=sr)


def main(argv: list[str] | None = None) -> int:
    """`python -m hldm simulate --findings JSON | --condition NAME --seconds S --seed N --out x.wav`."""
    from hldm.audio.io import write_wav

    p = argparse.ArgumentParser(prog="python -m hldm simulate",
                                description="Render a simulated PCG and write x.wav + x.json (labels).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--findings", help='JSON findings, e.g. \'{"murmur": "present", "timing": "holosystolic"}\'')
    src.add_argument("--condition", help="draw coherent findings for this condition (one of the 17)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-level", type=float, default=None, help="noise RMS relative to the S1 peak (0..1)")
    p.add_argument("--out", required=True, help="output .wav; labels go next to it as .json")
    args = p.parse_args(argv)
    try:
        if args.findings is not None:
            try:
                findings = json.loads(args.findings)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--findings: not valid JSON ({exc})") from exc
            if not isinstance(findings, dict):
                raise ValueError("--findings: expected a JSON object of findings fields")
        else:
            findings = sample_findings(np.random.default_rng(args.seed), condition=args.condition)
        sim = simulate(findings, seconds=args.seconds, seed=args.seed, noise_level=args.noise_level)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    peak = float(np.max(np.abs(sim.audio)))
    gain = 0.99 / peak if peak > 0.99 else 1.0  # keep a loud grade VI clip out of clipping
    write_wav(out, sim.audio * gain)
    labels = sim.labels()
    labels["wav_gain"] = gain
    json_path = out.with_suffix(".json")
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(labels, indent=1))
    tmp.replace(json_path)
    print(f"wrote {out} ({len(sim.audio) / sim.sr:.1f} s, {sim.heart_rate:.1f} bpm) and {json_path}")
    return 0
