"""Counterfactual ("what-if") test: change one finding, measure what moved in the audio.

For many (base findings, seed) pairs, one finding changes at a time, from the same
initial noise: the grade over its whole Levine range (I..VI systolic, I..IV
diastolic), the timing (another timing of the same phase), the location (the
next auscultation site). On the audio we measure

- murmur-band energy: power in the murmur's pitch band (the simulator's
  PITCH_BAND_HZ) over power in 20-800 Hz, dB. It must rise with the grade:
  Spearman rho over each grade sweep (1 = strictly monotonic).
- S1/S2 onset shift (ms): heart-sound onsets found by the listener's envelope
  peak detector on the audio (not the model's own S1/S2 head, so the played clip
  is what is measured), each matched to the nearest onset of the other clip; a grade,
  timing or location edit should leave them where they were.
- heart-rate change (bpm): hldm.eval.listener.heart_rate; should be ~0.
- what the evaluator reads: the edited attribute must read as requested and the
  others as before (AD, hldm.eval.metrics.attribute_disentanglement).

A "renderer" turns findings into audio for one (base, seed): `pipe.generate` for
generated clips, `pipe.edit` (SDEdit from the encoded recording) for real ones,
or the simulator, whose grade edits are exactly monotonic (the tests' known answer).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import signal, stats

from hldm.clinical.validation import SHAPES_BY_TIMING
from hldm.clinical.vocabulary import (DIASTOLIC_TIMINGS, LOCATIONS, SAMPLE_RATE, SYSTOLIC_TIMINGS, Findings,
                                      max_grade, timing_phase)
from hldm.data.simulator import PITCH_BAND_HZ, simulate
from hldm.eval.listener import heart_rate, heart_sound_onsets

Renderer = Callable[[Findings], np.ndarray]  # findings -> audio (N,) for one fixed (base, seed)
EDITS = ("grade", "timing", "location")
AD_HEADS = ("murmur", "grade", "timing", "location")
MATCH_MS = 150.0  # an onset farther than this from any onset of the other clip counts as unmatched


# ----------------------------------------------------------------------------- audio measurements


def murmur_band_db(audio: np.ndarray, pitch: str | None) -> float:
    """Power in the murmur's pitch band over power in 20-800 Hz (the stethoscope band), dB."""
    lo, hi = PITCH_BAND_HZ[pitch or "medium"]
    freqs, psd = signal.welch(np.asarray(audio, np.float64), fs=SAMPLE_RATE, nperseg=256)
    band = psd[(freqs >= lo) & (freqs <= hi)].sum()
    total = psd[(freqs >= 20) & (freqs <= 800)].sum()
    return float(10 * np.log10((band + 1e-20) / (total + 1e-20)))


def onset_shift_ms(audio_a: np.ndarray, audio_b: np.ndarray) -> float:
    """Mean |shift| (ms) from each heart-sound onset of clip a to the nearest onset of clip b
    (only those within MATCH_MS, i.e. the same sound); NaN when none matches."""
    on_a, on_b = heart_sound_onsets(audio_a), heart_sound_onsets(audio_b)
    if not len(on_a) or not len(on_b):
        return float("nan")
    nearest = np.min(np.abs(on_a[:, None] - on_b[None, :]), axis=1) * 1000  # (K_a,) ms
    hits = nearest[nearest <= MATCH_MS]
    return float(hits.mean()) if len(hits) else float("nan")


# ----------------------------------------------------------------------------- edits


def grade_levels(f: Findings) -> list[int]:
    return list(range(1, max_grade(f.timing) + 1))


def timing_edit(f: Findings) -> Findings:
    """Another timing of the same phase (the next one in the vocabulary); the shape is kept when it
    fits the new timing, else the first shape that does (validation would refuse the pair)."""
    same = SYSTOLIC_TIMINGS if timing_phase(f.timing) == "systolic" else DIASTOLIC_TIMINGS
    if len(same) == 1:
        same = SYSTOLIC_TIMINGS
    new = same[(same.index(f.timing) + 1) % len(same)] if f.timing in same else same[0]
    shape = f.shape if f.shape in SHAPES_BY_TIMING[new] else SHAPES_BY_TIMING[new][0]
    return f.with_(timing=new, shape=shape, grade=min(f.grade, max_grade(new)))


def location_edit(f: Findings) -> Findings:
    return f.with_(location=LOCATIONS[(LOCATIONS.index(f.location) + 1) % len(LOCATIONS)])


def murmur_base(f: Findings) -> Findings:
    """A base for edits: the findings with a murmur (a holosystolic II/VI blowing one added if absent),
    condition cleared so single-attribute edits are not refused as contradicting it."""
    if f.murmur != "present":
        f = f.with_(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch="high",
                    quality="blowing")
    return f.with_(condition=None, shape=f.shape or SHAPES_BY_TIMING[f.timing][0], pitch=f.pitch or "medium",
                   quality=f.quality or "blowing", grade=f.grade or 2)


@dataclass
class Clip:
    """One rendered clip of the study and what was asked for."""

    series: int  # index of (base, seed)
    kind: str  # "base" | "grade" | "timing" | "location"
    findings: Findings
    audio: np.ndarray


@dataclass
class CounterfactualResult:
    clips: list[Clip]
    reads: dict[str, list] | None  # evaluator reads per head, aligned with clips
    summary: dict = field(default_factory=dict)


