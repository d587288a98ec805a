"""CirCor DigiScope loader: any directory in CirCor's layout -> patients, recordings, problems.

Layout (PhysioNet "training_data" folder, or our trimmed FLAC copy in ../shared/data):
per patient `<id>.txt` whose first line is `<id> <n_recordings> <sample_rate>`, then one
line per recording `<LOC> <stem>.hea <stem>.wav <stem>.tsv`, then `#Field: value`
labels ("nan" = not applicable). Audio is `<stem>.wav` or `<stem>.flac`; `<stem>.tsv`
holds the segmentation rows `start_s  end_s  state` (0 unannotated, 1 S1, 2 systole,
3 S2, 4 diastole). `training_data.csv`, when present, only fills fields a header lacks;
the headers win and every disagreement is reported.

Decisions (each visible on the Recording, never silent):
- A murmur is placed on a recording only at a location listed in "Murmur locations";
  the other recordings of that patient get murmur "absent" with flag `murmur_elsewhere`
  (CirCor's annotators did not hear it there).
- The systolic murmur's attributes are used when present, else the diastolic ones
  (flag `diastolic_dropped` when a patient has both: `Findings` holds one murmur).
- Murmur "Unknown": findings carry murmur "absent" only because `Findings` has no third
  value; `murmur_status` is "unknown" and flag `murmur_unknown` marks them, so they stay
  out of supervised murmur labels (windows give murmur = nan, grade = timing = -1).
- Location "Phc" (any other auscultation site) has no place in our vocabulary: the
  recording is kept (it counts, its audio is usable) with `location = None`,
  `findings.location = None` and flag `location_unmapped`; CirCorWindows skips it.
- "nan" or absent fields become None and are listed in `Recording.missing`; an
  unknown heart rate is NaN in `findings.heart_rate` (flag `heart_rate_unknown`).
- Radiation, extra sounds and condition are not in CirCor: Findings defaults
  ("none", (), None) stand for "not recorded".
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hldm.clinical.vocabulary import (AGE_GROUPS, DIASTOLIC_TIMINGS, HEART_RATE_RANGE, LOCATIONS,
                                      MAX_GRADE_DIASTOLIC, MAX_GRADE_SYSTOLIC, PITCHES, QUALITIES,
                                      ROMAN, SEXES, SHAPES, SYSTOLIC_TIMINGS, Findings)
from hldm.paths import cache_dir

AUDIO_EXTENSIONS = (".wav", ".flac")  # first found wins
CSV_NAME = "training_data.csv"
MURMUR_STATUSES = ("present", "absent", "unknown")
SEGMENT_STATES = {0: "unannotated", 1: "S1", 2: "systole", 3: "S2", 4: "diastole"}
UNMAPPED_LOCATIONS = ("Phc",)  # CirCor's "any other auscultation location"
# Consecutive annotated TSV rows are contiguous; allow rounding gaps up to this (s).
CONTIGUITY_TOLERANCE_S = 1e-3
_HEADER_FIRST_LINE = re.compile(r"^(\S+)\s+(\d+)\s+(\d+)\s*$")


@dataclass(frozen=True)
class Problem:
    """Something in the directory the loader could not use as is; the load goes on."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


@dataclass(frozen=True)
class Patient:
    patient_id: str
    murmur_status: str  # one of MURMUR_STATUSES
    murmur_locations: tuple[str, ...]  # CirCor codes, "Phc" included
    most_audible_location: str | None
    stems: tuple[str, ...]
    fields: dict = field(hash=False, compare=False, repr=False)  # raw "#Field: value" labels, "nan" -> None
    missing: tuple[str, ...] = ()  # header fields that were "nan" or absent
    sample_rate: int = 4000
    demographics: dict = field(default_factory=dict, hash=False, compare=False)  # L1 Findings fields
    murmur: dict = field(default_factory=dict, hash=False, compare=False)  # murmur Findings fields (present only)
    murmur_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recording:
    stem: str
    patient_id: str
    location: str | None  # one of LOCATIONS; None for an unmapped site (Phc)
    audio_path: Path | None
    tsv_path: Path | None
    findings: Findings
    segmentation: np.ndarray | None = field(default=None, hash=False, compare=False, repr=False)  # (K, 3): start_s, end_s, state
    heart_rate: float | None = None  # bpm, median S1-to-S1 interval over annotated cycles
    raw_location: str = ""  # the location code as written in the header
    murmur_status: str = "absent"  # at this recording: present | absent | unknown
    flags: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # Findings fields that are None because CirCor had no value


