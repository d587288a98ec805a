"""Edits of a user's own recording that keep the recording (issue 18).

`pipe.edit` re-generates a whole clip from its noised latent: at strength 0.5 the
grade barely moves, at 0.9 the clip is re-formed (another S1/S2, another noise).
A clinician editing a patient's recording wants the opposite: the same beats, the
same stethoscope and room, only the murmur changed. So an edit here changes the
recording's own STFT in the murmur phase frames and nowhere else, keeping its phase:

1. `segment` finds S1, systole, S2 and diastole on the upload with the shipped segmenter
   (checkpoints/segmenter, hldm.models.segmenter: trained on CirCor's annotated cycles; on
   held-out recordings it labels 98 % right where the envelope rule of hldm.eval.listener
   labels 81 % and swaps S1/S2 on 7 %, so an edit once worked on diastole for a systolic
   murmur), or refuses it with a reason (no beat, too few cycles, the segmenter unsure, heart
   sounds not standing out of the noise). `murmur_found` refuses a grade, timing or removal
   edit when the murmur's phase is not louder in its pitch band than the other phase: the edit
   would change nothing (7 of 9 low-pitched grade I-II CirCor murmurs tried).
2. On the edit's own STFT (a 32 ms window: a child's systole lasts ~100 ms), in the edited
   frames (the murmur's phase with raised-cosine edges), each cell's local power (smoothed
   over neighbouring bins and frames) is split into the phase's noise floor (per bin, the
   mean over the other phase's inner frames: what this recording sounds like without the
   murmur) and the excess, the murmur. The edit sets a new murmur part and scales the cell by
   sqrt((floor + murmur') / local), so the recording's own fine structure stays:
   - grade: murmur' = 10^(6 dB * (new - old) / 10) * excess: 6 dB per Levine grade
     relative to the recording's own S1/S2, as hldm.data.augment places murmurs;
   - murmur removed: murmur' = 0 over the whole phase and OUTWARD_S into the sounds beside it;
   - timing (within a phase): the excess's mean spectrum, gated to the new timing's span;
   - murmur added: the model's murmur (the what-if's decoded "with" minus "without"
     magnitudes from `pipe.edit`), at the level the simulator's murmur of that grade
     would have on this recording's S1/S2 (`place_findings`); the simulator's texture
     itself where the model adds none.
   In the heart sounds' band (25-150 Hz as the listener's filter hears it) murmur' stays
   MIN_SOUND_DB under S1/S2 (`under_heart_sounds`): a louder low-pitched murmur fills the dip
   before S2 and hides it (a grade VI one moved the heart sounds found by up to 104 ms and
   halved the measured rate), which is another finding than a grade.
3. The edited STFT is inverted with the upload's phase, so outside the edited frames the
   waveform is the upload's to float rounding.

Measured on the shipped checkpoints (reports/default section 6, hldm.eval.edit_report: 12 held-out
CirCor murmurs, 4 per pitch, grade I-III as recorded, 8 s, levels read on the annotated segmentation):
grade edits to every other grade follow the asked grade with Spearman 1.00 at every pitch (I->VI 4.0 /
20.5 / 25.9 dB low / medium / high: the low-pitched ceiling above); removal lands 1.7 / 1.0 / 1.6 dB
over the murmur-free phase; S1/S2 onsets move 1.6 ms (grade), 6.2 ms (removal), the heart rate at
most 0.13 bpm; the spectrum outside the edit stays within 0.03-0.41 dB of the upload's (two recordings
of one patient differ by 3.0 dB). Tried and dropped:
the listener's envelope segmentation (above); the features' 64 ms STFT (removal 4-14 dB over the
floor on short systoles); the ceiling 3 or 0 dB under S1/S2 (low I->VI 6.2 / 8.0 dB, but heart-rate
changes of 1.8 bpm); a removal reaching 20-30 ms outward (beyond the local mean's reach: the gain is
undefined there and S1/S2 were boosted 16-31 dB).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np
import torch
from scipy.ndimage import uniform_filter

from hldm.audio.features import (HOP, N_FFT, TARGET_RMS, features_to_magnitude, istft, n_frames, normalize_loudness,
                                 stft, to_features)
from hldm.clinical.validation import _MURMUR_FIELDS, SHAPES_BY_TIMING, validate_dict
from hldm.clinical.vocabulary import SAMPLE_RATE, Findings, max_grade, timing_phase
from hldm.data.simulator import PITCH_BAND_HZ
from hldm.eval import listener as L
from hldm.pipeline import MURMUR_SPAN, Interval

DB_PER_GRADE = 6.0  # Levine grades are ~6 dB apart relative to S1/S2 (as hldm.data.augment places them)
# The edit's own STFT: a 32 ms window, so a child's 100 ms systole is edited through; the features' 64 ms
# window smeared the unedited S1/S2 frames' murmur into it (removal stopped 4-14 dB over the floor)
EDIT_FFT = 128
EDIT_HOP = 16
RAMP_S = 0.012  # raised-cosine edge of the edited frames: no click where the edit starts and ends
SMOOTH = (3, 9)  # (bins, frames) of the local mean power (94 Hz x 36 ms): one cell's Rayleigh spread averaged out
# A removal reaches this far into the heart sounds beside the phase (the segmenter's boundaries are within
# 12 ms of CirCor's annotated ones for 3 in 4, and a murmur left at an edge reads as not removed); no
# farther than the local mean reaches from inside the phase (3 frames of 4 ms), else the gain is undefined there
OUTWARD_S = (SMOOTH[1] // 2 - 1) * EDIT_HOP / SAMPLE_RATE
BAND_TAPER = 0.5  # octaves over which an edit's pitch band fades out
# In the heart sounds' own band a murmur stays MIN_SOUND_DB under S1/S2, the contrast `segment` asks of an
# upload: a louder one fills the dip before S2 and masks it, another finding ("S2 inaudible") than a grade
HEADROOM_DB = 3.0  # a recorded murmur already that loud may still grow this much (a higher grade stays louder)
KNEE = 4  # hardness of the limit: murmur / (1 + (murmur / cap)^KNEE)^(1/KNEE), strictly increasing
_WHOLE = {"systolic": "holosystolic", "diastolic": "holodiastolic", "continuous": "continuous"}
# S1 onset to S2 onset (Weissler's QS2 less the ~0.05 s before S1) runs ~0.19 s at 200 bpm to ~0.45 s
# at 40 bpm; outside this the segmenter took something else for S2 (a loud low-pitched murmur's onset)
SYSTOLE_RANGE_S = (0.15, 0.55)
MIN_CYCLES = 2  # complete S1-systole-S2-diastole cycles needed to tell the phases apart
MIN_SOUND_DB = 6.0  # S1/S2 must stand this far above the between-sound level (25-150 Hz)
MIN_MURMUR_DB = 1.0  # the murmur's phase must be this much louder in its band than the murmur-free one
MIN_SURE = 0.6  # mean posterior of the decoded states: below it the segmenter is guessing
EDIT_KINDS = ("grade", "remove", "add", "timing")
EDIT_LABELS = {"grade": "grade up/down", "remove": "murmur removed", "add": "murmur added",
               "timing": "timing changed"}
ADDED_MURMUR = {"timing": "holosystolic", "shape": "plateau", "grade": 3, "pitch": "medium",
                "quality": "blowing"}  # what "murmur added" adds unless told otherwise
ADD_STRENGTH = 0.9  # the latent edit that gives an added murmur its texture
MODEL_MURMUR_MIN = 0.1  # the model's excess in the pitch band below this share of the target: no murmur


class SegmentationError(ValueError):
    """The upload cannot be segmented into heart cycles; the message says why, for the user."""


@dataclass(frozen=True)
class Segmentation:
    """An upload's heart cycles: rows (K, 3) of (start_s, end_s, state) as CirCor's .tsv (1 S1, 2 systole,
    3 S2, 4 diastole), from `listener.phases`; heart_rate in bpm; seconds: the clip's length."""

    rows: np.ndarray
    heart_rate: float
    seconds: float

    def cycles(self) -> int:
        """Complete cycles: systole rows followed, somewhere later, by a diastole row."""
        return int(min((self.rows[:, 2] == L.SYSTOLE).sum(), (self.rows[:, 2] == L.DIASTOLE).sum()))

    def spans(self, timing: str) -> list[tuple[float, float]]:
        """(start_s, end_s) of a murmur of `timing` in every cycle: MURMUR_SPAN's share of its phase;
        a continuous murmur fills systole and diastole (S2 itself is left alone)."""
        phase = timing_phase(timing)
        states = L.PHASE_STATES[phase]
        lo, hi = (0.0, 1.0) if phase == "continuous" else MURMUR_SPAN[timing]
        return [(a + lo * (b - a), a + hi * (b - a)) for a, b, s in self.rows if int(s) in states]

    def intervals(self, timing: str | None = None) -> list[Interval]:
        """S1/S2 (and, with a murmur `timing`, murmur) intervals as the app draws them."""
        names = {L.S1: "S1", L.S2: "S2"}
        out: list[Interval] = [(float(a), float(b), names[int(s)]) for a, b, s in self.rows if int(s) in names]
        if timing:
            out += [(float(a), float(b), "murmur") for a, b in self.spans(timing)]
        return sorted(out)

    def frame_weights(self, timing: str, frames: int, hop: int = HOP, outward: bool = False) -> np.ndarray:
        """(frames,) float in [0, 1] for STFT frames `hop` samples apart: 1 inside the spans of `timing`,
        rising and falling over RAMP_S at their ends: inside them (the frames next to a span still hold
        S1 or S2), or with `outward` just outside them (the whole span edited, the heart sounds' edges
        a little)."""
        t = np.arange(frames) * hop / SAMPLE_RATE
        w = np.zeros(frames)
        for a, b in self.spans(timing):
            inside = np.minimum(t - a, b - t)  # s into the span (< 0 outside)
            if outward:
                edge = np.clip(inside / OUTWARD_S + 1.0, 0.0, 1.0)
            else:
                edge = np.clip(inside / min(RAMP_S, (b - a) / 3), 0.0, 1.0)
            w = np.maximum(w, 0.5 - 0.5 * np.cos(np.pi * edge))
        return w

    def inner_frames(self, states, frames: int, part: tuple[float, float] = L.INNER, hop: int = HOP) -> np.ndarray:
        """(frames,) bool for STFT frames `hop` samples apart: the inner parts (listener.INNER, or `part`)
        of the rows of `states`."""
        keep = L._mask(self.rows, frames * hop, states, part)
        return keep[::hop][:frames]


