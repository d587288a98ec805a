"""A generated clip made to carry the findings it was asked for: heart rate, murmur phase and level (issue 15).

The model honours what CirCor shows it (children at 70-140 bpm, systolic murmurs of grades
I-III) and falls back to that pattern for the rest: a slow adult heart comes out near
100 bpm, an aortic regurgitation murmur in systole, a grade V murmur barely louder than a
grade I (reports/default section 5). The recording editor (hldm.editing) already changes
exactly these things on a real recording while keeping everything else of it, so the
sampler's clip is treated as a recording and edited to its findings:

1. `editing.segment` finds its S1, systole, S2 and diastole with the shipped segmenter; a
   clip it refuses (too noisy, no beat) is left as the model made it, and the record says why.
   Where a continuous murmur is asked, S1/S2 need stand only CONTINUOUS_CONTRAST_DB over the rest:
   such a murmur is what fills it (the model's clips of one were refused 5 times in 6).
2. `plan_retiming` / `retime`: where its rate is more than RATE_TOLERANCE off the asked one,
   its cycles are re-timed as hldm.data.augment re-times the training canvases (systole
   follows Weissler's QS2, diastole takes the rest, each beat keeps its ratio to the mean,
   S1 and S2 are copied by the phase vocoder, not stretched); a clip too short for a faster
   rate reuses its cycles from the start.
3. `even_beats`: the sampler sometimes alternates strong and weak beats, which a listener hears
   as half the rate (an asked 80 bpm read as 40, its systole taken for diastole). Where the
   listener does not hear the asked rate after step 2, each S1 (and S2) more than
   BEAT_TOLERANCE_DB off its kind's median level is brought toward it (BEAT_MAX_DB at most),
   and the result is kept if the listener then hears the asked rate. Only then: levelling
   every clip's beats also lifted noise the segmenter took for a heart sound into false beats.
4. `set_murmur`: the murmur is set in the asked phase at the level re S1/S2 the simulator's own
   clip has at that grade (6 dB a Levine grade; `simulator_level_db`, read by the listener on
   this clip's S1/S2), or AUDIBLE_DB over the phase's noise floor at grade I (AUDIBLE_STEP_DB
   more a grade) where the clip is noisier than that, through the editor's heart-sound limit:
   in the heart sounds' band the murmur stays MIN_SOUND_DB under the softer of S1 and S2 up to
   grade III, LOUD_MARGIN_STEP_DB less a grade above (`loud_margin`: grade VI may be as loud as
   they are), backed off again while a listener would then miscount the beat or hear S1/S2
   start more than ONSET_TOLERANCE_MS away from where a grade I murmur leaves them; a murmur lifted
   over a noisy floor that makes a listener count another rate keeps its grade's level instead. Its
   texture is the model's own murmur where the model put one in that phase (louder there than
   in the other phase by MIN_MURMUR_DB, or running through S2 for a continuous one); else a
   murmur the model put in the wrong phase is removed and the simulator's murmur of the asked
   timing, shape and pitch is placed (the editor's "murmur added"), as the training data places
   murmurs CirCor lacks.

Everything else (background, stethoscope texture, heart sounds) stays the model's. The
what-if pair (`conform_pair`) shares side a's segmentation and time map and one murmur texture,
so a grade change moves only the murmur's level. Deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from hldm.clinical.vocabulary import SAMPLE_RATE, Findings, timing_phase
from hldm.data.simulator import PITCH_BAND_HZ, simulate
from hldm.audio.features import istft, stft
from hldm.editing import (EDIT_FFT, EDIT_HOP, MIN_MURMUR_DB, MIN_SOUND_DB, Segmentation, SegmentationError, _anchors, _band_rows,
                          _floor, _power, _scale_to, murmur_excess, reshape_murmur, segment, under_heart_sounds)
from hldm.eval import listener as L

RATE_TOLERANCE = 0.05  # a clip within 5 % of the asked rate (as the listener reads its beat) keeps its own timing
BEAT_VARIATION = 0.05  # each re-timed beat stays within 5 % of the asked period (sinus rhythm at rest)
MAX_REUSE = 8  # a clip's cycles are reused at most this many times to fill a faster rate
AUDIBLE_DB = 3.0  # a grade I murmur's power at least this far over its phase's floor in its band ...
AUDIBLE_STEP_DB = 3.0  # ... and this much more a grade: half a grade step, so the level re S1/S2 rules the loud grades
SPANS_S2_FOUND = 0.3  # log10: a continuous murmur the model made runs through S2 at twice the floor
LOUD_MARGIN_STEP_DB = 3.0  # a grade over III may come this much closer to S1/S2 in their band ...
ONSET_TOLERANCE_MS = 20.0  # ... unless that moves where they are heard to start this much (a split under ~20 ms sounds single)
REFERENCE_S = 8.0  # the simulator clip a grade's level is read from
WRAP_S = 1e-4  # where reused cycles start again: the time map jumps back within this
BEAT_TOLERANCE_DB = 1.0  # a heart sound's 25-150 Hz level may differ this much from its kind's median (breathing)
BEAT_MAX_DB = 6.0  # ... moved at most this far: a sound far off its median is more likely a segmentation's slip
BEAT_RAMP_S = 0.02  # a heart sound's gain fades in and out over this much either side of it
# A continuous murmur fills the pauses `segment`'s contrast is read in: the model's clips of one stand
# 2-6 dB above them; the segmenter's confidence and S1-S2 interval still guard the segmentation
CONTINUOUS_CONTRAST_DB = 2.0


@dataclass(frozen=True)
class Retiming:
    """A clip's time map: output time dst (M,) s reads the model's clip at src (M,) s, piecewise
    linearly; rows (K, 3): the re-timed clip's segmentation; rate: bpm before and after."""

    src: np.ndarray
    dst: np.ndarray
    rows: np.ndarray
    rate: tuple[float, float]

    @property
    def identity(self) -> bool:
        return self.rate[0] == self.rate[1]


