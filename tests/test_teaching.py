"""The course library: scoring, plans fixed by their seed, the verification gate and its simulator
fallback, the render cache and bank, case-set files, and the course store. No model: a stub pipeline
renders simulator clips, stub verifiers decide, so everything here runs in seconds."""
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from hldm.clinical.vocabulary import CONDITIONS
from hldm.data.simulator import simulate
from hldm.teaching import case_sets as CS
from hldm.teaching.cache import CaseBank, RenderCache
from hldm.teaching.cases import (MAX_TRIES, SCREENING_CASES, Reading, acceptance, drill_plan, practice_spec,
                                 problems, regenerate, render_case, screening_specs, set_specs, simulator_intervals)
from hldm.teaching.course_store import CourseError, CourseStore
from hldm.teaching.scoring import (CATEGORIES, QUESTIONS, category, confusions, description, description_choices,
                                   score_case, score_drill, summary)

SECONDS = 2.0


class StubPipe:
    """generate() like HLDMPipeline's, from the simulator (deterministic per seed); counts calls."""

    def __init__(self):
        self.calls = []

    def generate(self, findings, seed=0, seconds=10.0, steps=None):
        self.calls.append(seed)
        sim = simulate(findings, seconds=seconds, seed=seed + 1000)
        return SimpleNamespace(audio=sim.audio, sr=sim.sr, intervals=simulator_intervals(sim))


class Rejects:
    def read(self, audio):
        return Reading(murmur_p=0.0) if self.present else Reading(murmur_p=1.0, phase="diastolic", phase_p=1.0)

    def __init__(self, present: bool):
        self.present = present


class AcceptsOnTry:
    """Reads the findings' own murmur status from try `n` on, the opposite before."""

    def __init__(self, n: int, findings: dict):
        self.n, self.f, self.k = n, findings, 0

    def read(self, audio):
        self.k += 1
        present = (self.f["murmur"] == "present") == (self.k >= self.n)
        phase = "systolic" if self.f.get("timing", "").endswith("systolic") else "diastolic"
        return Reading(1.0 if present else 0.0, phase if present else None, 1.0)


def _answer_for(truth: dict) -> dict:
    present = truth["murmur"] == "present"
    return {"category": category(truth), "diagnosis": truth["condition"], "description": description(truth),
            "extra_sounds": truth["extra_sounds"], "location": truth["location"],
            **{k: truth[k] if present else "none" for k in ("timing", "shape", "grade", "pitch", "quality")}}


# ----------------------------------------------------------------------------- scoring

def test_a_right_answer_scores_one_on_every_question_and_a_wrong_one_names_the_confusion():
    truth = practice_spec(3, "mitral regurgitation").findings
    right = score_case(truth, _answer_for(truth))
    assert right.questions == {q: 1.0 for q in QUESTIONS} and right.confusions == []
    wrong = score_case(truth, {**_answer_for(truth), "timing": "mid-systolic", "diagnosis": "aortic stenosis",
                               "category": "innocent", "description": "something else"})
    assert wrong.questions["category"] == 0 and wrong.questions["diagnosis"] == 0 and wrong.questions["description"] == 0
    assert wrong.questions["findings"] == pytest.approx(6 / 7) and not wrong.attributes["timing"]
    assert ("timing", truth["timing"], "mid-systolic") in wrong.confusions
    blank = score_case(truth, {})  # nothing answered scores nothing, but an empty box says "no extra sounds"
    assert blank.questions["category"] == blank.questions["description"] == blank.questions["diagnosis"] == 0
    assert blank.attributes["extra_sounds"] == (not truth["extra_sounds"]) and sum(blank.attributes.values()) <= 1


def test_categories_and_no_murmur_answers():
    assert category(practice_spec(1, "normal").findings) == "normal"
    assert category(practice_spec(1, "innocent murmur").findings) == "innocent"
    assert category(practice_spec(1, "aortic stenosis").findings) == "pathological"
    assert set(CATEGORIES) == {"normal", "innocent", "pathological"}
    normal = practice_spec(2, "normal").findings
    assert score_case(normal, _answer_for(normal)).attributes["timing"]  # "none" is the right timing
    assert not score_case(normal, {**_answer_for(normal), "timing": "holosystolic"}).attributes["timing"]


def test_description_choices_hold_the_truth_once_and_are_fixed_by_seed():
    truth = practice_spec(5, "aortic stenosis").findings
    choices = description_choices(truth, 11)
    assert len(choices) == len(set(choices)) == 4 and choices.count(description(truth)) == 1
    assert description_choices(truth, 11) == choices
    assert any(description_choices(truth, s) != choices for s in range(12, 20))  # the position moves with the seed


def test_confusions_count_both_directions_together_and_summary_means():
    truth = practice_spec(3, "mitral regurgitation").findings
    a = score_case(truth, {**_answer_for(truth), "timing": "mid-systolic"})
    b = score_case({**truth, "timing": "mid-systolic"}, {**_answer_for(truth), "timing": truth["timing"]})
    assert confusions([a, b])[0] == (f"timing: {min('mid-systolic', truth['timing'])} vs "
                                     f"{max('mid-systolic', truth['timing'])}", 2)
    s = summary([a, score_case(truth, _answer_for(truth))])
    assert s["n"] == 2 and s["attributes"]["timing"] == 0.5 and s["questions"]["category"] == 1.0