@lru_cache(maxsize=1)
def default_segmenter():
    from hldm.train.segmenter import DEFAULT_DIR, load_segmenter

    return load_segmenter(DEFAULT_DIR)


def segment(audio: np.ndarray, segmenter=None, min_contrast_db: float = MIN_SOUND_DB) -> Segmentation:
    """S1/systole/S2/diastole of a recording (N,) at 4 kHz, or SegmentationError saying why not.
    segmenter: a hldm.models.segmenter.PCGSegmenter (default: the shipped checkpoints/segmenter);
    min_contrast_db: how far S1/S2 must stand above the between-sound level (25-150 Hz)."""
    x = np.asarray(audio, dtype=np.float64)
    seconds = len(x) / SAMPLE_RATE
    if x.ndim != 1 or not np.isfinite(x).all():
        raise SegmentationError("the recording is not a finite mono waveform")
    if seconds < 2 * L.MIN_SECONDS:
        raise SegmentationError(f"{seconds:.1f} s is too short to find two heart cycles")
    rate = L.heart_rate(x)
    if not np.isfinite(rate):
        raise SegmentationError("no heart beat found: the 25-150 Hz envelope does not repeat "
                                "(silence, speech or noise only?)")
    model = default_segmenter() if segmenter is None else segmenter
    rows, sure = model.decode(to_features(normalize_loudness(x.astype(np.float32))))
    seg = Segmentation(rows, float(rate), seconds)
    if seg.cycles() < MIN_CYCLES:
        raise SegmentationError(f"only {seg.cycles()} complete heart cycle(s) found; at least {MIN_CYCLES} are "
                                "needed to tell systole from diastole")
    if sure < MIN_SURE:
        raise SegmentationError(f"the segmenter is unsure where S1 and S2 are (mean confidence {sure:.0%}, at least "
                                f"{MIN_SURE:.0%} needed): too noisy or irregular to edit")
    s1 = rows[rows[:, 2] == L.S1, 0]
    s2 = rows[rows[:, 2] == L.S2, 0]
    after = [s2[s2 > t][0] - t for t in s1 if (s2 > t).any()]
    lo, hi = SYSTOLE_RANGE_S
    if not after or not lo <= float(np.median(after)) <= hi:
        found = f"{1000 * float(np.median(after)):.0f} ms" if after else "no S2 after S1"
        raise SegmentationError(f"S1 to S2 found at {found}, outside the {1000 * lo:.0f}-{1000 * hi:.0f} ms a "
                                "heart allows: something else was taken for a heart sound (a loud murmur, noise)")
    env = L.heart_sound_envelope(x)  # (N // HOP,) frames of the STFT's rate
    frames = len(env)
    sounds = env[seg.inner_frames((L.S1, L.S2), frames)]
    between = env[seg.inner_frames((L.SYSTOLE, L.DIASTOLE), frames)]
    contrast = 20 * np.log10((np.median(sounds) + 1e-9) / (np.median(between) + 1e-9))
    if contrast < min_contrast_db:
        raise SegmentationError(f"too noisy: the heart sounds stand only {contrast:.1f} dB above the rest "
                                f"(at least {min_contrast_db:g} dB is needed to place S1 and S2)")
    return seg