@dataclass
class Conformed:
    """A clip edited to its findings: audio (N,) float32, segmentation of that audio, and what was done."""

    audio: np.ndarray
    segmentation: Segmentation | None
    record: dict


def plan_retiming(seg: Segmentation, heart_rate: float) -> Retiming:
    """The time map that brings a clip segmented as `seg` to `heart_rate` (module docstring, step 2)."""
    from hldm.data.augment import retime_anchors, segmentation_of

    cycles = _anchors(seg)  # (K, 5)
    if not len(cycles):
        raise SegmentationError("no complete heart cycle to re-time")
    before = seg.heart_rate
    ends = np.array([0.0, seg.seconds])
    if abs(before / heart_rate - 1.0) <= RATE_TOLERANCE:
        return Retiming(ends, ends, seg.rows, (before, before))
    start = float(cycles[0, 0])
    uses = int(np.clip(np.ceil((seg.seconds - start) * heart_rate / 60.0 / len(cycles)), 1, MAX_REUSE))
    source = np.tile(cycles, (uses, 1))
    new = retime_anchors(source, heart_rate, BEAT_VARIATION) + start  # (K * uses, 5)
    src, dst = [0.0], [0.0]  # the clip's start up to its first S1 is copied as it is
    for k in range(len(source)):
        src += list(source[k, :4])
        dst += list(new[k, :4])
        if k + 1 == len(source) or source[k + 1, 0] != source[k, 4]:  # the last cycle, or cycles reused from here
            src.append(source[k, 4])
            dst.append(new[k, 4] - (WRAP_S if k + 1 < len(source) else 0.0))
    head = seg.rows[seg.rows[:, 0] < start]
    head = np.column_stack([head[:, 0], np.minimum(head[:, 1], start), head[:, 2]])
    rows = np.vstack([head, segmentation_of(new)])
    rows = rows[rows[:, 0] < seg.seconds]
    rows[:, 1] = np.minimum(rows[:, 1], seg.seconds)
    return Retiming(np.asarray(src), np.asarray(dst), rows, (before, float(heart_rate)))


def retime(audio: np.ndarray, plan: Retiming, seed: int) -> np.ndarray:
    """audio (N,) along the plan's time map, (N,) float32 (the phase vocoder of hldm.data.augment)."""
    from hldm.data.augment import vocode

    if plan.identity:
        return np.asarray(audio, dtype=np.float32)
    return vocode(audio, plan.src, plan.dst, len(audio), rng=np.random.default_rng([seed, 2]))