def test_drills_ask_one_finding_and_are_scored():
    for attribute in ("grade", "timing", "category"):
        a, change, drill = drill_plan(attribute, 4)
        assert drill_plan(attribute, 4) == (a, change, drill)
        assert drill.answer in ("A", "B") and score_drill(drill, drill.answer).total == 1.0
        assert score_drill(drill, "B" if drill.answer == "A" else "A").total == 0.0
    assert {drill_plan("grade", s)[2].answer for s in range(10)} == {"A", "B"}  # not always the first clip
    with pytest.raises(ValueError, match="unknown"):
        drill_plan("pitch", 0)


# ----------------------------------------------------------------------------- plans

def test_screening_test_is_fixed_per_seed_and_covers_every_condition():
    first = screening_specs(7)
    assert first == screening_specs(7) and len(first) == SCREENING_CASES
    assert first != screening_specs(8)
    assert set(CONDITIONS) <= {s.findings["condition"] for s in first}
    assert practice_spec(9) == practice_spec(9) and set_specs(["normal"], 2) == set_specs(["normal"], 2)


# ----------------------------------------------------------------------------- the gate

def test_gate_falls_back_to_the_simulator_when_the_evaluator_rejects_every_draw():
    pipe = StubPipe()
    spec = set_specs(["aortic stenosis"], 1)[0]
    case = render_case(pipe, spec, Rejects(present=True), seconds=SECONDS, mid="stub")
    assert case.source == "simulator" and pipe.calls == [spec.seed + k for k in range(MAX_TRIES)]
    assert [t["seed"] for t in case.tries] == pipe.calls and all(t["problems"] for t in case.tries)
    assert "Simulator clip" in case.note and "failed verification" in case.note
    assert np.array_equal(case.audio, simulate(spec.findings, seconds=SECONDS, seed=spec.seed).audio)
    assert any(k == "murmur" for *_, k in case.intervals)
    nothing = render_case(StubPipe(), spec, None, seconds=SECONDS, mid="stub")
    assert nothing.source == "simulator" and not nothing.tries and "no evaluator" in nothing.note


def test_gate_takes_the_first_draw_that_passes_and_regenerate_reproduces_it():
    spec = set_specs(["mitral regurgitation"], 2)[0]
    pipe = StubPipe()
    case = render_case(pipe, spec, AcceptsOnTry(2, spec.findings), seconds=SECONDS, mid="stub")
    assert case.source == "model" and case.render_seed == spec.seed + 1 and len(case.tries) == 2
    again = regenerate(StubPipe(), spec, case.source, case.render_seed, seconds=SECONDS, mid="stub")
    assert again.sha256 == case.sha256
    rows = acceptance([case, render_case(StubPipe(), spec, Rejects(True), seconds=SECONDS, mid="stub")])
    row = rows["mitral regurgitation"]
    assert (row["cases"], row["draws"], row["accepted"], row["first_try"]) == (2, 2 + MAX_TRIES, 1, 0)
    assert row["model_rate"] == 0.5


def test_problems_check_status_phase_and_a_confident_grade_band():
    f = {"murmur": "present", "timing": "holosystolic", "grade": 4}
    assert problems(Reading(0.9, "systolic", 0.9, "loud", 0.9), f) == []
    assert "murmur" in problems(Reading(0.1), f)[0]
    assert "timing" in problems(Reading(0.9, "diastolic", 0.9, "loud", 0.9), f)[0]
    assert "grade" in problems(Reading(0.9, "systolic", 0.9, "soft", 0.9), f)[0]
    assert problems(Reading(0.9, "systolic", 0.9, "soft", 0.4), f) == []  # unsure about the band: not held against it
    assert problems(Reading(0.2), {"murmur": "absent"}) == []


# ----------------------------------------------------------------------------- cache and bank

def _bank(tmp_path, verifier=None, max_bytes=10**9):
    pipe = StubPipe()
    cache = RenderCache(tmp_path / "cases", max_bytes)
    bank = CaseBank(lambda s: render_case(pipe, s, verifier, seconds=SECONDS, mid="stub"),
                    lambda s: cache.key("stub", s, SECONDS, None), cache)
    return bank, cache, pipe


