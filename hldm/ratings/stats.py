"""Statistics of stored rating answers: clinical validity, detection accuracy, agreement, kappa.

- Clinical validity (CV): share of answers on synthetic clips rated plausible >= 4 (of 5),
  the H-LDM paper's CV definition (87.1 % from five cardiologists), Wilson 95 % interval.
- Detection accuracy: share of answers that named the source right (real vs synthetic),
  Wilson 95 % interval; 50 % means readers cannot tell them apart. Only when both sources occur.
- Attribute agreement: what readers heard vs what was requested (synthetic) or annotated
  (real, CirCor labels): murmur yes/no on every clip; timing and grade on clips whose truth
  has a murmur with that attribute known (an answer "absent" or "not sure" counts as a miss);
  location on clips whose truth has one.
- Inter-reader agreement on clips heard by several readers (same clip key): Cohen's kappa
  when exactly two readers rated them, Fleiss' kappa for three or more.
Answers count one each; a reader's repeated hearing of a clip in another session counts again.
"""
from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hldm.ratings.store import AnswerRow

Z95 = 1.959963984540054
PLAUSIBLE = 4  # plausibility >= this counts as clinically valid
ATTRIBUTES = ("murmur", "timing", "grade", "grade ±1", "location")
SOURCES = ("synthetic", "real")

# Inter-reader questions: each answer -> a nominal category.
QUESTIONS: dict[str, Callable[[AnswerRow], Hashable]] = {
    "real or synthetic": lambda r: r.said_real,
    f"plausible (>= {PLAUSIBLE})": lambda r: r.plausibility >= PLAUSIBLE,
    "murmur": lambda r: r.murmur,
    "grade": lambda r: r.grade,
}


@dataclass(frozen=True)
class Proportion:
    """k successes of n, with the Wilson score interval."""

    k: int
    n: int

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def __str__(self) -> str:
        if not self.n:
            return "n/a (0 answers)"
        lo, hi = self.ci
        return f"{100 * self.p:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] ({self.k}/{self.n})"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k of n (Wilson 1927); (nan, nan) for n = 0."""
    if not 0 <= k <= n:
        raise ValueError(f"k: {k} must be within 0..n={n}")
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)  # exact ends, no rounding


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two readers' nominal ratings of the same items (nan when chance agreement is 1)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"ratings: need two equally long non-empty sequences; got {len(a)} and {len(b)}")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    return math.nan if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, categories) table of how many readers chose each category;
    every item needs the same number (>= 2) of ratings. nan when chance agreement is 1."""
    t = np.asarray(counts, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"counts: expected a non-empty (items, categories) table; got shape {t.shape}")
    m = t.sum(axis=1)
    if np.any(m != m[0]) or m[0] < 2:
        raise ValueError(f"counts: every item needs the same number (>= 2) of ratings; got {sorted(set(m.tolist()))}")
    m = m[0]
    p_j = t.sum(axis=0) / t.sum()
    p_i = ((t * t).sum(axis=1) - m) / (m * (m - 1))
    p_bar, p_e = p_i.mean(), float((p_j ** 2).sum())
    return math.nan if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


@dataclass(frozen=True)
class Kappa:
    method: str  # "Cohen" or "Fleiss"
    value: float
    n_clips: int
    n_readers: int

    def __str__(self) -> str:
        v = "n/a (one category only)" if math.isnan(self.value) else f"{self.value:.3f}"
        return f"{self.method} κ = {v} ({self.n_clips} clips, {self.n_readers} readers)"


def inter_reader_kappa(rows: Sequence[AnswerRow], question: Callable[[AnswerRow], Hashable]) -> Kappa | None:
    """Kappa over clips rated by several readers (each reader's first answer per clip). Uses the clips
    rated by the most common number m >= 2 of readers, so every clip has m ratings; Cohen's when
    m = 2 and the same two readers rated all of them, Fleiss' otherwise. None when no clip has two readers."""
    by_clip: dict[str, dict[str, Hashable]] = defaultdict(dict)
    for r in rows:
        by_clip[r.clip_key].setdefault(r.reader, question(r))
    shared = {k: v for k, v in by_clip.items() if len(v) >= 2}
    if not shared:
        return None
    m = Counter(len(v) for v in shared.values()).most_common(1)[0][0]
    items = [v for v in shared.values() if len(v) == m]
    readers = set().union(*(v.keys() for v in items))
    if m == 2 and len(readers) == 2:
        ra, rb = sorted(readers)
        return Kappa("Cohen", cohen_kappa([v[ra] for v in items], [v[rb] for v in items]), len(items), 2)
    cats = sorted({c for v in items for c in v.values()}, key=repr)
    counts = np.array([[list(v.values()).count(c) for c in cats] for v in items])
    return Kappa("Fleiss", fleiss_kappa(counts), len(items), len(readers))


# ---------------------------------------------------------------- per-answer measures

def clinical_validity(rows: Sequence[AnswerRow]) -> Proportion:
    synth = [r for r in rows if r.source == "synthetic"]
    return Proportion(sum(r.plausibility >= PLAUSIBLE for r in synth), len(synth))


def detection_accuracy(rows: Sequence[AnswerRow]) -> Proportion | None:
    """Share of answers naming the right source; None unless both real and synthetic clips were rated."""
    if {r.source for r in rows} != set(SOURCES):
        return None
    return Proportion(sum(r.said_real == (r.source == "real") for r in rows), len(rows))


