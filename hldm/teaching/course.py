"""The course over one pipeline: what the app's Course tab (and its API) calls.

`Course` ties the pieces together: the verification gate (cases.render_case) behind the case
bank and its disk cache, the learners' store, screening tests and teacher sets by name, contrast
drills from `pipe.what_if`, and case-set export/import with the per-clip hash check.

Set names: "screening <seed>" is the 20-case screening test of that seed; any other name is a
teacher's set in the store.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hldm.teaching import case_sets as CS
from hldm.teaching.cache import DEFAULT_MAX_BYTES, CaseBank, RenderCache
from hldm.teaching.cases import (CASE_SECONDS, MAX_TRIES, SEED_RANGE, Case, CaseSpec, Verifier, drill_plan, model_id,
                                 problems, regenerate, render_case, screening_specs, simulator_case)
from hldm.teaching.course_store import CourseError, CourseStore
from hldm.teaching.scoring import Drill, Scored, confusions, score_case, score_drill, summary

SCREENING = re.compile(r"^screening (\d{1,9})$")


def screening_name(seed: int) -> str:
    return f"screening {int(seed)}"


@dataclass
class DrillPair:
    """A rendered drill: the two clips (a, b: (N,) float32 at sr), their intervals, the question and
    where the clips came from."""

    drill: Drill
    a: np.ndarray
    b: np.ndarray
    sr: int
    intervals: tuple[list, list]
    features: tuple[np.ndarray, np.ndarray] | None
    note: str


class Course:
    """The course's state over one pipeline. verifier None: no evaluator, every case from the simulator."""

    def __init__(self, pipe, store: CourseStore, cache_dir: str | Path, verifier: Verifier | None = None,
                 seconds: float = CASE_SECONDS, steps: int | None = None, max_tries: int = MAX_TRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.pipe, self.store, self.verifier = pipe, store, verifier
        self.seconds, self.steps, self.max_tries = float(seconds), steps, int(max_tries)
        self._model: str | None = None
        cache = RenderCache(Path(cache_dir), max_bytes)
        self.bank = CaseBank(self._render, lambda spec: cache.key(self.model, spec, self.seconds, self.steps), cache)

    @property
    def model(self) -> str:
        """The pipeline's model id, on first use: the app may still be loading the weights at start-up."""
        if self._model is None:
            self._model = model_id(self.pipe)
        return self._model

    def _render(self, spec: CaseSpec) -> Case:
        return render_case(self.pipe, spec, self.verifier, self.seconds, self.steps, self.max_tries, self.model)

    # -- sets -------------------------------------------------------------------------

    def specs(self, name: str) -> list[CaseSpec]:
        """The cases of a set by name (see module docstring); CourseError for an unknown name."""
        m = SCREENING.match(str(name).strip())
        if m:
            return screening_specs(int(m.group(1)))
        body = self.store.case_set(name)
        return [CaseSpec(c["findings"], int(c["seed"])) for c in body["cases"]]

    def open_set(self, name: str) -> list[CaseSpec]:
        """The set's cases, with every one not yet rendered queued for the background renderer."""
        specs = self.specs(name)
        self.bank.prefetch(specs)
        return specs

    def case(self, spec: CaseSpec) -> Case:
        return self.bank.case(spec)

    # -- answers ----------------------------------------------------------------------

    def answer(self, attempt_id: int, position: int, case: Case, answer: dict) -> Scored:
        """Score a case's answer and store it (durable on return)."""
        result = score_case(case.spec.findings, answer)
        self.store.record(attempt_id, position, _case_record(case), answer, result)
        return result

    def attempt_for(self, learner: str, kind: str, name: str, n_cases: int | None, seed: int | None = None):
        """The learner's unfinished attempt at this set (a restart resumes it), else a new one."""
        return self.store.open_attempt(learner, kind, name) or self.store.start_attempt(learner, kind, name, seed,
                                                                                          n_cases)

    def progress(self, learner: str) -> dict:
        """Accuracy overall and per question/attribute, the top confusions, the answers in order and each
        finished screening attempt's summary (for pre/post comparison)."""
        rows = self.store.answers(learner)
        cases = [r.result for r in rows if r.kind != "drill"]
        screenings = {}
        for att in self.store.attempts(learner, "screening"):
            if att.done:
                screenings[att.id] = {"name": att.name, "when": att.created_at[:16].replace("T", " "),
                                      **summary([r.result for r in rows if r.attempt_id == att.id])}
        return {"summary": summary(cases), "drills": summary([r.result for r in rows if r.kind == "drill"]),
                "confusions": confusions([r.result for r in rows]), "history": [r.result for r in rows],
                "screenings": screenings}

    # -- drills -----------------------------------------------------------------------

    def drill(self, attribute: str, seed: int) -> DrillPair:
        """A what-if pair one finding apart, both sides through the gate's check: when either side fails,
        the simulator renders both from the same seed (the same beat, one finding changed)."""
        a, change, drill = drill_plan(attribute, seed)
        spec_seed = int(seed) % SEED_RANGE
        if self.verifier is not None:
            wi = self.pipe.what_if(a, change, seed=spec_seed, seconds=self.seconds, steps=self.steps)
            sides = {"A": wi.a, "B": wi.b} if drill.a == a else {"A": wi.b, "B": wi.a}
            failed = [p for s, g in sides.items() for p in problems(self.verifier.read(g.audio), g.findings.to_dict())]
            if not failed:
                return DrillPair(drill, sides["A"].audio, sides["B"].audio, wi.a.sr,
                                 (sides["A"].intervals, sides["B"].intervals),
                                 (sides["A"].features, sides["B"].features), "What-if pair from the model, verified.")
            note = f"Simulator pair: the model's pair failed verification ({failed[0]})."
        else:
            note = "Simulator pair: no evaluator to verify model clips."
        ca, cb = (simulator_case(CaseSpec.of(side, spec_seed), self.seconds, model=self.model)
                  for side in (drill.a, drill.b))
        return DrillPair(drill, ca.audio, cb.audio, ca.sr, (ca.intervals, cb.intervals), None, note)

    def drill_answer(self, learner: str, pair: DrillPair, given: str | None) -> Scored:
        result = score_drill(pair.drill, given)
        att = self.attempt_for(learner, "drill", f"drill {pair.drill.attribute}", None)
        self.store.record(att.id, att.n_answered, {"drill": pair.drill.__dict__}, {"given": given}, result)
        return result

    # -- teacher sets -----------------------------------------------------------------

    def build_set(self, name: str, specs: list[CaseSpec]) -> CS.CaseSet:
        """Render (or take from the cache) every case through the gate, store the set under `name`."""
        if SCREENING.match(str(name).strip()):
            raise CourseError(f"case set name {name!r} is taken by the screening tests; choose another")
        if not specs:
            raise CourseError("the set has no cases yet: add conditions or the designed patient first")
        case_set = CS.CaseSet.of(name, self.model, self.seconds, self.steps, [self.case(s) for s in specs])
        self.store.save_set(name, case_set.body())
        return case_set

    def export_set(self, name: str, wavs: bool = False) -> bytes:
        case_set = CS.CaseSet.from_body(self.store.case_set(name))
        audios = [self.case(s).audio for s in case_set.specs] if wavs else None
        return CS.export_bytes(case_set, audios)

    def import_set(self, data: bytes) -> CS.CaseSet:
        """Parse (CaseSetError: not a set, tampered, foreign), regenerate every clip from its findings and
        seed and compare it with the stored hash; only a set whose clips all match is stored (and cached)."""
        case_set = CS.parse(data, self.model)
        if float(case_set.seconds) != self.seconds or case_set.steps != self.steps:
            raise CS.CaseSetError(f"made with {case_set.seconds:g} s clips and steps {case_set.steps}; this app "
                                  f"renders {self.seconds:g} s clips with steps {self.steps}")
        cases = [regenerate(self.pipe, c.spec, c.source, c.render_seed, self.seconds, self.steps, self.model)
                 for c in case_set.cases]
        bad = CS.mismatches(case_set, cases)
        if bad:
            raise CS.CaseSetError(f"case(s) {', '.join(str(k + 1) for k in bad)} regenerate different audio than "
                                  "the file's hashes: the file was edited or made by a different build; not imported")
        for case in cases:
            self.bank.cache.put(self.bank.key(case.spec), case)
        self.store.save_set(case_set.name, case_set.body())
        return case_set


def _case_record(case: Case) -> dict:
    return {**case.spec.to_json(), "source": case.source, "render_seed": case.render_seed, "model": case.model}