def test_thirty_requests_for_one_case_render_it_once_and_the_cache_survives(tmp_path):
    spec = set_specs(["aortic stenosis"], 3)[0]
    bank, cache, pipe = _bank(tmp_path, Rejects(True))
    out = []
    threads = [threading.Thread(target=lambda: out.append(bank.case(spec).sha256)) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 30 and len(set(out)) == 1 and len(pipe.calls) == MAX_TRIES
    bank2, _, pipe2 = _bank(tmp_path, Rejects(True))  # a restarted app: from disk, nothing rendered
    assert bank2.case(spec).sha256 == out[0] and pipe2.calls == []


def test_prefetch_renders_a_set_in_the_background_and_the_cache_stays_bounded(tmp_path):
    specs = set_specs(["normal", "aortic stenosis", "mitral stenosis"], 5)
    bank, cache, pipe = _bank(tmp_path)
    assert bank.prefetch(specs) == 3
    bank.wait(timeout=60)
    assert all(bank.cached(s) for s in specs) and bank.prefetch(specs) == 0
    one = cache.size() / 3
    small = RenderCache(tmp_path / "cases", max_bytes=int(1.5 * one))
    small.evict()
    assert small.size() <= 1.5 * one and sum(small.get(cache.key("stub", s, SECONDS, None)) is not None
                                             for s in specs) == 1


# ----------------------------------------------------------------------------- case-set files

def _set(tmp_path, model="stub"):
    bank, _, _ = _bank(tmp_path)
    cases = [bank.case(s) for s in set_specs(["normal", "ventricular septal defect"], 6)]
    return CS.CaseSet.of("week 3", model, SECONDS, None, cases), cases


def test_case_set_round_trip_and_regeneration_check(tmp_path):
    case_set, cases = _set(tmp_path)
    data = CS.export_bytes(case_set, [c.audio for c in cases])
    back = CS.parse(data, "stub")
    assert back == case_set and CS.mismatches(back, cases) == []
    spec = back.cases[1].spec  # the stored simulator case drawn by the model instead: other audio
    other = regenerate(StubPipe(), spec, "model", spec.seed, seconds=SECONDS, mid="stub")
    assert CS.mismatches(back, [cases[0], other]) == [1]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["cases"][0].update(seed=d["cases"][0]["seed"] + 1), "tampered"),
    (lambda d: d.update(name="renamed"), "tampered"),
    (lambda d: d.pop("checksum"), "tampered"),
    (lambda d: d.update(format="something"), "not a case-set file"),
    (lambda d: d["wavs"].update({"0": d["wavs"]["1"]}), "bundled WAV 0"),
])
def test_tampered_case_set_refused(tmp_path, edit, message):
    case_set, cases = _set(tmp_path)
    doc = json.loads(CS.export_bytes(case_set, [c.audio for c in cases]))
    edit(doc)
    with pytest.raises(CS.CaseSetError, match=message):
        CS.parse(json.dumps(doc).encode(), "stub")


def test_foreign_and_garbage_files_refused(tmp_path):
    case_set, _ = _set(tmp_path, model="hldm-other")
    with pytest.raises(CS.CaseSetError, match="another model"):
        CS.parse(CS.export_bytes(case_set), "stub")
    with pytest.raises(CS.CaseSetError, match="not JSON"):
        CS.parse(b"\x89PNG\r\n not json", "stub")
    with pytest.raises(CS.CaseSetError, match="not a case-set file"):
        CS.parse(b"[1, 2, 3]", "stub")


# ----------------------------------------------------------------------------- the store

def test_store_keeps_answers_across_reopen_and_refuses_a_second_answer(tmp_path):
    db = tmp_path / "course.sqlite"
    truth = practice_spec(1, "aortic stenosis").findings
    with CourseStore(db) as store:
        store.add_learner("Ana")
        att = store.start_attempt("ana", "screening", "screening 7", seed=7, n_cases=2)
        store.record(att.id, 0, {"findings": truth}, _answer_for(truth), score_case(truth, _answer_for(truth)))
        with pytest.raises(CourseError, match="already answered"):
            store.record(att.id, 0, {"findings": truth}, {}, score_case(truth, {}))
        with pytest.raises(CourseError, match="outside"):
            store.record(att.id, 2, {"findings": truth}, {}, score_case(truth, {}))
    with CourseStore(db) as store:  # a restart: the answer and the open attempt are still there
        resumed = store.open_attempt("ANA", "screening", "screening 7")
        assert resumed.id == att.id and resumed.n_answered == 1 and not resumed.done
        (rec,) = store.answers("ana")
        assert rec.result.total == 1.0 and rec.case["findings"] == truth
        with pytest.raises(CourseError, match="unknown"):
            store.learner("bob")


def test_store_refuses_another_kind_of_database(tmp_path):
    from hldm.ratings.store import RatingStore

    RatingStore(tmp_path / "ratings.sqlite").close()
    before = (tmp_path / "ratings.sqlite").read_bytes()
    with pytest.raises(CourseError, match="course database lacks tables"):
        CourseStore(tmp_path / "ratings.sqlite")
    assert (tmp_path / "ratings.sqlite").read_bytes() == before


def test_case_sets_stored_by_name(tmp_path):
    with CourseStore(tmp_path / "c.sqlite") as store:
        store.save_set("Week 3", {"cases": [1]})
        store.save_set("week 3", {"cases": [2]})  # same name, any case: replaced
        assert store.set_names() == ["Week 3"] and store.case_set("WEEK 3") == {"cases": [2]}
        with pytest.raises(CourseError, match="unknown"):
            store.case_set("week 4")