def render_study(renderers: Sequence[tuple[Findings, Renderer]]) -> list[Clip]:
    """For each (base, renderer): the base, its grade sweep, one timing and one location edit."""
    clips = []
    for s, (base, render) in enumerate(renderers):
        clips.append(Clip(s, "base", base, render(base)))
        for g in grade_levels(base):
            f = base.with_(grade=g)
            clips.append(Clip(s, "grade", f, render(f)))
        for kind, edit in (("timing", timing_edit), ("location", location_edit)):
            f = edit(base)
            clips.append(Clip(s, kind, f, render(f)))
    return clips


def summarise(clips: list[Clip], reads: dict[str, list] | None = None) -> dict:
    """The numbers of the report's counterfactual section (see module docstring)."""
    base_of = {c.series: i for i, c in enumerate(clips) if c.kind == "base"}
    out: dict = {}
    # Grade: monotonicity of murmur-band energy along each sweep.
    rhos, by_grade = [], {}
    for s in base_of:
        sweep = [c for c in clips if c.series == s and c.kind == "grade"]
        grades = [c.findings.grade for c in sweep]
        db = [murmur_band_db(c.audio, c.findings.pitch) for c in sweep]
        for g, v in zip(grades, db):
            by_grade.setdefault(g, []).append(v)
        rho = stats.spearmanr(grades, db).statistic if len(set(db)) > 1 else 0.0
        rhos.append(float(rho))
    out["grade"] = {"spearman_mean": float(np.mean(rhos)), "monotonic_share": float(np.mean(np.array(rhos) > 0.999)),
                    "band_db_by_grade": {g: float(np.mean(v)) for g, v in sorted(by_grade.items())},
                    "n_series": len(rhos)}
    for kind in EDITS:
        idx = [i for i, c in enumerate(clips) if c.kind == kind]
        shifts = [onset_shift_ms(clips[base_of[clips[i].series]].audio, clips[i].audio) for i in idx]
        hr = [abs(heart_rate(clips[i].audio) - heart_rate(clips[base_of[clips[i].series]].audio))
              for i in idx]
        row = out.setdefault(kind, {})
        row["onset_shift_ms"] = float(np.nanmean(shifts)) if np.isfinite(shifts).any() else float("nan")
        row["onset_matched_share"] = float(np.mean(np.isfinite(shifts)))
        row["hr_change_bpm"] = float(np.nanmean(hr)) if np.isfinite(hr).any() else float("nan")
        if reads is not None:
            target = "grade" if kind == "grade" else kind
            row["evaluator_reads_target"] = float(np.mean([reads[target][i] == getattr(clips[i].findings, target)
                                                           for i in idx]))
    if reads is not None:
        out["AD"] = attribute_disentanglement_of(clips, reads)
    return out


def attribute_disentanglement_of(clips: list[Clip], reads: dict[str, list]) -> float:
    """AD over every edit whose findings differ from the base in its own attribute."""
    from hldm.eval.metrics import attribute_disentanglement

    base_of = {c.series: i for i, c in enumerate(clips) if c.kind == "base"}
    before = {h: [] for h in AD_HEADS}
    after = {h: [] for h in AD_HEADS}
    changed = []
    for i, c in enumerate(clips):
        if c.kind == "base":
            continue
        b = base_of[c.series]
        if getattr(c.findings, c.kind) == getattr(clips[b].findings, c.kind):
            continue  # the sweep's own base grade: no edit
        for h in AD_HEADS:
            before[h].append(reads[h][b])
            after[h].append(reads[h][i])
        changed.append(c.kind)
    return attribute_disentanglement(before, after, changed)


def evaluator_reads(evaluator, clips: list[Clip]) -> dict[str, list]:
    from hldm.eval.harness import ClipSet, read

    cs = ClipSet("counterfactual", [c.audio for c in clips], [c.findings for c in clips],
                 [str(c.series) for c in clips], "generated")
    return read(evaluator, cs).values


def run(renderers: Sequence[tuple[Findings, Renderer]], evaluator=None) -> CounterfactualResult:
    clips = render_study(renderers)
    reads = evaluator_reads(evaluator, clips) if evaluator is not None else None
    return CounterfactualResult(clips, reads, summarise(clips, reads))


# ----------------------------------------------------------------------------- renderers


def _change(base: Findings, f: Findings) -> dict:
    before = base.to_dict()
    return {k: v for k, v in f.to_dict().items() if v != before[k]}


def pipeline_renderer(pipe, base: Findings, seed: int, seconds: float, **gen_kw) -> Renderer:
    """Generated clips: each variant is side b of the app's what-if from `base` (same seed, the
    subspaces its edit may not move held to the base's)."""
    def render(f: Findings) -> np.ndarray:
        if f == base:
            return pipe.generate(f, seed=seed, seconds=seconds, **gen_kw).audio
        return pipe.what_if(base, _change(base, f), seed=seed, seconds=seconds, **gen_kw).b.audio
    return render


def edit_renderer(pipe, audio: np.ndarray, base: Findings, seed: int, strength: float = 0.5, **gen_kw) -> Renderer:
    """A real recording edited through `pipe.edit` from the same noised latent for every variant."""
    return lambda f: pipe.edit(audio, base, _change(base, f), strength=strength, seed=seed, **gen_kw).b.audio


def simulator_renderer(seed: int, seconds: float) -> Renderer:
    """The simulator: grade edits change only the murmur stream (the known answer)."""
    return lambda f: simulate(f, seconds=seconds, seed=seed, noise_level=0.02).audio
