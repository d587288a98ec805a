"""Clinical vocabulary of H-LDM Studio: the values a clinician can pick, and `Findings`.

Pure Python (no torch). Values are lower-case canonical strings; `display()` gives
the form a cardiologist reads ("Grade III/VI", "mitral area"). Everything that
accepts findings (prompt builder, simulator, dataset, pipeline, app) uses these
tuples, so an unknown value is refused in one place (`hldm.clinical.validation`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

SAMPLE_RATE = 4000  # Hz, CirCor's native rate; every waveform in the project is at this rate

# Levine scale: I-VI for systolic murmurs, I-IV for diastolic ones.
ROMAN = ("I", "II", "III", "IV", "V", "VI")
MAX_GRADE_SYSTOLIC = 6
MAX_GRADE_DIASTOLIC = 4

MURMUR_STATUS = ("absent", "present")

SYSTOLIC_TIMINGS = ("early-systolic", "mid-systolic", "late-systolic", "holosystolic")
DIASTOLIC_TIMINGS = ("early-diastolic", "mid-diastolic", "holodiastolic")
CONTINUOUS_TIMINGS = ("continuous",)
TIMINGS = SYSTOLIC_TIMINGS + DIASTOLIC_TIMINGS + CONTINUOUS_TIMINGS

SHAPES = ("crescendo", "decrescendo", "diamond", "plateau")  # diamond = crescendo-decrescendo
PITCHES = ("low", "medium", "high")
QUALITIES = ("blowing", "harsh", "rumbling", "musical")
LOCATIONS = ("AV", "PV", "TV", "MV")  # aortic, pulmonic, tricuspid, mitral auscultation areas
RADIATIONS = ("none", "axilla", "carotids", "back", "apex", "left sternal border")
EXTRA_SOUNDS = ("ejection click", "midsystolic click", "opening snap", "fixed split S2", "S3", "S4")

AGE_GROUPS = ("neonate", "infant", "child", "adolescent", "young adult", "adult", "older adult")
SEXES = ("female", "male")

HEART_RATE_RANGE = (40.0, 200.0)  # bpm accepted anywhere in the product
HEIGHT_RANGE_CM = (30.0, 220.0)
WEIGHT_RANGE_KG = (1.0, 250.0)

# The 17 disease nodes of the knowledge graph (DESIGN.md), canonical ids.
CONDITIONS = (
    "normal",
    "innocent murmur",
    "aortic stenosis",
    "pulmonary stenosis",
    "mitral regurgitation",
    "tricuspid regurgitation",
    "ventricular septal defect",
    "atrial septal defect",
    "patent ductus arteriosus",
    "mitral valve prolapse",
    "hypertrophic obstructive cardiomyopathy",
    "aortic regurgitation",
    "pulmonary regurgitation",
    "mitral stenosis",
    "tricuspid stenosis",
    "coarctation of the aorta",
    "tetralogy of Fallot",
)

# Where a training window came from (Model v2's source tag); sampling asks for "real".
SOURCES = ("real", "augmented", "simulated")
WINDOW_SOURCES = {"circor": "real", "augmented": "augmented", "sim": "simulated"}  # WindowItem "source" -> tag

LOCATION_NAMES = {"AV": "aortic area", "PV": "pulmonic area", "TV": "tricuspid area", "MV": "mitral area"}

# The four latent subspaces of the MS-VAE, in channel order (DESIGN.md "Signal and latent").
SUBSPACES = ("rhythm", "s1s2", "murmur", "noise")

# The subspaces a change of each findings field may move. A what-if holds the others to the
# unedited clip's, so a grade edit cannot shift S1/S2 or the heart rate. Murmur edits free the
# noise subspace too: the MS-VAE files part of a murmur's noise-like energy there. Measured on
# the shipped model (2 murmurs x 2 seeds, grade I..VI): holding noise as well shrank the I->VI
# murmur-band swing from 3.4 to 1.2 dB; holding rhythm and S1/S2 only kept 2.5 dB with S1/S2
# onsets within 9.5 ms and the heart rate within 1.4 bpm of the unedited clip. Fields not
# listed (heart rate, condition, demographics) may move every subspace.
_MURMUR = ("murmur", "noise")
FIELD_SUBSPACES = {
    **{name: _MURMUR for name in ("murmur", "timing", "shape", "grade", "pitch", "quality", "radiation")},
    "extra_sounds": ("s1s2", *_MURMUR),  # S3/S4, clicks and snaps sit between the heart sounds
    "location": ("s1s2", *_MURMUR),  # the site sets the S1/S2 balance and the murmur's loudness
}


def held_subspaces(changed_fields) -> tuple[str, ...]:
    """The subspaces (SUBSPACES order) that an edit of `changed_fields` must leave as they were."""
    free: set[str] = set()
    for name in changed_fields:
        if name not in FIELD_SUBSPACES:
            return ()
        free.update(FIELD_SUBSPACES[name])
    return tuple(s for s in SUBSPACES if s not in free)


def timing_phase(timing: str) -> str:
    """'systolic', 'diastolic' or 'continuous' for a timing value."""
    if timing in SYSTOLIC_TIMINGS:
        return "systolic"
    if timing in DIASTOLIC_TIMINGS:
        return "diastolic"
    if timing in CONTINUOUS_TIMINGS:
        return "continuous"
    raise ValueError(f"timing: unknown value {timing!r}; allowed: {', '.join(TIMINGS)}")


def max_grade(timing: str) -> int:
    """Highest Levine grade for a timing: VI systolic/continuous, IV diastolic."""
    return MAX_GRADE_DIASTOLIC if timing_phase(timing) == "diastolic" else MAX_GRADE_SYSTOLIC


def grade_label(grade: int, timing: str) -> str:
    """'III/VI' for a systolic grade 3, 'II/IV' for a diastolic grade 2."""
    return f"{ROMAN[grade - 1]}/{ROMAN[max_grade(timing) - 1]}"


@dataclass(frozen=True)
class Findings:
    """One auscultation finding set: what the clinician asks the generator for.

    Murmur fields are None when `murmur == "absent"`. `grade` is an int 1..6
    (Levine); validation (hldm.clinical.validation.validate) enforces ranges and
    coherence. `condition` is optional: when set, the prompt builder and the app
    pre-fill and cross-check findings against the knowledge graph.
    """

    murmur: str = "absent"
    timing: str | None = None
    shape: str | None = None
    grade: int | None = None
    pitch: str | None = None
    quality: str | None = None
    location: str = "MV"  # where the recording is taken / murmur loudest
    radiation: str = "none"
    extra_sounds: tuple[str, ...] = ()
    condition: str | None = None
    heart_rate: float = 80.0
    age_group: str = "child"
    sex: str = "female"
    height_cm: float | None = None
    weight_kg: float | None = None
    pregnant: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra_sounds"] = list(self.extra_sounds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Findings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown findings field(s) {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        if "extra_sounds" in d and d["extra_sounds"] is not None:
            d["extra_sounds"] = tuple(d["extra_sounds"])
        return cls(**d)

    def with_(self, **changes) -> "Findings":
        """A copy with some fields changed (what-if edits)."""
        return replace(self, **changes)


# Other spellings of each value (CirCor headers, abbreviations, bedside synonyms) -> canonical
# value. Keys are compared after `value_key` (case, spaces, hyphens and underscores ignored),
# so "Holosystolic", "early systolic" and "Early-systolic" need no entry of their own.
ALIASES: dict[str, dict[str, str]] = {
    "murmur": {"yes": "present", "true": "present", "no": "absent", "false": "absent",
               "no murmur": "absent", "none": "absent"},
    "timing": {"pansystolic": "holosystolic", "holosystole": "holosystolic",
               "ejection systolic": "mid-systolic", "systolic ejection": "mid-systolic",
               "pandiastolic": "holodiastolic", "machinery": "continuous"},
    "shape": {"crescendo-decrescendo": "diamond", "ejection": "diamond", "diamond-shaped": "diamond",
              "uniform": "plateau", "flat": "plateau", "band-shaped": "plateau",
              "diminuendo": "decrescendo", "decrescendo-only": "decrescendo"},
    "pitch": {"mid": "medium", "high-pitched": "high", "medium-pitched": "medium",
              "low-pitched": "low", "high-frequency": "high", "low-frequency": "low"},
    "quality": {"blow": "blowing", "rumble": "rumbling", "vibratory": "musical", "coarse": "harsh",
                "rough": "harsh", "honking": "musical"},
    "location": {"aortic": "AV", "aortic area": "AV", "right upper sternal border": "AV", "rusb": "AV",
                 "pulmonic": "PV", "pulmonary": "PV", "pulmonic area": "PV", "pulmonary area": "PV",
                 "left upper sternal border": "PV", "lusb": "PV",
                 "tricuspid": "TV", "tricuspid area": "TV", "left lower sternal border": "TV",
                 "llsb": "TV", "mitral": "MV", "mitral area": "MV", "apex": "MV", "apical": "MV",
                 "cardiac apex": "MV"},
    "radiation": {"no radiation": "none", "non-radiating": "none", "nil": "none",
                  "axillary": "axilla", "left axilla": "axilla", "carotid": "carotids",
                  "neck": "carotids", "interscapular": "back", "between the scapulae": "back",
                  "cardiac apex": "apex", "lsb": "left sternal border", "sternal border": "left sternal border"},
    "extra_sounds": {"mid-systolic click": "midsystolic click", "nonejection click": "midsystolic click",
                     "systolic click": "midsystolic click", "snap": "opening snap",
                     "fixed splitting of s2": "fixed split S2", "fixed split second heart sound": "fixed split S2",
                     "fixed splitting": "fixed split S2", "third heart sound": "S3",
                     "fourth heart sound": "S4"},
    "age_group": {"newborn": "neonate", "teenager": "adolescent", "elderly": "older adult"},
    "sex": {"f": "female", "m": "male", "woman": "female", "man": "male", "girl": "female", "boy": "male"},
    "condition": {"still's murmur": "innocent murmur", "stills murmur": "innocent murmur",
                  "innocent": "innocent murmur", "functional murmur": "innocent murmur",
                  "as": "aortic stenosis", "ps": "pulmonary stenosis", "mr": "mitral regurgitation",
                  "tr": "tricuspid regurgitation", "vsd": "ventricular septal defect",
                  "asd": "atrial septal defect", "pda": "patent ductus arteriosus",
                  "mvp": "mitral valve prolapse", "hocm": "hypertrophic obstructive cardiomyopathy",
                  "ar": "aortic regurgitation", "pr": "pulmonary regurgitation",
                  "ms": "mitral stenosis", "ts": "tricuspid stenosis",
                  "coarctation": "coarctation of the aorta", "coa": "coarctation of the aorta",
                  "tof": "tetralogy of Fallot", "fallot": "tetralogy of Fallot"},
}

# How each value reads in prose (prompts, app labels); values not listed read as themselves.
SHAPE_NAMES = {"diamond": "crescendo-decrescendo"}
RADIATION_NAMES = {"none": "without radiation", "axilla": "the axilla", "carotids": "the carotids",
                   "back": "the back", "apex": "the apex", "left sternal border": "the left sternal border"}
GRADE_BANDS = {"soft": (1, 2), "moderate": (3, 3), "loud": (4, 6)}  # loud = palpable thrill (Levine IV+)


def value_key(value: str) -> str:
    """Comparison key for vocabulary values: lower case, spaces/hyphens/underscores dropped."""
    return "".join(ch for ch in str(value).lower() if ch not in " -_\t")


def grade_band(grade: int) -> str:
    """'soft' (I-II), 'moderate' (III) or 'loud' (IV-VI, with a thrill)."""
    return next(name for name, (lo, hi) in GRADE_BANDS.items() if lo <= grade <= hi)