@dataclass
class CirCorIndex:
    patients: dict[str, Patient]
    recordings: list[Recording]
    problems: list[Problem]
    root: Path | None = None

    def recordings_of(self, patient_ids) -> list[Recording]:
        wanted = set(patient_ids)
        return [r for r in self.recordings if r.patient_id in wanted]


def _value(raw: str | None) -> str | None:
    """A header value with CirCor's "nan" (and blanks) turned into None."""
    if raw is None:
        return None
    raw = raw.strip()
    return None if raw == "" or raw.lower() == "nan" else raw


def parse_segmentation(path: Path) -> tuple[np.ndarray | None, str | None]:
    """TSV -> ((K, 3) float64 array, None) or (None, why it is unusable)."""
    rows = []
    text = path.read_text(errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            start, end, state = float(parts[0]), float(parts[1]), int(float(parts[2]))
        except (IndexError, ValueError):
            return None, f"line {n} is not 'start_s end_s state': {line.strip()[:60]!r}"
        if state not in SEGMENT_STATES or not (math.isfinite(start) and math.isfinite(end)) or end < start:
            return None, f"line {n} has an invalid row {line.strip()[:60]!r} (state must be 0-4, end >= start)"
        rows.append((start, end, state))
    if not rows:
        return None, "empty segmentation"
    seg = np.asarray(rows, dtype=np.float64)
    if not (seg[:, 2] > 0).any():
        return None, "no annotated rows (all state 0)"
    return seg, None


def annotated_spans(seg: np.ndarray) -> list[tuple[float, float]]:
    """Maximal stretches of contiguous annotated rows (state 1-4), as (start_s, end_s)."""
    spans: list[list[float]] = []
    for start, end, state in seg:
        if state == 0:
            continue
        if spans and start - spans[-1][1] <= CONTIGUITY_TOLERANCE_S:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return [(a, b) for a, b in spans]


def cycle_intervals(seg: np.ndarray) -> np.ndarray:
    """(M, 2) pairs of consecutive S1 onsets with no unannotated stretch between them."""
    onsets = seg[seg[:, 2] == 1, 0]
    spans = annotated_spans(seg)
    pairs = [(a, b) for a, b in zip(onsets[:-1], onsets[1:])
             if any(s - CONTIGUITY_TOLERANCE_S <= a and b <= e + CONTIGUITY_TOLERANCE_S for s, e in spans)]
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2)


def heart_rate_from_segmentation(seg: np.ndarray) -> float | None:
    """60 / median S1-to-S1 interval (bpm), None without two annotated consecutive S1 onsets."""
    pairs = cycle_intervals(seg)
    if len(pairs) == 0:
        return None
    return float(60.0 / np.median(pairs[:, 1] - pairs[:, 0]))


def _map_choice(name: str, raw: str | None, allowed: tuple[str, ...], where: str,
                problems: list[Problem]) -> str | None:
    """CirCor spelling ("Holosystolic", "Young Adult") -> our lower-case value; unknown -> None + problem."""
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in allowed:
        return value
    problems.append(Problem("bad_value", where, f"{name} {raw!r} is not one of {', '.join(allowed)}"))
    return None


def _map_grade(raw: str | None, max_grade: int, where: str, problems: list[Problem]) -> int | None:
    """'II/VI' -> 2 (systolic, out of VI); 'I/IV' -> 1 (diastolic, out of IV)."""
    if raw is None:
        return None
    num, _, den = raw.strip().partition("/")
    if num in ROMAN and den == ROMAN[max_grade - 1] and ROMAN.index(num) < max_grade:
        return ROMAN.index(num) + 1
    problems.append(Problem("bad_value", where,
                            f"grading {raw!r} is not a Levine grade I/{ROMAN[max_grade - 1]}-{ROMAN[max_grade - 1]}/{ROMAN[max_grade - 1]}"))
    return None


def _parse_float(name: str, raw: str | None, lo: float, hi: float, where: str,
                 problems: list[Problem]) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if math.isfinite(value) and lo <= value <= hi:
        return value
    problems.append(Problem("bad_value", where, f"{name} {raw!r} is not a number in [{lo:g}, {hi:g}]"))
    return None


def _parse_bool(name: str, raw: str | None, where: str, problems: list[Problem]) -> bool | None:
    if raw is None:
        return None
    if raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    problems.append(Problem("bad_value", where, f"{name} {raw!r} is not True or False"))
    return None


@dataclass
class _Header:
    patient_id: str
    sample_rate: int
    lines: list[tuple[str, str, str]]  # (location, audio name, tsv name)
    fields: dict[str, str | None]