def _agrees(r: AnswerRow, attribute: str) -> bool | None:
    """Whether the answer matches the truth on an attribute; None when the attribute does not apply."""
    t = r.truth
    if attribute == "murmur":
        return r.murmur == t.get("murmur")
    if attribute == "location":
        return None if t.get("location") is None else r.location == t["location"]
    if t.get("murmur") != "present":
        return None
    if attribute == "timing":
        return None if t.get("timing") is None else r.timing == t["timing"]
    if t.get("grade") is None:
        return None
    if attribute == "grade":
        return r.grade == t["grade"]
    return r.grade is not None and abs(r.grade - t["grade"]) <= 1  # "grade ±1"


def attribute_agreement(rows: Sequence[AnswerRow]) -> dict[str, Proportion]:
    out = {}
    for a in ATTRIBUTES:
        hits = [x for x in (_agrees(r, a) for r in rows) if x is not None]
        out[a] = Proportion(sum(hits), len(hits))
    return out


# ---------------------------------------------------------------- report

@dataclass
class Report:
    n_answers: int
    readers: list[str]
    n_sessions: int
    n_clips: int  # distinct clips heard
    clinical_validity: Proportion
    detection: Proportion | None
    agreement: dict[str, dict[str, Proportion]]  # source -> attribute -> agreement
    kappas: dict[str, Kappa | None]
    per_reader: dict[str, tuple[Proportion, Proportion | None]] = field(default_factory=dict)  # CV, detection


def make_report(rows: Sequence[AnswerRow]) -> Report:
    readers = sorted({r.reader for r in rows})
    by_reader = {name: [r for r in rows if r.reader == name] for name in readers}
    return Report(
        n_answers=len(rows), readers=readers, n_sessions=len({r.session_id for r in rows}),
        n_clips=len({r.clip_key for r in rows}), clinical_validity=clinical_validity(rows),
        detection=detection_accuracy(rows),
        agreement={s: attribute_agreement([r for r in rows if r.source == s]) for s in SOURCES},
        kappas={q: inter_reader_kappa(rows, f) for q, f in QUESTIONS.items()},
        per_reader={name: (clinical_validity(rs), detection_accuracy(rs)) for name, rs in by_reader.items()})


def report_markdown(report: Report, title: str = "Rating report") -> str:
    """The report as Markdown tables (CLI and app)."""
    r = report
    if not r.n_answers:
        return f"## {title}\n\nNo answers stored yet."
    det = r.detection
    verdict = ""
    if det is not None:
        lo, hi = det.ci
        verdict = (" — readers could not tell real from synthetic (50 % inside the interval)" if lo <= 0.5 <= hi
                   else " — readers told real from synthetic better than chance" if lo > 0.5
                   else " — readers confused the sources more often than chance")
    lines = [f"## {title}", "",
             f"{r.n_answers} answers from {len(r.readers)} reader(s) ({', '.join(r.readers)}), "
             f"{r.n_sessions} session(s), {r.n_clips} distinct clips.", "",
             "| measure | value [95 % CI] (k/n) |", "|---|---|",
             f"| Clinical validity (synthetic rated plausible >= {PLAUSIBLE}) | {r.clinical_validity} |",
             f"| Real-vs-synthetic detection accuracy (50 % = indistinguishable) | "
             f"{det if det is not None else 'n/a (needs real and synthetic clips)'} |", ""]
    if verdict:
        lines += [f"Detection{verdict}.", ""]
    lines += ["### Heard vs requested (synthetic) / annotated (real)", "",
              "| attribute | synthetic | real |", "|---|---|---|"]
    lines += [f"| {a} | {r.agreement['synthetic'][a]} | {r.agreement['real'][a]} |" for a in ATTRIBUTES]
    lines += ["", "### Inter-reader agreement", "", "| question | kappa |", "|---|---|"]
    lines += [f"| {q} | {k if k is not None else 'n/a (no clip rated by two readers)'} |" for q, k in r.kappas.items()]
    if len(r.readers) > 1:
        lines += ["", "### Per reader", "", "| reader | clinical validity | detection accuracy |", "|---|---|---|"]
        lines += [f"| {name} | {cv} | {det if det is not None else 'n/a'} |"
                  for name, (cv, det) in r.per_reader.items()]
    return "\n".join(lines)


CSV_COLUMNS = ("answer_id", "session_id", "reader", "source", "real_id", "seed", "checkpoint", "said_real",
               "source_correct", "plausibility", "murmur", "timing", "grade", "location", "answered_at",
               "truth_murmur", "truth_timing", "truth_grade", "truth_location", "truth_condition")


def write_csv(rows: Sequence[AnswerRow], path: str | Path) -> Path:
    """One line per answer with the clip's truth, for analysis elsewhere."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({"answer_id": r.answer_id, "session_id": r.session_id, "reader": r.reader, "source": r.source,
                        "real_id": r.real_id, "seed": r.seed, "checkpoint": r.checkpoint,
                        "said_real": int(r.said_real), "source_correct": int(r.said_real == (r.source == "real")),
                        "plausibility": r.plausibility, "murmur": r.murmur, "timing": r.timing, "grade": r.grade,
                        "location": r.location, "answered_at": r.answered_at,
                        **{f"truth_{k}": r.truth.get(k) for k in ("murmur", "timing", "grade", "location",
                                                                  "condition")}})
    return path
