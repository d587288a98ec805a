"""The report's "Your recording" section: edits of held-out recordings measured against the upload.

For held-out murmur recordings of each pitch (CirCor test-split patients, grades I-III as
recorded; the simulator without the data) every grade I..VI is asked for in turn, the murmur
is removed, and its timing changed within its phase; held-out murmur-free recordings get a
murmur added at each grade. Every edited clip is measured with hldm.eval.listener against
the upload:

- murmur band re S1/S2 (dB) in the murmur's phase, read on the upload's annotated segmentation
  (CirCor's .tsv, the simulator's own; the edit keeps the beats, and an edit made on a wrong
  segmentation shows): Spearman over the grade sweep, and after removal its distance to the
  same recording's murmur-free phase;
- the editor's segmentation of each upload against its annotation, beside the envelope rule's;
- S1/S2 onset shift (ms) and heart-rate change (bpm) of the edited clip vs the upload;
- how close the unedited parts stay: the RMS dB distance of the mean power spectra (20-800 Hz)
  outside the edited frames, beside the same distance between two recordings of the same
  patient (another auscultation site) outside their murmur phases.

`methods` also runs the model's own SDEdit (`pipe.edit`) on the same recordings, the
comparison that motivated hldm.editing.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from hldm.audio.features import stft
from hldm.clinical.vocabulary import PITCHES, ROMAN, SAMPLE_RATE, Findings, max_grade, timing_phase
from hldm.editing import (MIN_MURMUR_DB, Segmentation, SegmentationError, default_segmenter, edit_kind_change,
                          edit_recording, murmur_found, segment)
from hldm.eval import listener as L
from hldm.eval.counterfactual import onset_shift_ms

SPECTRUM_BAND_HZ = (20.0, 800.0)  # the stethoscope band, as counterfactual.murmur_band_db
TARGETS = {"spearman": 0.9, "removal_db": 2.0, "onset_ms": 10.0, "hr_bpm": 2.0}
SIM_NOISE = 0.02
ADD_GRADES = (1, 3, 5)


@dataclass
class Upload:
    """One held-out recording to edit: audio (N,), its findings, patient, a second recording of the
    same patient (None when the patient has one), both cropped to the same length, the annotated
    segmentation of the crop (K, 3) (CirCor's .tsv, the simulator's own), the measures' reference, and
    the editor's own segmentation of it (`editable` sets it: every edit starts from it)."""

    audio: np.ndarray
    findings: Findings
    patient: str
    other: np.ndarray | None
    truth: np.ndarray
    seg: Segmentation | None = None


def _crop(audio: np.ndarray, seg: np.ndarray, seconds: float) -> tuple[np.ndarray, np.ndarray] | None:
    """`seconds` of audio from its first annotated S1 onset and the annotated rows inside them, shifted
    to the crop; None when the recording is shorter."""
    start = seg[seg[:, 2] == 1][0, 0] if (seg[:, 2] == 1).any() else 0.0
    i, n = int(round(start * SAMPLE_RATE)), int(round(seconds * SAMPLE_RATE))
    if len(audio) - i < n:
        return None
    rows = seg - np.asarray([start, start, 0.0])
    return np.asarray(audio[i:i + n], np.float32), rows[(rows[:, 0] >= 0) & (rows[:, 1] <= seconds)]