# ----------------------------------------------------------------------------- the edit


@dataclass
class RecordingEdit:
    """An edited recording and what it was edited from.

    original / edited: (N,) float32 at sr, the upload's own scale; weights (T,): how much each
    STFT frame was edited (0: the upload's); level_db: the murmur band re S1/S2 (listener) in
    the after-findings' phase, before and after, on the upload's segmentation; source: where
    the murmur's texture came from ("recording", "model" or "simulator"); model_edit: the
    latent what-if that gave an added murmur (None otherwise).
    """

    original: np.ndarray
    edited: np.ndarray
    sr: int
    kind: str
    before: Findings
    after: Findings
    segmentation: Segmentation
    weights: np.ndarray
    level_db: tuple[float, float]
    source: str
    model_edit: object | None = field(default=None, repr=False)

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(129, T) features of both clips on ONE loudness scale (the upload's), so their difference
        is the edit, not a re-normalisation."""
        k = TARGET_RMS / max(float(np.sqrt(np.mean(np.square(self.original, dtype=np.float64)))), 1e-8)
        return to_features(self.original * k).numpy(), to_features(self.edited * k).numpy()

    def intervals(self) -> tuple[list[Interval], list[Interval]]:
        timing = (lambda f: f.timing if f.murmur == "present" else None)
        return self.segmentation.intervals(timing(self.before)), self.segmentation.intervals(timing(self.after))

    def to_json(self) -> dict:
        """What the edit did, as the API returns it."""
        return {"kind": self.kind, "before": self.before.to_dict(), "after": self.after.to_dict(),
                "level_db": [round(v, 2) for v in self.level_db], "source": self.source,
                "heart_rate": round(self.segmentation.heart_rate, 1), "cycles": self.segmentation.cycles(),
                "edited_share": round(float(np.mean(self.weights > 0)), 3),
                "intervals": {side: [[round(a, 3), round(b, 3), name] for a, b, name in ivs]
                              for side, ivs in zip(("before", "after"), self.intervals())}}


def edit_kind_change(before: Findings, kind: str, grade: int | None = None, timing: str | None = None) -> dict:
    """The findings change an edit kind makes to a recording described by `before`; ValueError says
    why an edit does not apply (a grade edit on a recording without a murmur, a timing change
    across phases, ...)."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit: unknown kind {kind!r}; allowed: {', '.join(EDIT_KINDS)}")
    has = before.murmur == "present"
    if kind in ("grade", "remove", "timing") and not has:
        raise ValueError(f"'{EDIT_LABELS[kind]}' needs a recording with a murmur; the findings say "
                         f"murmur {before.murmur}: describe its murmur above, or use 'murmur added'")
    if kind == "add" and has:
        raise ValueError("the findings already describe a murmur; use a grade or timing edit")
    if kind == "grade":
        if grade is None or int(grade) == before.grade:
            raise ValueError(f"pick a grade other than the recorded {before.grade}")
        return {"grade": int(grade)}
    if kind == "remove":  # the "cured" patient: no murmur, so no condition that implies one
        return {"murmur": "absent", "condition": None, "radiation": "none", **dict.fromkeys(_MURMUR_FIELDS)}
    if kind == "timing":
        if timing is None or timing == before.timing:
            raise ValueError(f"pick a timing other than the recorded {before.timing}")
        if timing_phase(timing) != timing_phase(before.timing):
            raise ValueError(f"a {timing_phase(before.timing)} murmur cannot become {timing}: a murmur in "
                             "the other phase is another lesion, not the same one re-timed")
        shape = before.shape if before.shape in SHAPES_BY_TIMING[timing] else SHAPES_BY_TIMING[timing][0]
        return {"timing": timing, "shape": shape, "grade": min(before.grade, max_grade(timing))}
    added = {**ADDED_MURMUR, "murmur": "present", "condition": None}
    if timing is not None:
        added.update(timing=timing, shape=SHAPES_BY_TIMING[timing][0])
    if grade is not None:
        added["grade"] = int(grade)
    added["grade"] = min(added["grade"], max_grade(added["timing"]))
    return added