def _read_header(path: Path, problems: list[Problem]) -> _Header | None:
    lines = path.read_text(errors="replace").splitlines()
    first = _HEADER_FIRST_LINE.match(lines[0]) if lines else None
    if first is None:
        problems.append(Problem("unknown_file", path.name, "a .txt that is not a CirCor patient header "
                                "(first line is not '<id> <n_recordings> <sample_rate>')"))
        return None
    pid, n_rec, sr = first.group(1), int(first.group(2)), int(first.group(3))
    if pid != path.stem:
        problems.append(Problem("bad_header", path.name, f"patient id {pid!r} does not match the file name"))
    recs, fields = [], {}
    for n, line in enumerate(lines[1:], 2):
        if line.startswith("#"):
            key, sep, val = line[1:].partition(":")
            if sep:
                fields[key.strip()] = _value(val)
            continue
        parts = line.split()
        if not parts:
            continue
        names = {Path(p).suffix.lower(): p for p in parts[1:]}
        if len(parts) < 2 or not ({".wav", ".flac"} & set(names) or ".hea" in names):
            problems.append(Problem("bad_header", path.name, f"line {n} is not '<LOC> <stem>.hea <stem>.wav <stem>.tsv'"))
            continue
        audio_name = names.get(".wav") or names.get(".flac") or Path(names[".hea"]).with_suffix(".wav").name
        tsv_name = names.get(".tsv") or Path(audio_name).with_suffix(".tsv").name
        recs.append((parts[0], audio_name, tsv_name))
    if len(recs) != n_rec:
        problems.append(Problem("bad_header", path.name, f"first line announces {n_rec} recordings, {len(recs)} listed"))
    return _Header(pid, sr, recs, fields)


_KNOWN_FIELDS = ("Age", "Sex", "Height", "Weight", "Pregnancy status", "Murmur", "Murmur locations",
                 "Most audible location",
                 *(f"{p} murmur {a}" for p in ("Systolic", "Diastolic")
                   for a in ("timing", "shape", "grading", "pitch", "quality")),
                 "Outcome", "Campaign", "Additional ID")


def _read_csv(path: Path, problems: list[Problem]) -> dict[str, dict[str, str | None]]:
    """training_data.csv -> {patient id: {field: value}}; columns named as the header fields."""
    with path.open(newline="", errors="replace") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "Patient ID" not in reader.fieldnames:
            problems.append(Problem("unknown_file", path.name, "no 'Patient ID' column; ignored"))
            return {}
        return {row["Patient ID"].strip(): {k.strip().rstrip(":"): _value(v) for k, v in row.items()
                                            if k and k != "Patient ID"} for row in reader}


def _merge_csv(header: _Header, row: dict[str, str | None], problems: list[Problem]) -> None:
    for key, val in row.items():
        if key not in header.fields:
            if key in _KNOWN_FIELDS:
                header.fields[key] = val
        elif header.fields[key] != val and key in _KNOWN_FIELDS:
            problems.append(Problem("csv_mismatch", f"{header.patient_id}.txt",
                                    f"{key}: header {header.fields[key]!r}, {CSV_NAME} {val!r} (header kept)"))


def _murmur_attributes(fields: dict, where: str, problems: list[Problem]) -> tuple[dict, tuple[str, ...]]:
    """The murmur Findings fields from the systolic (preferred) or diastolic labels, and flags."""
    systolic = fields.get("Systolic murmur timing") is not None
    diastolic = fields.get("Diastolic murmur timing") is not None
    phase = "Diastolic" if diastolic and not systolic else "Systolic"
    timings = DIASTOLIC_TIMINGS if phase == "Diastolic" else SYSTOLIC_TIMINGS
    top = MAX_GRADE_DIASTOLIC if phase == "Diastolic" else MAX_GRADE_SYSTOLIC
    attrs = {
        "timing": _map_choice("timing", fields.get(f"{phase} murmur timing"), timings, where, problems),
        "shape": _map_choice("shape", fields.get(f"{phase} murmur shape"), SHAPES, where, problems),
        "grade": _map_grade(fields.get(f"{phase} murmur grading"), top, where, problems),
        "pitch": _map_choice("pitch", fields.get(f"{phase} murmur pitch"), PITCHES, where, problems),
        "quality": _map_choice("quality", fields.get(f"{phase} murmur quality"), QUALITIES, where, problems),
    }
    return attrs, (("diastolic_dropped",) if systolic and diastolic else ())