def held_out(per_pitch: int, normals: int, seconds: float) -> tuple[list[Upload], list[Upload], str, dict]:
    """Murmur recordings (per_pitch of each pitch, grade I-III, systolic; at most one per patient) and
    murmur-free ones of held-out patients that the editor takes, the source ("circor" or "sim":
    simulator stand-ins without the data), and how many the editor refused on the way, by pitch
    ("none" for the murmur-free ones) and reason. A patient's recordings are tried in turn: a
    clinician uploads the site where the murmur is heard."""
    from hldm.eval.harness import circor_available

    if not circor_available():
        murmurs, quiet = _simulated(per_pitch, normals, seconds)
        murmurs, quiet = ([replace(u, seg=segment(u.audio)) for u in ups] for ups in (murmurs, quiet))
        return murmurs, quiet, "sim", {}
    from hldm.data.circor import load_circor, load_or_make_split
    from hldm.data.windows import CirCorWindows
    from hldm.paths import circor_dir

    index = load_circor(circor_dir())
    recs = sorted((r for r in index.recordings_of(load_or_make_split(index)["test"]) if r.segmentation is not None),
                  key=lambda r: r.stem)
    reader = CirCorWindows([], seconds=seconds, cache=False)
    by_patient: dict[str, list] = {}
    for r in recs:
        by_patient.setdefault(r.patient_id, []).append(r)

    def upload(r) -> Upload | None:
        crop = _crop(reader.audio(r), r.segmentation, seconds)
        others = [_crop(reader.audio(o), o.segmentation, seconds) for o in by_patient[r.patient_id]
                  if o is not r and o.segmentation is not None]
        others = [o[0] for o in others if o is not None]
        return None if crop is None else Upload(crop[0], r.findings, r.patient_id, others[0] if others else None,
                                                crop[1])

    refused: dict[str, Counter] = {}

    def take(wanted, n: int, key: str) -> list[Upload]:
        out, taken = [], set()
        for r in recs:
            if len(out) == n:
                break
            if r.patient_id in taken or not wanted(r) or (u := upload(r)) is None:
                continue
            got = editable(u)
            if isinstance(got, str):
                refused.setdefault(key, Counter())[got] += 1
                continue
            out.append(got)
            taken.add(r.patient_id)
        return out

    murmurs = [u for pitch in PITCHES for u in take(
        lambda r, p=pitch: (r.murmur_status == "present" and r.findings.pitch == p and bool(r.findings.grade)
                            and r.findings.grade <= 3 and timing_phase(r.findings.timing) == "systolic"),
        per_pitch, pitch)]
    quiet = take(lambda r: r.murmur_status == "absent", normals, "none")
    return murmurs, quiet, "circor", {k: dict(v) for k, v in refused.items()}


def editable(u: Upload) -> Upload | str:
    """The upload with the editor's segmentation, or why the editor refuses it (hldm.editing.segment,
    murmur_found)."""
    try:
        seg = segment(u.audio)
        if u.findings.murmur == "present":
            murmur_found(u.audio, seg, u.findings)
    except SegmentationError:
        return "not segmentable"
    except ValueError:
        return "no murmur found"
    return replace(u, seg=seg)


def _simulated(per_pitch: int, normals: int, seconds: float) -> tuple[list[Upload], list[Upload]]:
    from hldm.data.simulator import simulate

    def sim(f: Findings, k: int) -> Upload:
        one, two = (simulate(f, seconds=seconds, seed=k + s, noise_level=SIM_NOISE) for s in (0, 1000))
        return Upload(one.audio, f, f"sim{k}", two.audio, np.asarray(one.segmentation, np.float64))

    base = Findings(murmur="present", timing="holosystolic", shape="plateau", quality="blowing", location="MV")
    murmurs = [sim(base.with_(pitch=p, grade=1 + k % 3, heart_rate=80.0 + 10 * k), 10 * i + k)
               for i, p in enumerate(PITCHES) for k in range(per_pitch)]
    quiet = [sim(Findings(heart_rate=70.0 + 10 * k), 100 + k) for k in range(normals)]
    return murmurs, quiet


# ----------------------------------------------------------------------------- measures


