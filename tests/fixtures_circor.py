"""A tiny CirCor-layout directory written into a tmp dir: synthetic audio, real quirks.

Patients (murmur status; what each exercises):
  1001 Present at MV+TV, systolic holosystolic plateau II/VI high blowing; AV PV TV MV as .wav,
       75 bpm; the murmur is "elsewhere" at AV and PV.
  1002 Absent; Age/Height/Weight "nan"; AV, MV_1, MV_2 (a location recorded twice) as .flac, 100 bpm.
  1003 Unknown; AV has no TSV, PV an empty TSV, TV is fine.
  1004 Present at AV+Phc, diastolic only (early-diastolic decrescendo I/IV); AV and a Phc recording.
  1005 Present at PV, systolic and diastolic both given, systolic quality "Squeaky" (not in the
       vocabulary); PV has an unannotated (state 0) stretch in the middle; also MV.
Odd files: README.txt (not a header), notes.docx, an orphan 9999_AV.tsv; 1001_AV.hea is
referenced, so not odd. `with_csv` adds training_data.csv with an Outcome column, one
disagreement (1002 Murmur) and a patient (7777) without a header.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 4000
HEAD_S = 0.5  # unannotated lead-in and tail, as in our trimmed copy
S1_S, SYSTOLE_S, S2_S = 0.12, 0.2, 0.1

_BASE_FIELDS = {
    "Age": "Child", "Sex": "Female", "Height": "110.0", "Weight": "18.5", "Pregnancy status": "False",
    "Murmur": "Absent", "Murmur locations": "nan", "Most audible location": "nan",
    **{f"{p} murmur {a}": "nan" for p in ("Systolic", "Diastolic")
       for a in ("timing", "shape", "grading", "pitch", "quality")},
    "Campaign": "CC2015", "Additional ID": "nan",
}

# patient id -> (field overrides, [(location, stem suffix, audio ext, tsv kind, bpm)])
PATIENTS = {
    "1001": ({"Murmur": "Present", "Murmur locations": "MV+TV", "Most audible location": "MV",
              "Systolic murmur timing": "Holosystolic", "Systolic murmur shape": "Plateau",
              "Systolic murmur grading": "II/VI", "Systolic murmur pitch": "High",
              "Systolic murmur quality": "Blowing"},
             [("AV", "AV", ".wav", "ok", 75), ("PV", "PV", ".wav", "ok", 75),
              ("TV", "TV", ".wav", "ok", 75), ("MV", "MV", ".wav", "ok", 75)]),
    "1002": ({"Age": "nan", "Height": "nan", "Weight": "nan"},
             [("AV", "AV", ".flac", "ok", 100), ("MV", "MV_1", ".flac", "ok", 100),
              ("MV", "MV_2", ".flac", "ok", 100)]),
    "1003": ({"Murmur": "Unknown", "Sex": "Male"},
             [("AV", "AV", ".wav", "missing", 80), ("PV", "PV", ".wav", "empty", 80),
              ("TV", "TV", ".wav", "ok", 80)]),
    "1004": ({"Murmur": "Present", "Murmur locations": "AV+Phc", "Most audible location": "AV",
              "Age": "Adolescent", "Sex": "Male", "Height": "160.0", "Weight": "50.0",
              "Diastolic murmur timing": "Early-diastolic", "Diastolic murmur shape": "Decrescendo",
              "Diastolic murmur grading": "I/IV", "Diastolic murmur pitch": "Low",
              "Diastolic murmur quality": "Blowing"},
             [("AV", "AV", ".wav", "ok", 75), ("Phc", "Phc", ".wav", "ok", 75)]),
    "1005": ({"Murmur": "Present", "Murmur locations": "PV", "Most audible location": "PV",
              "Pregnancy status": "True", "Age": "Young Adult",
              "Systolic murmur timing": "Mid-systolic", "Systolic murmur shape": "Diamond",
              "Systolic murmur grading": "III/VI", "Systolic murmur pitch": "Medium",
              "Systolic murmur quality": "Squeaky",
              "Diastolic murmur timing": "Early-diastolic", "Diastolic murmur shape": "Decrescendo",
              "Diastolic murmur grading": "II/IV", "Diastolic murmur pitch": "Low",
              "Diastolic murmur quality": "Blowing"},
             [("PV", "PV", ".wav", "gap", 75), ("MV", "MV", ".wav", "ok", 75)]),
}
N_CYCLES = 8
GAP_AFTER_CYCLES = 3  # "gap" TSVs: 3 cycles, 1 s unannotated, then N_CYCLES cycles


def segmentation(bpm: float, kind: str) -> np.ndarray:
    """(K, 3) rows (start_s, end_s, state) with an unannotated head and tail (and middle for "gap")."""
    cycle = 60.0 / bpm
    rows, t = [(0.0, HEAD_S, 0)], HEAD_S
    blocks = [GAP_AFTER_CYCLES, N_CYCLES] if kind == "gap" else [N_CYCLES]
    for b, n in enumerate(blocks):
        if b:
            rows.append((t, t + 1.0, 0))
            t += 1.0
        for _ in range(n):
            for state, dur in ((1, S1_S), (2, SYSTOLE_S), (3, S2_S), (4, cycle - S1_S - SYSTOLE_S - S2_S)):
                rows.append((t, t + dur, state))
                t += dur
    rows.append((t, t + HEAD_S, 0))
    return np.asarray(rows)


def synth_audio(seg: np.ndarray, murmur: bool, rng: np.random.Generator) -> np.ndarray:
    """Tone bursts on S1 (50 Hz) and S2 (80 Hz), band noise in systole when `murmur`, faint noise."""
    n = int(round(seg[-1, 1] * SR))
    t = np.arange(n) / SR
    x = 0.003 * rng.standard_normal(n)
    for start, end, state in seg:
        a, b = int(round(start * SR)), int(round(end * SR))
        tt = t[a:b] - start
        if state in (1, 3):
            f0 = 50.0 if state == 1 else 80.0
            x[a:b] += 0.5 * np.sin(2 * np.pi * f0 * tt) * np.exp(-tt / 0.03)
        elif state == 2 and murmur:
            x[a:b] += 0.05 * np.sin(2 * np.pi * 300 * tt) * rng.standard_normal(b - a)
    return (x / np.max(np.abs(x)) * 0.8).astype(np.float32)


def _header(pid: str, fields: dict, recs: list) -> str:
    lines = [f"{pid} {len(recs)} {SR}"]
    lines += [f"{loc} {pid}_{suf}.hea {pid}_{suf}.wav {pid}_{suf}.tsv" for loc, suf, *_ in recs]
    lines += [f"#{k}: {v}" for k, v in {**_BASE_FIELDS, **fields}.items()]
    return "\n".join(lines) + "\n"


def make_circor(root: Path, with_csv: bool = False, seed: int = 0) -> Path:
    """Write the fixture into `root` (created) and return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for pid, (fields, recs) in PATIENTS.items():
        (root / f"{pid}.txt").write_text(_header(pid, fields, recs))
        locs = fields.get("Murmur locations", "nan").split("+")
        for loc, suf, ext, tsv_kind, bpm in recs:
            stem = f"{pid}_{suf}"
            seg = segmentation(bpm, tsv_kind)
            sf.write(root / f"{stem}{ext}", synth_audio(seg, loc in locs, rng), SR, subtype="PCM_16")
            if tsv_kind == "empty":
                (root / f"{stem}.tsv").write_text("")
            elif tsv_kind != "missing":
                (root / f"{stem}.tsv").write_text(
                    "".join(f"{a:.6f}\t{b:.6f}\t{int(s)}\n" for a, b, s in seg))
    (root / "1001_AV.hea").write_text("1001_AV 1 4000 29000\n")
    (root / "README.txt").write_text("Notes about this folder.\n")
    (root / "notes.docx").write_bytes(b"PK\x03\x04not really a docx")
    (root / "9999_AV.tsv").write_text("0.0\t1.0\t0\n")
    if with_csv:
        (root / "training_data.csv").write_text(
            "Patient ID,Murmur,Outcome\n1001,Present,Abnormal\n1002,Present,Normal\n7777,Absent,Normal\n")
    return root