def _patient(header: _Header, problems: list[Problem]) -> Patient:
    where = f"{header.patient_id}.txt"
    f = header.fields
    status = _map_choice("Murmur", f.get("Murmur"), MURMUR_STATUSES, where, problems)
    if status is None:
        if f.get("Murmur") is None:
            problems.append(Problem("bad_value", where, "Murmur label missing; treated as unknown"))
        status = "unknown"
    locs = tuple(p for p in (f.get("Murmur locations") or "").split("+") if p)
    missing = tuple(k for k in _KNOWN_FIELDS if f.get(k) is None)
    demographics = dict(
        age_group=_map_choice("Age", f.get("Age"), AGE_GROUPS, where, problems),
        sex=_map_choice("Sex", f.get("Sex"), SEXES, where, problems),
        height_cm=_parse_float("Height", f.get("Height"), 1.0, 250.0, where, problems),
        weight_kg=_parse_float("Weight", f.get("Weight"), 0.1, 300.0, where, problems),
        pregnant=_parse_bool("Pregnancy status", f.get("Pregnancy status"), where, problems),
    )
    murmur, murmur_flags = _murmur_attributes(f, where, problems) if status == "present" else ({}, ())
    return Patient(header.patient_id, status, locs, f.get("Most audible location"),
                   tuple(Path(a).stem for _, a, _ in header.lines), dict(f), missing, header.sample_rate,
                   demographics, murmur, murmur_flags)


def _recording(patient: Patient, loc: str, audio_name: str, tsv_name: str, root: Path,
               problems: list[Problem]) -> Recording:
    stem = Path(audio_name).stem
    flags: list[str] = []
    audio_path = next((root / (stem + ext) for ext in AUDIO_EXTENSIONS if (root / (stem + ext)).is_file()), None)
    if audio_path is None:
        problems.append(Problem("missing_audio", stem, f"neither {stem}.wav nor {stem}.flac exists"))
    tsv_path = root / tsv_name
    seg = hr = None
    if not tsv_path.is_file():
        problems.append(Problem("missing_tsv", stem, f"{tsv_name} does not exist; no segmentation"))
        tsv_path = None
    else:
        seg, why = parse_segmentation(tsv_path)
        if seg is None:
            problems.append(Problem("empty_tsv" if why == "empty segmentation" else "bad_tsv", tsv_name, why))
        else:
            hr = heart_rate_from_segmentation(seg)
            if hr is not None and not HEART_RATE_RANGE[0] <= hr <= HEART_RATE_RANGE[1]:
                problems.append(Problem("heart_rate_out_of_range", tsv_name,
                                        f"{hr:.1f} bpm outside {HEART_RATE_RANGE}; treated as unknown"))
                hr = None
    if seg is None:
        flags.append("no_segmentation")
    if hr is None:
        flags.append("heart_rate_unknown")

    location = loc if loc in LOCATIONS else None
    if location is None:
        flags.append("location_unmapped")
        kind = "unmapped_location" if loc in UNMAPPED_LOCATIONS else "bad_value"
        problems.append(Problem(kind, stem, f"location {loc!r} is not one of {', '.join(LOCATIONS)}; kept with location None"))
    if loc == patient.most_audible_location:
        flags.append("most_audible")

    murmur = dict(timing=None, shape=None, grade=None, pitch=None, quality=None)
    if patient.murmur_status == "present" and loc in patient.murmur_locations:
        status = "present"
        murmur.update(patient.murmur)
        flags.extend(patient.murmur_flags)
    elif patient.murmur_status == "present":
        status = "absent"
        flags.append("murmur_elsewhere")
    else:
        status = patient.murmur_status
        if status == "unknown":
            flags.append("murmur_unknown")

    demo = patient.demographics
    findings = Findings(murmur="present" if status == "present" else "absent", location=location,
                        heart_rate=float("nan") if hr is None else round(hr, 1), **murmur, **demo)
    missing = [k for k, v in demo.items() if v is None]
    if status == "present":
        missing += [k for k, v in murmur.items() if v is None]
    return Recording(stem, patient.patient_id, location, audio_path, tsv_path, findings, seg, hr,
                     raw_location=loc, murmur_status=status, flags=tuple(flags), missing=tuple(missing))