def mean_spectrum_db(audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(bins,) 10 log10 of the mean power over the STFT frames `frames` (T,) bool, within SPECTRUM_BAND_HZ."""
    power = np.abs(stft(audio).numpy()[:, :len(frames)]) ** 2
    freqs = np.arange(power.shape[0]) * SAMPLE_RATE / (2 * (power.shape[0] - 1))
    band = (freqs >= SPECTRUM_BAND_HZ[0]) & (freqs <= SPECTRUM_BAND_HZ[1])
    return 10 * np.log10(power[band][:, frames].mean(1) + 1e-20)


def spectral_distance_db(a: np.ndarray, frames_a: np.ndarray, b: np.ndarray, frames_b: np.ndarray) -> float:
    """RMS dB difference of two clips' mean spectra over their given frames, gain removed (the levels
    are relative: a recording's loudness depends on the stethoscope's pressure)."""
    d = mean_spectrum_db(a, frames_a) - mean_spectrum_db(b, frames_b)
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


def _outside(seg: Segmentation, timing: str | None, frames: int) -> np.ndarray:
    """(frames,) bool: frames a murmur of `timing` (None: none) leaves alone."""
    return seg.frame_weights(timing, frames) == 0 if timing else np.ones(frames, dtype=bool)


def same_patient_distance(u: Upload) -> float:
    """`spectral_distance_db` between the upload and the patient's other recording, each outside its murmur."""
    if u.other is None:
        return float("nan")
    try:
        seg_b = segment(u.other)
    except SegmentationError:
        return float("nan")
    timing = u.findings.timing if u.findings.murmur == "present" else None
    frames = len(u.audio) // 32
    return spectral_distance_db(u.audio, _outside(u.seg, timing, frames), u.other, _outside(seg_b, timing, frames))


def measure(u: Upload, edited: np.ndarray, pitch: str, timing: str, weights: np.ndarray) -> dict:
    """One edit against its upload (module docstring), the levels read on the upload's annotated
    segmentation; weights (T,): the frames the edit may change."""
    level = L.murmur_level_db(edited, pitch, u.truth, phase=timing_phase(timing))
    keep = weights == 0
    return {"level_db": level, "onset_shift_ms": onset_shift_ms(u.audio, edited),
            "hr_change_bpm": abs(L.heart_rate(edited) - u.seg.heart_rate),  # the upload's, by the same listener
            "outside_db": spectral_distance_db(u.audio, keep, edited, keep)}


# ----------------------------------------------------------------------------- renderers

Renderer = Callable[[np.ndarray, Findings, str, dict, Segmentation], tuple[np.ndarray, np.ndarray]]


def recording_renderer(pipe, seed: int = 0) -> Renderer:
    """hldm.editing: the edit the app makes."""
    def render(audio, before, kind, value, seg):
        e = edit_recording(pipe, audio, before, kind, seed=seed, segmentation=seg, **value)
        return e.edited, e.weights
    return render