def even_beats(audio: np.ndarray, seg: Segmentation) -> tuple[np.ndarray, float]:
    """`audio` (N,) with each S1 and S2 of `seg` brought toward its kind's median level (module
    docstring, step 3), and the largest change in dB (0: nothing changed)."""
    x = np.asarray(audio, dtype=np.float32)
    power = L._band_power(x, L.HEART_SOUND_BAND_HZ)  # (N,)
    t = np.arange(len(x)) / SAMPLE_RATE
    gain_db = np.zeros(len(x))
    largest = 0.0
    for state in (L.S1, L.S2):
        rows = seg.rows[seg.rows[:, 2] == state]
        if len(rows) < 3:  # no median to speak of
            continue
        level = np.array([10 * np.log10(L._mean_power(power, L._mask(r[None], len(x), (state,), (0.0, 1.0))) + 1e-20)
                          for r in rows])  # (K,) dB
        off = level - np.median(level)
        change = -np.sign(off) * np.clip(np.abs(off) - BEAT_TOLERANCE_DB, 0.0, BEAT_MAX_DB)
        for (start, end, _), g in zip(rows, change):
            if g:
                edge = np.clip(np.minimum(t - start, end - t) / BEAT_RAMP_S + 1.0, 0.0, 1.0)
                gain_db += g * (0.5 - 0.5 * np.cos(np.pi * edge))
        largest = max(largest, float(np.abs(change).max()))
    if not largest:
        return x, 0.0
    return (x * 10 ** (gain_db / 20)).astype(np.float32), largest


def _continuous(f: Findings) -> bool:
    return f.murmur == "present" and timing_phase(f.timing) == "continuous"


def loud_margin(f: Findings) -> float:
    """How far under S1/S2 (dB, in their band) f's murmur must stay: MIN_SOUND_DB, less LOUD_MARGIN_STEP_DB a
    grade above III (a grade IV-VI murmur may be as loud as the heart sounds; module docstring, step 4)."""
    return MIN_SOUND_DB - LOUD_MARGIN_STEP_DB * max(f.grade - 3, 0) if f.murmur == "present" else MIN_SOUND_DB


def _heard_at(audio: np.ndarray, heart_rate: float) -> bool:
    """Whether the listener hears `audio` (N,) within RATE_TOLERANCE of `heart_rate` bpm."""
    return abs(L.heart_rate(audio) / heart_rate - 1.0) <= RATE_TOLERANCE


def _masks_beats(before: np.ndarray, after: np.ndarray, heart_rate: float) -> bool:
    """Whether a murmur put into `before` (N,), giving `after`, makes a listener who heard the rate right
    hear another, or moves the heart sounds' onsets by more than ONSET_TOLERANCE_MS on average."""
    from hldm.eval.counterfactual import onset_shift_ms

    if not _heard_at(before, heart_rate):
        return False
    return not _heard_at(after, heart_rate) or not onset_shift_ms(before, after) <= ONSET_TOLERANCE_MS


def murmur_in_phase(audio: np.ndarray, seg: Segmentation, f: Findings) -> float:
    """How clearly `audio` already holds f's murmur where f says: dB of its pitch band in the murmur's
    phase over the other phase (> 0: there; < 0: in the wrong phase), or for a continuous murmur
    10 x `listener.spans_s2` (how far over the late-diastolic floor it runs through S2)."""
    band, phase = PITCH_BAND_HZ[f.pitch], timing_phase(f.timing)
    if phase == "continuous":
        return 10.0 * L.spans_s2(audio, band, seg.rows)
    other = "diastolic" if phase == "systolic" else "systolic"
    return (L.murmur_level_db(audio, f.pitch, seg.rows, phase=phase)
            - L.murmur_level_db(audio, f.pitch, seg.rows, phase=other))


@lru_cache(maxsize=256)
def simulator_level_db(f: Findings) -> float:
    """The simulator's murmur for f in dB re its own S1/S2, as `listener.murmur_level_db` reads it (a clean
    REFERENCE_S clip, seed 0): the level a grade means (hldm.data.simulator's Levine steps)."""
    clip = simulate(f, seconds=REFERENCE_S, seed=0, noise_level=0.0)
    return L.murmur_level_db(clip.components["murmur"], f.pitch, clip.segmentation, phase=timing_phase(f.timing),
                             sounds=clip.components["s1s2"])


def _audible(floor: np.ndarray, band: np.ndarray, grade: int) -> float:
    """The least murmur power in `band` a grade may have over the phase's floor (F, 1): a clip noisier
    than the simulator's reference would otherwise hide a soft murmur the clinician asked for."""
    return float(floor[band].mean()) * 10 ** ((AUDIBLE_DB + AUDIBLE_STEP_DB * (grade - 1)) / 10)