def _local(power: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """(F, T) power -> its local mean over SMOOTH cells; within (T,) bool: only those frames count (a
    murmur phase's edge must not average in the S1 or S2 next to it)."""
    if within is None:
        return uniform_filter(power, size=SMOOTH, mode="nearest")
    m = np.broadcast_to(within.astype(np.float64), power.shape)
    total = np.maximum(uniform_filter(power * m, size=SMOOTH, mode="nearest"), 0.0)  # rounding: >= 0
    return total / np.maximum(uniform_filter(m, size=SMOOTH, mode="nearest"), 1e-9)


def _floor(power: np.ndarray, seg: Segmentation, phase: str) -> np.ndarray:
    """(F, 1) the recording without a murmur: mean local power over the inner frames of the phase(s)
    the murmur is not in (the mean: the level the listener reads there; for a continuous murmur,
    both phases' quietest fifth)."""
    frames = power.shape[1]
    quiet = {"systolic": (L.DIASTOLE,), "diastolic": (L.SYSTOLE,), "continuous": (L.SYSTOLE, L.DIASTOLE)}[phase]
    local = _local(power, seg.inner_frames(quiet, frames, (0.0, 1.0), EDIT_HOP))
    keep = seg.inner_frames(quiet, frames, hop=EDIT_HOP)
    if phase == "continuous":
        return np.percentile(local[:, keep], 20, axis=1, keepdims=True)
    return local[:, keep].mean(axis=1, keepdims=True)


def murmur_excess(power: np.ndarray, seg: Segmentation, phase: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A recording's STFT power (F, T') split in a murmur phase: the local power over the phase's frames
    (F, T'; never 0, it divides), the murmur-free floor (F, 1; `_floor`) and the excess over it (F, T'),
    the murmur."""
    local = _local(power, seg.inner_frames(L.PHASE_STATES[phase], power.shape[1], (0.0, 1.0), EDIT_HOP)) + 1e-20
    floor = _floor(power, seg, phase)
    return local, floor, np.maximum(local - floor, 0.0)


def band_weights(pitch: str, bins: int) -> np.ndarray:
    """(bins,) 1 within the pitch band (simulator PITCH_BAND_HZ), tapering to 0 over BAND_TAPER octaves
    either side (a re-graded murmur must not lift the 25-150 Hz envelope S1/S2 are found by)."""
    freqs = np.maximum(np.arange(bins) * SAMPLE_RATE / (2 * (bins - 1)), 1.0)
    lo, hi = PITCH_BAND_HZ[pitch or "medium"]
    octaves = np.maximum(np.log2(lo / freqs), np.log2(freqs / hi)).clip(0.0, None) / BAND_TAPER
    return np.where(octaves < 1, 0.5 + 0.5 * np.cos(np.pi * np.minimum(octaves, 1.0)), 0.0)


def _band_rows(pitch: str, bins: int) -> np.ndarray:
    freqs = np.arange(bins) * SAMPLE_RATE / (2 * (bins - 1))
    lo, hi = PITCH_BAND_HZ[pitch]
    return (freqs >= lo) & (freqs <= hi)


def under_heart_sounds(power: np.ndarray, seg: Segmentation, own: np.ndarray | float = 0.0,
                       margin_db: float = MIN_SOUND_DB) -> Callable[[np.ndarray], np.ndarray]:
    """The limit on a murmur's power (F, T') in a recording of STFT power `power` (F, T'): as the
    listener's heart-sound band filter hears it (listener.band_power_response: 1 in 25-150 Hz,
    falling off outside), each bin stays `margin_db` under the softer of S1 and S2 in that bin (their
    mean power over their inner frames), or at most HEADROOM_DB over `own` (the recording's murmur,
    (F, T')) where that is louder already; a soft knee keeps a higher grade louder. Far outside the
    band nothing changes: S1/S2 are heard as low thuds, and a high-pitched murmur louder than them at
    400 Hz leaves them audible. Built once, applied to as many murmurs as asked (`_scale_to`); `cells`
    (an index into (F, T')) limits a murmur given for those cells only."""
    frames, bins = power.shape[1], power.shape[0]
    sounds = np.minimum(*(power[:, seg.inner_frames((s,), frames, hop=EDIT_HOP)].mean(axis=1, keepdims=True)
                          for s in (L.S1, L.S2)))  # (F, 1)
    heard = L.band_power_response(np.arange(bins) * SAMPLE_RATE / (2 * (bins - 1)))[:, None]  # (F, 1)
    cap = np.maximum(sounds * 10 ** (-margin_db / 10), own * heard * 10 ** (HEADROOM_DB / 10))
    reach = np.broadcast_to(heard / np.maximum(cap, 1e-30), power.shape)
    return lambda murmur, cells=Ellipsis: murmur / (1.0 + (murmur * reach[cells]) ** KNEE) ** (1.0 / KNEE)


def reshape_murmur(spec: np.ndarray, seg: Segmentation, before: Findings, after: Findings,
                   added: np.ndarray | None = None, gain: float | None = None,
                   margin_db: float = MIN_SOUND_DB) -> tuple[np.ndarray, np.ndarray]:
    """The STFT (F, T') of a recording with its murmur changed from `before` to `after` (module
    docstring, step 2), and the frame weights (T',) of the edit. added: (F, T') power of a murmur
    to add (murmur added), already at its level; gain: the factor on the murmur's power instead of
    the grade step (hldm.conformance sets a level, not a step); margin_db: `under_heart_sounds`'."""
    frames = spec.shape[1]
    power = np.abs(spec) ** 2
    phase = timing_phase((after if after.murmur == "present" else before).timing)
    local, floor, excess = murmur_excess(power, seg, phase)
    old = seg.frame_weights(before.timing, frames, EDIT_HOP) if before.murmur == "present" else np.zeros(frames)
    new = seg.frame_weights(after.timing, frames, EDIT_HOP) if after.murmur == "present" else np.zeros(frames)
    if after.murmur != "present":
        murmur = np.zeros_like(local)
    elif before.murmur != "present":
        murmur = np.zeros_like(local) if added is None else _local(added)
    elif after.timing != before.timing:
        mean = (excess * old).sum(1, keepdims=True) / max(float(old.sum()), 1e-9)  # (F, 1)
        murmur = mean * new * 10 ** (DB_PER_GRADE * (after.grade - before.grade) / 10)
    else:
        murmur = excess * (10 ** (DB_PER_GRADE * (after.grade - before.grade) / 10) if gain is None else gain)
    murmur = under_heart_sounds(power, seg, excess if before.murmur == "present" else 0.0, margin_db)(murmur)
    if after.murmur != "present":  # removal: the whole phase, whatever part of it the murmur was said to fill
        old = seg.frame_weights(_WHOLE[phase], frames, EDIT_HOP, outward=True)
    w = np.maximum(old, new)  # (T',)
    if after.murmur != "present":
        base = np.broadcast_to(floor, local.shape)  # the murmur-free phase's mean level, as the listener reads it
    elif before.murmur == "present":
        base = np.minimum(local, floor)
    else:
        base = local
    gain = np.sqrt(np.maximum(base + murmur, 0.0) / local)
    if after.murmur == "present":  # a louder or softer murmur: its pitch band, not the heart sounds' band below
        w = w[None, :] * band_weights((after if before.murmur != "present" else before).pitch, spec.shape[0])[:, None]
    else:
        w = np.broadcast_to(w, spec.shape)
    gain = np.where(w > 0, 1.0 + w * (gain - 1.0), 1.0)  # outside the phase `local` means nothing
    return spec * gain, w.max(axis=0)


def _power(x: np.ndarray) -> np.ndarray:
    """(F, T') power of x on the edit's STFT grid."""
    return np.abs(stft(x, EDIT_FFT, EDIT_HOP).numpy()) ** 2


def _added_murmur(pipe, audio: np.ndarray, power: np.ndarray, seg: Segmentation, before: Findings, change: dict,
                  after: Findings, seed: int, sampling: dict) -> tuple[np.ndarray, str, object]:
    """(F, T') power of the murmur to add to `audio` (its STFT power `power` (F, T')) at the level of the
    simulator's murmur of that grade on this recording's S1/S2, its texture's source, and the latent
    what-if (None for the simulator's)."""
    from hldm.data.augment import place_findings

    sim = place_findings(audio, _anchors(seg), after, seed=seed) - audio  # (N,) the simulator's murmur alone
    sim_power = _power(sim)
    band = _band_rows(after.pitch, sim_power.shape[0])
    inner = seg.inner_frames(L.PHASE_STATES[timing_phase(after.timing)], sim_power.shape[1], hop=EDIT_HOP)
    target = float(sim_power[band][:, inner].mean())
    wi = pipe.edit(audio, before, change, strength=ADD_STRENGTH, seed=seed, **sampling)
    gain = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) / TARGET_RMS  # model's scale -> upload's
    a, b = (features_to_magnitude(g.features) * gain for g in (wi.a, wi.b))  # (F, T) each
    # (129, T) at hop 32 -> the edit's grid (F, T'): every other bin, each frame twice
    excess = np.repeat(np.maximum(b ** 2 - a ** 2, 0.0)[::N_FFT // EDIT_FFT], HOP // EDIT_HOP, axis=1)
    excess = np.pad(excess, ((0, 0), (0, max(0, sim_power.shape[1] - excess.shape[1]))), mode="edge")
    excess = excess[:, :sim_power.shape[1]] * seg.frame_weights(after.timing, sim_power.shape[1], EDIT_HOP)
    model = float(excess[band][:, inner].mean())
    texture, source = (sim_power, "simulator") if model < MODEL_MURMUR_MIN * target else (excess, "model")
    return texture * _scale_to(texture, target, band, inner, under_heart_sounds(power, seg)), source, wi


def _scale_to(texture: np.ndarray, target: float, band: np.ndarray, inner: np.ndarray,
              limit: Callable[[np.ndarray], np.ndarray]) -> float:
    """The gain on a murmur's power `texture` (F, T') that brings its local power, once limited as
    `reshape_murmur` will (`limit`, from `under_heart_sounds`), to `target` on average over band x inner,
    so a higher grade lands higher whatever the texture's spectrum; at most 30 dB over the plain match
    (the limit may make the target unreachable)."""
    cells = np.ix_(np.flatnonzero(band), np.flatnonzero(inner))  # only these are heard; the limit acts cell by cell
    local = _local(texture)[cells]
    heard = (lambda g: float(limit(g * local, cells).mean()))
    lo = np.log(target / max(float(local.mean()), 1e-30))  # the plain match: the least it takes
    hi = lo + np.log(1e3)
    if heard(np.exp(hi)) < target:
        return float(np.exp(hi))
    for _ in range(30):  # bisection on the log gain: heard() increases with the gain
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if heard(np.exp(mid)) < target else (lo, mid)
    return float(np.exp(hi))


def _anchors(seg: Segmentation) -> np.ndarray:
    """Cycles (K, 5) of `seg` (S1 on, S1 off, S2 on, S2 off, next S1 on) as hldm.data.augment takes them."""
    rows = seg.rows
    out = []
    for k in range(len(rows) - 4):
        r = rows[k:k + 5]
        if tuple(r[:, 2].astype(int)) == (L.S1, L.SYSTOLE, L.S2, L.DIASTOLE, L.S1):
            out.append((r[0, 0], r[0, 1], r[2, 0], r[2, 1], r[4, 0]))
    return np.asarray(out, dtype=np.float64).reshape(-1, 5)


def murmur_found(audio: np.ndarray, seg: Segmentation, f: Findings) -> float:
    """dB by which the murmur's phase is louder in its pitch band than the murmur-free phase (a continuous
    murmur has none: nan, not checked); ValueError under MIN_MURMUR_DB: an edit would change nothing."""
    phase = timing_phase(f.timing)
    if phase == "continuous":
        return float("nan")
    other = "diastolic" if phase == "systolic" else "systolic"
    gap = (L.murmur_level_db(audio, f.pitch, seg.rows, phase=phase)
           - L.murmur_level_db(audio, f.pitch, seg.rows, phase=other))
    if not gap >= MIN_MURMUR_DB:
        lo, hi = PITCH_BAND_HZ[f.pitch]
        raise ValueError(f"no {f.pitch}-pitched murmur found: in {lo:g}-{hi:g} Hz, {phase.replace('ic', 'e')} is "
                         f"{gap:+.1f} dB against {other.replace('ic', 'e')} (at least +{MIN_MURMUR_DB:g} dB needed); "
                         "check the murmur's pitch and timing above, or describe the recording as murmur-free and "
                         "use 'murmur added'")
    return float(gap)


def edit_recording(pipe, audio: np.ndarray, findings: Findings | dict, kind: str, grade: int | None = None,
                   timing: str | None = None, seed: int = 0, segmentation: Segmentation | None = None,
                   **sampling) -> RecordingEdit:
    """Edit a recording (N,) at 4 kHz described by `findings` (module docstring). kind: one of
    EDIT_KINDS; grade / timing: the new value (grade, timing) or the added murmur's. Raises
    SegmentationError when the upload cannot be segmented, ValueError / FindingsError when the
    edit does not apply; nothing is computed then. sampling: steps / guidance / sampler of the
    latent edit an added murmur comes from."""
    x = np.asarray(audio, dtype=np.float32)
    before = validate_dict(findings.to_dict() if isinstance(findings, Findings) else dict(findings))
    change = edit_kind_change(before, kind, grade, timing)
    after = validate_dict({**before.to_dict(), **change})
    seg = segment(x) if segmentation is None else segmentation
    if kind != "add":
        murmur_found(x, seg, before)
    spec = stft(x, EDIT_FFT, EDIT_HOP).numpy()  # (F, T')
    added, source, wi = None, "recording", None
    if kind == "add":
        added, source, wi = _added_murmur(pipe, x, np.abs(spec) ** 2, seg, before, change, after, seed, sampling)
    edited_spec, w = reshape_murmur(spec, seg, before, after, added)
    edited = istft(torch.from_numpy(edited_spec), len(x), EDIT_FFT, EDIT_HOP).numpy().astype(np.float32)
    f = after if after.murmur == "present" else before
    level = partial(L.murmur_level_db, pitch=f.pitch or "medium", seg=seg.rows, phase=timing_phase(f.timing))
    return RecordingEdit(x, edited, SAMPLE_RATE, kind, before, after, seg, w[::HOP // EDIT_HOP][:n_frames(len(x))],
                         (level(x), level(edited)), source, wi)