def sdedit_renderer(pipe, strength: float = 0.5, seed: int = 0) -> Renderer:
    """The model's own SDEdit (`pipe.edit`, held subspaces), which re-forms the whole clip."""
    def render(audio, before, kind, value, seg):
        change = edit_kind_change(before, kind, **value)
        out = pipe.edit(audio, before, change, strength=strength, seed=seed).b.audio
        timing = change.get("timing") or before.timing
        return out, seg.frame_weights(timing, len(audio) // 32)  # it changes every frame; measured outside these
    return render


def _mean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def evaluate(render: Renderer, murmurs: list[Upload], normals: list[Upload]) -> dict:
    """Every measure of the section for one renderer, per pitch and over all edits."""
    per_pitch: dict = {}
    edits: list[dict] = []
    for u in murmurs:
        f, seg = u.findings, u.seg
        row = per_pitch.setdefault(f.pitch, {"spearman": [], "swing_db": [], "removal_gap_db": [],
                                             "timing_shift_db": [], "same_patient_db": [],
                                             "grade_onset_shift_ms": [], "grade_hr_change_bpm": []})
        grades = list(range(1, max_grade(f.timing) + 1))
        levels = []
        for g in grades:
            if g == f.grade:
                levels.append(L.murmur_level_db(u.audio, f.pitch, u.truth, phase=timing_phase(f.timing)))
                continue
            out, w = render(u.audio, f, "grade", {"grade": g}, seg)
            m = measure(u, out, f.pitch, f.timing, w)
            levels.append(m["level_db"])
            row["grade_onset_shift_ms"].append(m["onset_shift_ms"])
            row["grade_hr_change_bpm"].append(m["hr_change_bpm"])
            edits.append({"kind": "grade", "pitch": f.pitch, **m})
        row["spearman"].append(float(stats.spearmanr(grades, levels).statistic))
        row["swing_db"].append(levels[-1] - levels[0])
        out, w = render(u.audio, f, "remove", {}, seg)
        m = measure(u, out, f.pitch, f.timing, w)
        free = L.murmur_level_db(u.audio, f.pitch, u.truth,
                                 phase="diastolic" if timing_phase(f.timing) == "systolic" else "systolic")
        row["removal_gap_db"].append(m["level_db"] - free)
        edits.append({"kind": "remove", "pitch": f.pitch, **m})
        new = "late-systolic" if f.timing != "late-systolic" else "early-systolic"
        out, w = render(u.audio, f, "timing", {"timing": new}, seg)
        m = measure(u, out, f.pitch, new, w)
        row["timing_shift_db"].append(m["level_db"] - levels[grades.index(f.grade)])
        edits.append({"kind": "timing", "pitch": f.pitch, **m})
        row["same_patient_db"].append(same_patient_distance(u))
    add_levels = []
    for u in normals:
        levels = []
        for g in ADD_GRADES:
            out, w = render(u.audio, u.findings, "add", {"grade": g}, u.seg)
            m = measure(u, out, "medium", "holosystolic", w)
            levels.append(m["level_db"])
            edits.append({"kind": "add", "pitch": "medium", **m})
        add_levels.append(levels)
    summary = {p: {k: _mean(v) for k, v in row.items()} | {"min_spearman": float(np.nanmin(row["spearman"])),
                                                           "n": len(row["spearman"])}
               for p, row in per_pitch.items()}
    by_kind = {k: {m: _mean([e[m] for e in edits if e["kind"] == k])
                   for m in ("onset_shift_ms", "hr_change_bpm", "outside_db")}
               for k in ("grade", "remove", "timing", "add")}
    add = np.asarray(add_levels).reshape(-1, len(ADD_GRADES))
    return {"pitch": summary, "by_kind": by_kind,
            "add_grades": list(ADD_GRADES), "add_level_db": [_mean(add[:, i]) for i in range(len(ADD_GRADES))],
            "add_spearman": _mean([stats.spearmanr(ADD_GRADES, r).statistic for r in add]),
            "same_patient_db": _mean([v for row in per_pitch.values() for v in row["same_patient_db"]])}


def run(pipe, per_pitch: int = 5, normals: int = 3, seconds: float = 8.0, seed: int = 0,
        baseline: bool = True) -> dict:
    """The section's numbers: hldm.editing on held-out recordings, and the model's SDEdit beside it."""
    from hldm.train.segmenter import Annotated, agreement, segmenter_rows

    murmurs, quiet, source, refused = held_out(per_pitch, normals, seconds)
    annotated = [Annotated(u.audio, u.truth, u.patient) for u in murmurs + quiet]
    found = {"segmenter (checkpoints/segmenter)": agreement(segmenter_rows(default_segmenter()), annotated, seconds),
             "envelope rule (listener.phases)": agreement(L.phases, annotated, seconds)}
    out = {"source": source, "seconds": seconds, "n_murmur": len(murmurs), "n_normal": len(quiet),
           "targets": TARGETS, "segmentation": found, "refused": refused,
           "methods": {"recording edit (hldm.editing)": evaluate(recording_renderer(pipe, seed), murmurs, quiet)}}
    if baseline:
        out["methods"]["SDEdit 0.5 (pipe.edit)"] = evaluate(sdedit_renderer(pipe, 0.5, seed), murmurs, quiet)
    return out


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _pass(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def markdown(sec: dict) -> list[str]:
    """Lines of the report's "Your recording" section (numbers from `run`)."""
    ref = "held-out CirCor recordings" if sec["source"] == "circor" else "SIMULATOR clips (no real data)"
    t = sec["targets"]
    out = ["## 6. Your recording: edits of a real recording", "",
           f"{sec['n_murmur']} {ref} with a systolic murmur (grade I-III as recorded, low / medium / high pitch) "
           f"edited to every other grade, with the murmur removed and re-timed to late systole; "
           f"{sec['n_normal']} murmur-free ones given a holosystolic medium-pitched murmur of grade I, III, V. "
           f"{sec['seconds']:g} s from the first annotated S1; the editor segments each upload itself, and each "
           "edited clip is measured with hldm.eval.listener against the upload: the murmur band re S1/S2 in its "
           "phase on the upload's annotated segmentation, S1/S2 onset shift and heart-rate change, and the "
           "spectral distance outside the edited frames (RMS dB of the mean 20-800 Hz spectra, gain removed) beside the same distance between two "
           "recordings of one patient (another site) outside their murmur phases.", ""]
    from hldm.train.segmenter import ONSET_TOL_S

    out += ["The uploads' segmentation against their annotations (onsets within "
            f"{1000 * ONSET_TOL_S:.0f} ms; a clip is labelled right, or swapped, when at least 70 % of its S1 and "
            "of its S2 onsets are found under that name):", "",
            "| method | clips | S1 onsets found | S2 onsets found | clips labelled right | clips with S1/S2 swapped |",
            "|---|---|---|---|---|---|"]
    for name, a in sec["segmentation"].items():
        out.append(f"| {name} | {a['clips']} | {a['s1_recall']:.2f} | {a['s2_recall']:.2f} | {a['right']:.2f} | "
                   f"{a['swapped']:.2f} |")
    if sec["refused"]:
        said = "; ".join(f"{'murmur-free' if key == 'none' else key + ' pitch'}: "
                         + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
                         for key, reasons in sec["refused"].items())
        out += ["", f"Recordings the editor refused while these were picked (the patient's next site was tried): "
                f"{said}. 'No murmur found': the murmur's phase is under {MIN_MURMUR_DB:g} dB louder in its band "
                "than the other phase, so an edit would change nothing; the app says so instead."]
    out.append("")
    for name, m in sec["methods"].items():
        same = m["same_patient_db"]
        out += [f"### {name}", "",
                "| pitch | recordings | Spearman grade vs level (mean / min) | I->VI dB | grade edits: S1/S2 shift ms "
                "| grade edits: HR change bpm | removed vs murmur-free phase dB | late-systolic re-timing dB | "
                "same-patient distance dB |", "|---|---|---|---|---|---|---|---|---|"]
        for pitch, r in m["pitch"].items():
            ok = r["min_spearman"] >= t["spearman"]
            out.append(f"| {pitch} | {r['n']} | {_fmt(r['spearman'])} / {_fmt(r['min_spearman'])} ({_pass(ok)}) | "
                       f"{_fmt(r['swing_db'], 1)} | {_fmt(r['grade_onset_shift_ms'], 1)} | "
                       f"{_fmt(r['grade_hr_change_bpm'], 2)} | {_fmt(r['removal_gap_db'], 1)} "
                       f"({_pass(abs(r['removal_gap_db']) <= t['removal_db'])}) | {_fmt(r['timing_shift_db'], 1)} | "
                       f"{_fmt(r['same_patient_db'], 1)} |")
        out += ["", "| edit | S1/S2 onset shift ms | heart-rate change bpm | distance outside the edit dB |",
                "|---|---|---|---|"]
        for kind, r in m["by_kind"].items():
            out.append(f"| {kind} | {_fmt(r['onset_shift_ms'], 1)} ({_pass(r['onset_shift_ms'] <= t['onset_ms'])}) | "
                       f"{_fmt(r['hr_change_bpm'], 2)} ({_pass(r['hr_change_bpm'] <= t['hr_bpm'])}) | "
                       f"{_fmt(r['outside_db'], 2)} ({_pass(r['outside_db'] < same)}) |")
        grades = " / ".join(ROMAN[g - 1] for g in m["add_grades"])
        levels = " / ".join(_fmt(v, 1) for v in m["add_level_db"])
        out += ["", f"Murmur added: level re S1/S2 at grade {grades}: {levels} dB, Spearman "
                f"{_fmt(m['add_spearman'])}. Same-patient distance (two recordings, "
                f"outside the murmur): {_fmt(same, 1)} dB.", ""]
    return out