def set_murmur(audio: np.ndarray, seg: Segmentation, f: Findings, seed: int,
               margin_db: float = MIN_SOUND_DB, texture: str | None = None,
               over_floor: bool = True) -> tuple[np.ndarray, dict]:
    """`audio` (N,) with f's murmur in its phase at its grade's level (module docstring, step 4), and
    what was done. texture: "simulator" places the simulator's murmur even where the model made one
    (removed first); None keeps the model's where found. over_floor: at least `_audible` over the
    phase's floor, where that is louder than the grade's level."""
    from hldm.data.augment import place_findings

    x = np.asarray(audio, dtype=np.float32)
    if f.murmur != "present":
        return x, {"murmur": "none asked"}
    phase = timing_phase(f.timing)
    found = murmur_in_phase(x, seg, f)
    spec = stft(x, EDIT_FFT, EDIT_HOP).numpy()  # (F, T')
    bins, frames = spec.shape
    placed = place_findings(x, _anchors(seg), f, seed=seed) - x  # the simulator's murmur alone
    # place_findings scales by the heart sounds' broadband peak, which a noisy clip inflates: brought to the
    # level re S1/S2 the simulator's own clip has, as the listener (and the what-if's reader) hears both
    placed_db = L.murmur_level_db(placed, f.pitch, seg.rows, phase=phase, sounds=x)
    sim_power = _power(placed) * 10 ** ((simulator_level_db(f) - placed_db) / 10)
    band = _band_rows(f.pitch, bins)
    inner = seg.inner_frames(L.PHASE_STATES[phase], frames, hop=EDIT_HOP)
    sim_target = float(sim_power[band][:, inner].mean())
    threshold = 10.0 * SPANS_S2_FOUND if phase == "continuous" else MIN_MURMUR_DB
    absent = replace(f, murmur="absent")  # reshape_murmur reads murmur, timing, grade and pitch only
    if found >= threshold and texture != "simulator":  # the model's murmur, brought to its grade's level
        power = np.abs(spec) ** 2
        _, floor, excess = murmur_excess(power, seg, phase)
        excess = excess * seg.frame_weights(f.timing, frames, EDIT_HOP)
        audible = _audible(floor, band, f.grade) if over_floor else 0.0
        target = max(sim_target, audible)
        gain = _scale_to(excess, target, band, inner, under_heart_sounds(power, seg, excess, margin_db))
        edited, _ = reshape_murmur(spec, seg, f, f, gain=gain, margin_db=margin_db)
        source = "model"
    else:
        if found >= threshold:  # the model's own, set aside for the simulator's texture
            spec, _ = reshape_murmur(spec, seg, f, absent)
        elif phase != "continuous" and found <= -MIN_MURMUR_DB:  # the model's murmur sits in the other phase
            wrong = replace(f, timing="holodiastolic" if phase == "systolic" else "holosystolic")
            spec, _ = reshape_murmur(spec, seg, wrong, absent)
        power = np.abs(spec) ** 2
        audible = _audible(_floor(power, seg, phase), band, f.grade) if over_floor else 0.0
        target = max(sim_target, audible)
        gain = _scale_to(sim_power, target, band, inner, under_heart_sounds(power, seg, margin_db=margin_db))
        edited, _ = reshape_murmur(spec, seg, absent, f, added=sim_power * gain, margin_db=margin_db)
        source = "simulator"
    out = istft(torch.from_numpy(edited), len(x), EDIT_FFT, EDIT_HOP).numpy().astype(np.float32)
    level = (lambda a: round(L.murmur_level_db(a, f.pitch, seg.rows, phase=phase), 2))
    return out, {"murmur": source, "found_db": round(float(found), 2), "level_db": [level(x), level(out)],
                 "margin_db": margin_db, "level_set_by": "floor" if audible > sim_target else "grade"}


def set_loud_murmur(audio: np.ndarray, seg: Segmentation, f: Findings, seed: int,
                    texture: str | None = None) -> tuple[np.ndarray, dict]:
    """`set_murmur` within `loud_margin(f)` of S1/S2, backed off a step at a time while the murmur would mask
    the beats a grade I murmur leaves a listener (module docstring, step 4)."""
    margin = loud_margin(f)
    out, murmur = set_murmur(audio, seg, f, seed, margin, texture)
    if margin < MIN_SOUND_DB:
        soft, _ = set_murmur(audio, seg, f.with_(grade=1), seed, texture=texture)
        while margin < MIN_SOUND_DB and _masks_beats(soft, out, seg.heart_rate):
            margin += LOUD_MARGIN_STEP_DB
            out, murmur = set_murmur(audio, seg, f, seed, margin, texture)
    if murmur.get("level_set_by") == "floor" and _heard_at(audio, seg.heart_rate) and not _heard_at(out, seg.heart_rate):
        out, murmur = set_murmur(audio, seg, f, seed, margin, texture, over_floor=False)
    return out, murmur