def load_circor(root: str | Path) -> CirCorIndex:
    """Index a CirCor-layout directory. Raises only if `root` is not a directory with patient headers;
    everything else odd is listed in `.problems` and the load goes on."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CirCor root {str(root)!r} is not a directory")
    problems: list[Problem] = []
    headers, not_headers = [], set()
    for path in sorted(root.glob("*.txt")):
        header = _read_header(path, problems)
        if header is None:
            not_headers.add(path.name)
        else:
            headers.append(header)
    if not headers:
        raise FileNotFoundError(f"CirCor root {str(root)!r} holds no patient headers (<id>.txt)")
    csv_rows = _read_csv(root / CSV_NAME, problems) if (root / CSV_NAME).is_file() else {}
    for h in headers:
        if h.patient_id in csv_rows:
            _merge_csv(h, csv_rows[h.patient_id], problems)
    for pid in sorted(set(csv_rows) - {h.patient_id for h in headers}):
        problems.append(Problem("csv_only_patient", CSV_NAME, f"patient {pid} has no {pid}.txt header; skipped"))

    patients: dict[str, Patient] = {}
    recordings: list[Recording] = []
    used = {CSV_NAME}
    seen_stems: set[str] = set()
    for h in sorted(headers, key=lambda h: h.patient_id):
        if h.patient_id in patients:
            problems.append(Problem("bad_header", f"{h.patient_id}.txt", "duplicate patient id; skipped"))
            continue
        patient = _patient(h, problems)
        patients[h.patient_id] = patient
        used.add(f"{h.patient_id}.txt")
        for loc, audio_name, tsv_name in h.lines:
            stem = Path(audio_name).stem
            if stem in seen_stems:
                problems.append(Problem("bad_header", f"{h.patient_id}.txt", f"recording {stem} listed twice; skipped"))
                continue
            seen_stems.add(stem)
            rec = _recording(patient, loc, audio_name, tsv_name, root, problems)
            recordings.append(rec)
            used.update({tsv_name, f"{stem}.hea"})
            if rec.audio_path is not None:
                used.add(rec.audio_path.name)
                others = [stem + e for e in AUDIO_EXTENSIONS if stem + e != rec.audio_path.name
                          and (root / (stem + e)).is_file()]
                for other in others:
                    used.add(other)
                    problems.append(Problem("duplicate_audio", other, f"{rec.audio_path.name} is used instead"))
    for path in sorted(root.iterdir()):
        if path.name not in used and path.name not in not_headers:
            what = "a folder" if path.is_dir() else "a file"
            problems.append(Problem("unknown_file", path.name, f"{what} no patient header refers to; ignored"))
    return CirCorIndex(patients, recordings, problems, root)


# ---- patient-level split -------------------------------------------------------------------

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
MANIFEST_VERSION = 1


def split_patients(index: CirCorIndex, seed: int = 0,
                   fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, list[str]]:
    """Patient ids -> {"train", "val", "test"}: 70/15/15 within each murmur status, deterministic.

    Order within a stratum is by sha256(seed:patient id), so the split depends only on the
    ids and the seed (not on library versions or directory order)."""
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1; got {fractions}")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for status in MURMUR_STATUSES:
        ids = sorted((p for p, pat in index.patients.items() if pat.murmur_status == status),
                     key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        n_train = round(fractions[0] * len(ids))
        n_val = round(fractions[1] * len(ids))
        out["train"] += ids[:n_train]
        out["val"] += ids[n_train:n_train + n_val]
        out["test"] += ids[n_train + n_val:]
    return {s: sorted(v) for s, v in out.items()}


def _index_hash(index: CirCorIndex) -> str:
    text = "\n".join(f"{p} {pat.murmur_status}" for p, pat in sorted(index.patients.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _split_hash(split: dict[str, list[str]]) -> str:

    return hashlib.sha256(json.dumps({s: split[s] for s in SPLITS}, sort_keys=True).encode()).hexdigest()


def manifest_path(index: CirCorIndex, seed: int = 0) -> Path:
    """Where the split of this set of patients lives: in the cache, keyed by the patients and labels."""
    return cache_dir() / "splits" / f"circor-seed{seed}-{_index_hash(index)[:16]}.json"


def save_split(index: CirCorIndex, split: dict[str, list[str]], seed: int = 0) -> Path:
    """Write the manifest (patient ids only + hashes) atomically; returns its path."""

    path = manifest_path(index, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": MANIFEST_VERSION, "seed": seed, "fractions": list(SPLIT_FRACTIONS),
           "index_sha256": _index_hash(index), "split_sha256": _split_hash(split),
           "counts": {s: len(split[s]) for s in SPLITS}, **{s: split[s] for s in SPLITS}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)
    return path


def load_or_make_split(index: CirCorIndex, seed: int = 0) -> dict[str, list[str]]:
    """The saved split of these patients if its manifest checks out, else a fresh one, saved."""

    path = manifest_path(index, seed)
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
            split = {s: list(doc[s]) for s in SPLITS}
            ok = (doc["split_sha256"] == _split_hash(split) and doc["index_sha256"] == _index_hash(index)
                  and sorted(sum(split.values(), [])) == sorted(index.patients))
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            return split
    split = split_patients(index, seed)
    save_split(index, split, seed)
    return split
