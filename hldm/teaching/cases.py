"""Course cases: which findings and seeds a practice case, a screening test or a drill uses, and the
verification gate every model clip passes before a learner hears it.

The gate: the project's evaluator (checkpoints/evaluator, hldm.models.evaluator) reads the clip
back: murmur present or absent, the murmur's phase (systolic / diastolic / continuous) from its
timing head, and the grade band (soft I-II / moderate III / loud IV+) when it is confident about
it. A clip that disagrees with its findings is drawn again with the next seed, MAX_TRIES in all;
then the case falls back to the physiological simulator (exact labels by construction) and says
so. Every try is kept on the case, so acceptance per condition is a count over cases.

Everything is a function of (model, findings, seed): the same plan regenerates the same audio,
which is what case sets and the render cache stand on.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hldm.audio.io import pcm16
from hldm.clinical import vocabulary as V
from hldm.clinical.validation import validate_dict
from hldm.data.simulator import sample_findings, simulate
from hldm.teaching.scoring import Drill, drill_question, swapped

CASE_SECONDS = 6.0  # five to eight beats: enough to hear a pattern, short enough to replay
MAX_TRIES = 3  # model draws per case before the simulator stands in
SCREENING_CASES = 20
MURMUR_THRESHOLD = 0.5  # evaluator P(murmur present) at or above which it hears a murmur
GRADE_CONFIDENT = 0.6  # the grade band is checked only when the evaluator puts this much on one band
SEED_RANGE = 2**31 - MAX_TRIES  # a case seed leaves room for its retries below 2**31
DRILL_ATTRIBUTES = ("grade", "timing", "category")
Interval = tuple[float, float, str]


def model_id(pipe) -> str:
    """A short fingerprint of the pipeline's weights and config: "hldm-" + 16 hex of a sha256. Two apps
    with the same id regenerate the same case from the same findings and seed."""
    h = hashlib.sha256(json.dumps(pipe.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(pipe.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "hldm-" + h.hexdigest()[:16]


def clip_hash(audio: np.ndarray) -> str:
    """sha256 of a clip (N,) as the 16-bit PCM a WAV of it holds (int16 input taken as such): the
    identity a case set stores."""
    pcm = audio if np.asarray(audio).dtype == np.int16 else pcm16(audio)
    return hashlib.sha256(np.asarray(pcm).astype("<i2").tobytes()).hexdigest()


# ----------------------------------------------------------------------------- plans

@dataclass(frozen=True)
class CaseSpec:
    """What a case is before it is rendered: validated findings (Findings.to_dict()) and a seed."""

    findings: dict
    seed: int

    @classmethod
    def of(cls, findings: Mapping, seed: int) -> "CaseSpec":
        """Validated (FindingsError names a bad field) and in canonical dict form."""
        seed = int(seed)
        if not 0 <= seed < SEED_RANGE:
            raise ValueError(f"seed: {seed} out of range; allowed 0..{SEED_RANGE - 1}")
        return cls(validate_dict(dict(findings)).to_dict(), seed)

    def to_json(self) -> dict:
        return {"findings": self.findings, "seed": self.seed}


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(SEED_RANGE))


def practice_spec(seed: int, condition: str | None = None) -> CaseSpec:
    """One practice case: a condition (uniform over the 17 unless given) with findings from its profile."""
    rng = np.random.default_rng([0x0CA5E, int(seed)])
    return CaseSpec.of(sample_findings(rng, condition).to_dict(), _seed(rng))


def set_specs(conditions: Sequence[str], seed: int) -> list[CaseSpec]:
    """One case per listed condition (its profile's findings), in order, fixed by `seed`."""
    rng = np.random.default_rng([0x5E7, int(seed)])
    return [CaseSpec.of(sample_findings(rng, c).to_dict(), _seed(rng)) for c in conditions]


def screening_specs(seed: int) -> list[CaseSpec]:
    """The screening test of a seed: SCREENING_CASES cases, every condition once plus a second normal,
    a second innocent and one more drawn at random (screening is about telling those from disease),
    shuffled. The same seed gives the same test, whoever takes it and whenever."""
    rng = np.random.default_rng([0x5C4EE, int(seed)])
    extra = ["normal", "innocent murmur", V.CONDITIONS[int(rng.integers(len(V.CONDITIONS)))]]
    conditions = list(V.CONDITIONS) + extra
    assert len(conditions) == SCREENING_CASES
    return [CaseSpec.of(sample_findings(rng, c).to_dict(), _seed(rng)) for c in rng.permutation(conditions)]


def drill_plan(attribute: str, seed: int) -> tuple[dict, dict, Drill]:
    """A contrast drill: (findings, change) for `pipe.what_if` and the question it asks, the two sides
    in an order fixed by `seed`. grade: one murmur at II vs IV; timing: the same murmur in systole vs
    diastole; category: an innocent murmur vs the same murmur at grade IV (a thrill is never innocent)."""
    if attribute not in DRILL_ATTRIBUTES:
        raise ValueError(f"drill: unknown {attribute!r}; allowed: {', '.join(DRILL_ATTRIBUTES)}")
    rng = np.random.default_rng([0xD211, int(seed)])
    if attribute == "grade":
        base = sample_findings(rng, str(rng.choice(["aortic stenosis", "mitral regurgitation",
                                                    "ventricular septal defect", "pulmonary stenosis"])))
        a, change = base.with_(grade=2), {"grade": 4}
    elif attribute == "timing":
        base = sample_findings(rng, "mitral regurgitation")
        a = base.with_(condition=None, timing="mid-systolic", shape="diamond", grade=min(base.grade, 3))
        change = {"timing": "mid-diastolic"}
    else:
        a = sample_findings(rng, "innocent murmur").with_(murmur="present", timing="mid-systolic", shape="diamond",
                                                          grade=2, pitch="low", quality="musical")
        change = {"grade": 4, "condition": None}
    a = validate_dict(a.to_dict()).to_dict()
    b = validate_dict({**a, **change}).to_dict()
    drill = drill_question(attribute, a, b)
    return a, change, (swapped(drill) if rng.random() < 0.5 else drill)


# ----------------------------------------------------------------------------- verification gate

@dataclass(frozen=True)
class Reading:
    """What the evaluator hears in a clip: P(murmur), the most likely murmur phase and grade band with
    their probabilities (phase/band None when it hears no murmur)."""

    murmur_p: float
    phase: str | None = None
    phase_p: float = 0.0
    grade_band: str | None = None
    band_p: float = 0.0


class Verifier(Protocol):
    def read(self, audio: np.ndarray) -> Reading: ...


class EvaluatorVerifier:
    """The project's evaluator as the gate's ear (a PCGEvaluator, e.g. `load_evaluator(...)`)."""

    def __init__(self, model):
        self.model = model.eval()

    def read(self, audio: np.ndarray) -> Reading:
        from hldm.eval.evaluator_training import clip_features, predict
        from hldm.models.evaluator import HEAD_CLASSES

        _, probs = predict(self.model, clip_features(np.asarray(audio, dtype=np.float32)[None]))
        murmur_p = float(probs["murmur"][0, 1])
        timing = dict(zip(HEAD_CLASSES["timing"], probs["timing"][0]))
        by_phase = {p: sum(float(v) for t, v in timing.items() if t != "none" and V.timing_phase(t) == p)
                    for p in ("systolic", "diastolic", "continuous")}
        grade = dict(zip(HEAD_CLASSES["grade"], probs["grade"][0]))
        by_band = {b: sum(float(grade[g]) for g in range(lo, hi + 1)) for b, (lo, hi) in V.GRADE_BANDS.items()}
        phase, band = max(by_phase, key=by_phase.get), max(by_band, key=by_band.get)
        # Phase and band are read among murmur classes only, so renormalise them off the "none" class.
        heard = max(1.0 - float(timing["none"]), 1e-9), max(1.0 - float(grade["none"]), 1e-9)
        return Reading(murmur_p, phase, by_phase[phase] / heard[0], band, by_band[band] / heard[1])


def problems(reading: Reading, findings: Mapping) -> list[str]:
    """Why a clip fails its findings (empty: it passes): murmur status, then phase, then a confident grade band."""
    want = findings.get("murmur") == "present"
    heard = reading.murmur_p >= MURMUR_THRESHOLD
    if want != heard:
        return [f"murmur: asked {'present' if want else 'absent'}, heard "
                f"{'present' if heard else 'absent'} (P={reading.murmur_p:.2f})"]
    if not want:
        return []
    out = []
    phase = V.timing_phase(findings["timing"])
    if reading.phase != phase:
        out.append(f"timing: asked {phase}, heard {reading.phase} (P={reading.phase_p:.2f})")
    band = V.grade_band(int(findings["grade"]))
    if reading.band_p >= GRADE_CONFIDENT and reading.grade_band != band:
        out.append(f"grade: asked {band}, heard {reading.grade_band} (P={reading.band_p:.2f})")
    return out


# ----------------------------------------------------------------------------- rendering

@dataclass
class Case:
    """A rendered case. audio (N,) float32 at sr; intervals (start_s, end_s, "S1" | "S2" | "murmur");
    source "model" (render_seed: the seed that passed) or "simulator"; tries: one dict per model
    draw {"seed", "problems"} (problems empty on the one that passed)."""

    spec: CaseSpec
    audio: np.ndarray
    sr: int
    intervals: list[Interval]
    source: str
    render_seed: int | None
    tries: list[dict] = field(default_factory=list)
    model: str = ""

    @property
    def sha256(self) -> str:
        return clip_hash(self.audio)

    @property
    def note(self) -> str:
        """What the page says about where the clip came from."""
        if self.source == "model":
            extra = "" if len(self.tries) == 1 else f" on try {len(self.tries)} of {MAX_TRIES}"
            return f"Model clip, verified by the evaluator{extra} (seed {self.render_seed})."
        if not self.tries:
            return ("Simulator clip: no model clip was drawn (no evaluator to verify one, or model draws switched "
                    "off), so the exactly labelled simulator stands in.")
        why = "; ".join(dict.fromkeys(t["problems"][0].split(" (P=")[0] for t in self.tries))
        return (f"Simulator clip: the model's {len(self.tries)} clip(s) for these findings failed verification "
                f"({why}), so the exactly labelled simulator stands in.")

    def meta(self) -> dict:
        """Everything but the audio, JSON-able (the render cache's sidecar)."""
        return {"spec": self.spec.to_json(), "sr": self.sr, "intervals": [list(i) for i in self.intervals],
                "source": self.source, "render_seed": self.render_seed, "tries": self.tries, "model": self.model}

    @classmethod
    def from_meta(cls, meta: Mapping, audio: np.ndarray) -> "Case":
        spec = CaseSpec(meta["spec"]["findings"], int(meta["spec"]["seed"]))
        return cls(spec, audio, int(meta["sr"]), [(float(a), float(b), str(k)) for a, b, k in meta["intervals"]],
                   meta["source"], meta["render_seed"], list(meta["tries"]), meta.get("model", ""))


def simulator_intervals(sim) -> list[Interval]:
    """S1/S2 from the simulator's CirCor-style segmentation (states 1 and 3); murmur where its own
    component is audible (20 ms RMS envelope above a tenth of its peak), so the reveal is exact."""
    out = [(float(a), float(b), "S1" if int(st) == 1 else "S2")
           for a, b, st in np.asarray(sim.segmentation).reshape(-1, 3) if int(st) in (1, 3)]
    m = np.asarray(sim.components["murmur"], dtype=np.float64)
    win = max(1, int(0.02 * sim.sr))
    env = np.sqrt(np.convolve(m * m, np.ones(win) / win, mode="same"))
    if env.max() <= 0:
        return out
    on = np.concatenate([[False], env > 0.1 * env.max(), [False]])
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if runs and a - runs[-1][1] < 2 * win:  # a harsh murmur's roughness dips are not gaps
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return out + [(a / sim.sr, b / sim.sr, "murmur") for a, b in runs if b - a >= win]


def simulator_case(spec: CaseSpec, seconds: float = CASE_SECONDS, tries: list | None = None, model: str = "") -> Case:
    sim = simulate(spec.findings, seconds=seconds, seed=spec.seed)
    return Case(spec, sim.audio.astype(np.float32), sim.sr, simulator_intervals(sim), "simulator", None,
                list(tries or []), model)


def _model_case(pipe, spec: CaseSpec, seed: int, seconds: float, steps: int | None, tries: list, mid: str) -> Case:
    g = pipe.generate(spec.findings, seed=seed, seconds=seconds, steps=steps)
    return Case(spec, g.audio.astype(np.float32), g.sr, list(g.intervals), "model", seed, tries, mid)


def render_case(pipe, spec: CaseSpec, verifier: Verifier | None, seconds: float = CASE_SECONDS,
                steps: int | None = None, max_tries: int = MAX_TRIES, mid: str | None = None) -> Case:
    """The gate: model clips with seeds spec.seed, spec.seed + 1, ... until one passes `problems`
    (at most max_tries), else the simulator clip of spec.seed. No verifier: the simulator at once."""
    mid = model_id(pipe) if mid is None else mid
    tries: list[dict] = []
    for k in range(max_tries if verifier is not None else 0):
        case = _model_case(pipe, spec, spec.seed + k, seconds, steps, tries, mid)
        tries.append({"seed": spec.seed + k, "problems": problems(verifier.read(case.audio), spec.findings)})
        if not tries[-1]["problems"]:
            return case
    return simulator_case(spec, seconds, tries, mid)


def regenerate(pipe, spec: CaseSpec, source: str, render_seed: int | None, seconds: float = CASE_SECONDS,
               steps: int | None = None, mid: str | None = None) -> Case:
    """The case a set recorded, drawn again without the gate: the seed that passed (or the simulator)."""
    mid = model_id(pipe) if mid is None else mid
    if source == "model":
        return _model_case(pipe, spec, int(render_seed), seconds, steps, [{"seed": int(render_seed), "problems": []}],
                           mid)
    return simulator_case(spec, seconds, model=mid)


def acceptance(cases: Sequence[Case]) -> dict[str, dict]:
    """Per condition: cases, model draws tried, cases accepted (served by the model), the share of draws
    accepted (the model-card figure), of cases accepted on the first draw and of cases served by the model."""
    out: dict[str, dict] = {}
    for c in cases:
        row = out.setdefault(c.spec.findings.get("condition") or "(none)",
                             {"cases": 0, "draws": 0, "accepted": 0, "first_try": 0})
        row["cases"] += 1
        row["draws"] += len(c.tries)
        row["accepted"] += c.source == "model"  # a case accepts at most one draw
        row["first_try"] += c.source == "model" and len(c.tries) == 1
    for row in out.values():
        row["draw_rate"] = row["accepted"] / row["draws"] if row["draws"] else float("nan")
        row["first_try_rate"] = row["first_try"] / row["cases"]
        row["model_rate"] = row["accepted"] / row["cases"]
    return out