def conform(audio: np.ndarray, f: Findings, seed: int, plan: Retiming | None = None,
            texture: str | None = None) -> tuple[Conformed, Retiming | None]:
    """`audio` (N,) made to carry findings f (module docstring), and the time map used (None when the clip
    could not be segmented; pass it back as `plan` to give another clip the same timing). texture: as
    in `set_murmur`."""
    x = np.asarray(audio, dtype=np.float32)
    if plan is None:
        try:
            seg = segment(x, min_contrast_db=CONTINUOUS_CONTRAST_DB if _continuous(f) else MIN_SOUND_DB)
            plan = plan_retiming(seg, float(f.heart_rate))
        except SegmentationError as e:
            return Conformed(x, None, {"skipped": str(e)}), None
    seg = Segmentation(plan.rows, plan.rate[1], len(x) / SAMPLE_RATE)
    timed, evened = retime(x, plan, seed), 0.0
    if not _heard_at(timed, plan.rate[1]):
        levelled, change = even_beats(timed, seg)
        if _heard_at(levelled, plan.rate[1]):
            timed, evened = levelled, change
    out, murmur = set_loud_murmur(timed, seg, f, seed, texture)
    record = {"heart_rate": [round(plan.rate[0], 1), round(plan.rate[1], 1)], "beats_db": round(evened, 1), **murmur}
    return Conformed(out, seg, record), plan


def conform_pair(audio: tuple[np.ndarray, np.ndarray], findings: tuple[Findings, Findings],
                 seeds: tuple[int, int], shared_timing: bool = True) -> tuple[Conformed, Conformed]:
    """A what-if pair (clips (N,) a and b) made to differ only in what changed between their findings.
    shared_timing (the change is not the heart rate): b takes a's time map and segmentation, or is left
    as it is with a. A murmur of the same phase and pitch gets the same texture on both sides: the
    simulator's where either side would place it (a grade I murmur the model made too faint to find),
    else the model's."""
    a, plan = conform(audio[0], findings[0], seeds[0])
    if shared_timing and plan is None:
        return a, Conformed(np.asarray(audio[1], dtype=np.float32), None,
                            {"skipped": f"side a could not be edited ({a.record['skipped']})"})
    plan_b = plan if shared_timing else None
    b, plan_b = conform(audio[1], findings[1], seeds[1], plan_b)
    fa, fb = findings
    alike = (fa.murmur == fb.murmur == "present" and fa.pitch == fb.pitch
             and timing_phase(fa.timing) == timing_phase(fb.timing))
    sources = (a.record.get("murmur"), b.record.get("murmur"))
    if alike and sources == ("model", "simulator"):
        a, _ = conform(audio[0], fa, seeds[0], plan, texture="simulator")
    elif alike and sources == ("simulator", "model"):
        b, _ = conform(audio[1], fb, seeds[1], plan_b, texture="simulator")
    return a, b


def describe(record: dict) -> str:
    """One line for the user on what `conform` did to a clip (its `record`); "" when it was off."""
    if not record:
        return ""
    if "skipped" in record:
        return f"Left as the model made it: {record['skipped']}."
    before, after = record["heart_rate"]
    parts = [f"re-timed {before:.0f} -> {after:.0f} bpm" if before != after else f"its own rate ({after:.0f} bpm) kept"]
    if record.get("beats_db", 0.0) >= 1.0:
        parts.append(f"uneven heart sounds levelled (by up to {record['beats_db']:.0f} dB)")
    if record["murmur"] == "model":
        parts.append(f"the model's murmur set to its grade's level ({record['level_db'][1]:+.1f} dB re S1/S2)")
    elif record["murmur"] == "simulator":
        parts.append("the model's murmur was not in its phase, so the simulator's murmur was placed there "
                     f"({record['level_db'][1]:+.1f} dB re S1/S2)")
    return "Conformed to the findings: " + "; ".join(parts) + "."
