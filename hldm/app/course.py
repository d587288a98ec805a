"""The Course tab: the auscultation course on the model's own, verified clips (hldm.teaching).

Sub-tabs: Practice (a case at a time, random or from a teacher's set, four questions and feedback,
the answer on the annotated spectrogram with a timeline that lights the murmur while it plays, at
normal or half speed), Screening test (20 fixed cases for a seed, no feedback until the report,
pre/post), Contrast drills (what-if pairs), Progress, Case sets (teacher: build, export, import) and
Class display (projector). API: /course_set, /course_case, /course_answer (`gradio_client`).
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
import numpy as np

from hldm import app_views
from hldm.app.api import cached_file, wav_file
from hldm.app.common import GRADE_CHOICES, audio_player, figure, findings_or_raise, playback_copy
from hldm.app.design import Design
from hldm.audio.features import normalize_loudness, to_features
from hldm.clinical import vocabulary as V
from hldm.clinical.validation import FindingsError
from hldm.teaching.case_sets import CaseSetError
from hldm.teaching.cases import SEED_RANGE, Case, CaseSpec, practice_spec, set_specs
from hldm.teaching.course import Course, screening_name
from hldm.teaching.course_store import CourseError
from hldm.teaching.scoring import (CATEGORIES, FINDING_ATTRIBUTES, NONE, QUESTIONS, category, confusions, description,
                                   description_choices, show, summary, truth_value)

RANDOM = "Random cases"
ANSWER_FIELDS = ("category", *FINDING_ATTRIBUTES, "description", "diagnosis")
# Course calls may render (the gate) or only read the cache; renders queue on the bank's own lock,
# so several cache hits are served while one case renders.
COURSE_CALL = {"concurrency_id": "course", "concurrency_limit": 8}
PAGE_COURSE_CALL = {"api_name": False, **COURSE_CALL}
HALF_SPEED = 0.5


def half_speed(audio: np.ndarray, sr: int) -> tuple[int, np.ndarray]:
    """A playback copy at half speed, pitch unchanged (phase-vocoder time stretch)."""
    import librosa

    return playback_copy(librosa.effects.time_stretch(np.asarray(audio, dtype=np.float32), rate=HALF_SPEED), sr)


def timeline_html(intervals, seconds: float, players: str, big: bool = False) -> str:
    """S1/S2/murmur lanes under the spectrogram with a playhead that follows whichever of `players`
    (comma-separated element ids of audio players) is playing; the murmur lights up while the
    playhead is inside it (assets/course.js)."""
    bars = "".join(f'<div class="hldm-tl-iv hldm-tl-{html.escape(k)}" data-a="{a:.3f}" data-b="{b:.3f}" '
                   f'style="left:{100 * a / seconds:.2f}%;width:{max(100 * (b - a) / seconds, 0.3):.2f}%"></div>'
                   for a, b, k in intervals)
    return (f'<div class="hldm-timeline{" hldm-big" if big else ""}" data-players="{players}" '
            f'data-seconds="{seconds:.3f}"><div class="hldm-tl-track">{bars}<div class="hldm-tl-head"></div></div>'
            '<div class="hldm-tl-legend"><span class="hldm-tl-S1">S1</span> <span class="hldm-tl-S2">S2</span> '
            '<span class="hldm-tl-murmur">murmur (lit while it plays)</span></div></div>')


def spectrogram(case_audio: np.ndarray, intervals, title: str) -> np.ndarray:
    return app_views.spectrogram_image(to_features(normalize_loudness(case_audio)).numpy(), intervals, title=title)


def answers_dict(values) -> dict:
    """The question widgets' values (ANSWER_FIELDS order) -> the answer scoring reads."""
    return {k: (list(v or []) if k == "extra_sounds" else v) for k, v in zip(ANSWER_FIELDS, values)}


def feedback_markdown(truth: dict, answer: dict, scored) -> str:
    """Per question: the score, what was said and the answer; per finding in question 2."""
    right = {"category": category(truth), "description": description(truth), "diagnosis": truth.get("condition")}
    lines = [f"### Score {scored.total:.0%}", "", "| question | your answer | answer | score |", "|---|---|---|---|"]
    for q in QUESTIONS:
        if q == "findings":
            lines.append(f"| 2. findings | | | {scored.questions[q]:.0%} |")
            for a in FINDING_ATTRIBUTES:
                given = answer.get(a)
                given = tuple(given or ()) if a == "extra_sounds" else given
                lines.append(f"| &nbsp;&nbsp;{a} | {show(given, a)} | {show(truth_value(truth, a), a)} | "
                             f"{'✓' if scored.attributes[a] else '✗'} |")
        else:
            n = QUESTIONS.index(q) + 1
            lines.append(f"| {n}. {q} | {answer.get(q) or '—'} | {right[q] or '—'} | "
                         f"{'✓' if scored.questions[q] else '✗'} |")
    return "\n".join(lines)


class CourseHandlers:
    """The tab's callbacks over a `Course`; plain methods so tests can call them directly."""

    def __init__(self, course: Course):
        self.course = course

    # -- learners --------------------------------------------------------------------

    def sign_in(self, name):
        try:
            learner = self.course.store.add_learner(name)
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        n = len(self.course.store.answers(learner.name))
        return learner.name, f"Signed in as **{learner.name}** ({n} answer(s) stored)."

    def _learner(self, learner) -> str:
        if not learner:
            raise gr.Error("Sign in first: type your name and press *Sign in* (no password; answers stay on this machine).")
        return learner

    # -- showing a case --------------------------------------------------------------

    def _show(self, state: dict, header: str):
        """A case's outputs: state, header, audio, half-speed audio, note, the description choices and
        every other question cleared, feedback, spectrogram and timeline cleared."""
        spec = CaseSpec(state["findings"], state["seed"])
        case = self.course.case(spec)
        state["intervals"] = [list(i) for i in case.intervals]
        state["seconds"] = len(case.audio) / case.sr
        choices = description_choices(spec.findings, spec.seed)
        cleared = [gr.update(value=[] if k == "extra_sounds" else None) for k in ANSWER_FIELDS]
        cleared[ANSWER_FIELDS.index("description")] = gr.update(choices=choices, value=None)
        return (state, header, playback_copy(case.audio, case.sr), half_speed(case.audio, case.sr),
                f"*{case.note}*", *cleared, "", None, "")

    def _case_of(self, state) -> Case:
        return self.course.case(CaseSpec(state["findings"], state["seed"]))

    def practice_next(self, learner, source):
        learner = self._learner(learner)
        try:
            if source in (None, "", RANDOM):
                spec = practice_spec(time.time_ns() % SEED_RANGE)
                att = self.course.attempt_for(learner, "practice", "practice", None)
                header = "Practice: a random case. Listen (try half speed), answer the four questions, then *Check*."
            else:
                specs = self.course.open_set(source)
                att = self.course.attempt_for(learner, "set", source, len(specs))
                spec = specs[att.n_answered]
                header = f"Set **{source}**: case {att.n_answered + 1} of {len(specs)}."
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        state = {"findings": spec.findings, "seed": spec.seed, "attempt": att.id, "position": att.n_answered,
                 "answered": False}
        return self._show(state, header)

    def practice_check(self, state, *values):
        if not state:
            raise gr.Error("Press *Next case* first.")
        if state.get("answered"):
            raise gr.Error("This case is answered; press *Next case*.")
        case, answer = self._case_of(state), answers_dict(values)
        try:
            scored = self.course.answer(state["attempt"], state["position"], case, answer)
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        state = {**state, "answered": True}
        title = f"Answer: {description(case.spec.findings)}  ({case.spec.findings.get('condition')})"
        return (state, feedback_markdown(case.spec.findings, answer, scored),
                spectrogram(case.audio, case.intervals, title),
                timeline_html(case.intervals, len(case.audio) / case.sr, "course_audio,course_half"))

    # -- screening test --------------------------------------------------------------

    def screening_start(self, learner, seed):
        learner = self._learner(learner)
        name = screening_name(int(seed or 0))
        specs = self.course.open_set(name)
        att = self.course.attempt_for(learner, "screening", name, len(specs), int(seed or 0))
        return self._screening_case(att.id, specs, att.n_answered, name)

    def _screening_case(self, attempt_id, specs, position, name):
        spec = specs[position]
        state = {"findings": spec.findings, "seed": spec.seed, "attempt": attempt_id, "position": position,
                 "name": name, "n": len(specs)}
        header = (f"**{name}**: case {position + 1} of {len(specs)}. One pass, no feedback until the report; "
                  "answers are stored as you go (a restart resumes here).")
        out = self._show(state, header)
        return (*out[:-3], gr.update(visible=False), None, "")

    def screening_submit(self, state, *values):
        if not state:
            raise gr.Error("Press *Start or resume the test* first.")
        try:
            self.course.answer(state["attempt"], state["position"], self._case_of(state), answers_dict(values))
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        att = self.course.store.attempt(state["attempt"])
        if not att.done:
            return self._screening_case(att.id, self.course.specs(att.name), att.n_answered, att.name)
        report, image = self.screening_report(att)
        done = {**state, "done": True}
        return (done, f"**{att.name}** complete.", None, None, "", *[gr.update() for _ in ANSWER_FIELDS],
                gr.update(visible=True), image, report)

    def screening_report(self, att):
        """Report of a finished attempt: per question and per finding, and every earlier attempt of the same
        test beside it (pre/post)."""
        rows = self.course.store.answers(att.learner, att.id)
        s = summary([r.result for r in rows])
        earlier = [a for a in self.course.store.attempts(att.learner, "screening")
                   if a.name == att.name and a.done and a.id != att.id]
        lines = [f"## Screening report: {att.name}, {att.learner}", "",
                 f"**Overall {s['total']:.0%}** over {s['n']} cases.", "", "| question | accuracy |", "|---|---|",
                 *[f"| {q} | {v:.0%} |" for q, v in s["questions"].items()], "",
                 "| finding | accuracy |", "|---|---|", *[f"| {a} | {v:.0%} |" for a, v in s["attributes"].items()]]
        bars = []
        for a in earlier:
            prev = summary([r.result for r in self.course.store.answers(att.learner, a.id)])
            lines.insert(3, f"Earlier attempt ({a.created_at[:16].replace('T', ' ')}): {prev['total']:.0%} "
                            f"→ now {s['total']:.0%} ({100 * (s['total'] - prev['total']):+.0f} points).")
            bars.append((a.created_at[:16].replace("T", " "), prev["questions"]))
        bars.append(("this attempt", s["questions"]))
        conf = confusions([r.result for r in rows])
        if conf:
            lines += ["", "To work on: " + "; ".join(f"{c} ({n}×)" for c, n in conf)]
        per_case = ["", "| case | condition | you said | score |", "|---|---|---|---|"]
        per_case += [f"| {r.position + 1} | {r.case['findings'].get('condition')} | {r.answer.get('diagnosis') or '—'} "
                     f"| {r.result.total:.0%} |" for r in sorted(rows, key=lambda r: r.position)]
        return "\n".join(lines + per_case), app_views.screening_image(bars)

    # -- drills ----------------------------------------------------------------------

    def drill_new(self, learner, attribute):
        self._learner(learner)
        pair = self.course.drill(attribute, time.time_ns() % SEED_RANGE)
        state = {"pair": pair, "answered": False}
        return (state, f"### {pair.drill.question}", playback_copy(pair.a, pair.sr), playback_copy(pair.b, pair.sr),
                f"*{pair.note}*", None, "", None)

    def drill_check(self, learner, state, given):
        learner = self._learner(learner)
        if not state:
            raise gr.Error("Press *New pair* first.")
        if state["answered"]:
            raise gr.Error("This pair is answered; press *New pair*.")
        if given not in ("A", "B"):
            raise gr.Error("Choose A or B.")
        pair = state["pair"]
        scored = self.course.drill_answer(learner, pair, given)
        state = {**state, "answered": True}
        feats = pair.features or tuple(to_features(normalize_loudness(x)).numpy() for x in (pair.a, pair.b))
        verdict = "✓ Right" if scored.total else f"✗ It was {pair.drill.answer}"
        titles = tuple(f"{side}: {description(f)}" for side, f in (("A", pair.drill.a), ("B", pair.drill.b)))
        return state, f"**{verdict}.** {pair.drill.question}", app_views.what_if_image(*feats, *pair.intervals,
                                                                                       titles=titles)

    # -- progress --------------------------------------------------------------------

    def progress(self, learner):
        learner = self._learner(learner)
        p = self.course.progress(learner)
        s = p["summary"]
        if not s["n"] and not p["drills"]["n"]:
            return f"No answers from **{learner}** yet.", None, None
        lines = [f"## Progress: {learner}", "", f"{s['n']} case(s) answered, mean score {s['total']:.0%}"
                 + (f"; {p['drills']['n']} drill(s), {p['drills']['total']:.0%} right" if p["drills"]["n"] else ""),
                 "", "| question | accuracy |", "|---|---|",
                 *[f"| {q} | {v:.0%} |" for q, v in s["questions"].items() if np.isfinite(v)]]
        if p["confusions"]:
            lines += ["", "**Confusions to work on:**", *[f"- {c} ({n}×)" for c, n in p["confusions"]]]
        if p["screenings"]:
            lines += ["", "| screening | taken | score |", "|---|---|---|",
                      *[f"| {v['name']} | {v['when']} | {v['total']:.0%} |" for v in p["screenings"].values()]]
        image = app_views.progress_image([r.questions for r in p["history"]], s["attributes"])
        screens = app_views.screening_image([(f"{v['name']} {v['when']}", v["questions"])
                                             for v in p["screenings"].values()]) if p["screenings"] else None
        return "\n".join(lines), image, screens

    # -- teacher sets ----------------------------------------------------------------

    def set_add_conditions(self, cases, conditions, seed):
        if not conditions:
            raise gr.Error("Choose one or more conditions to add.")
        specs = set_specs(conditions, int(seed or 0) + len(cases or []))
        return self._set_list((cases or []) + [s.to_json() for s in specs])

    def set_add_designed(self, cases, seed, *values):
        try:
            spec = CaseSpec.of(findings_or_raise(values).to_dict(), int(seed or 0))
        except (FindingsError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        return self._set_list((cases or []) + [spec.to_json()])

    def _set_list(self, cases):
        rows = [f"{k + 1}. {c['findings'].get('condition') or '(no condition)'}: {description(c['findings'])} "
                f"(seed {c['seed']})" for k, c in enumerate(cases)]
        return cases, "\n".join(rows) or "*No cases yet.*"

    def set_save(self, name, cases, progress=gr.Progress()):
        if not (name or "").strip():
            raise gr.Error("Name the set first.")
        progress(0, desc="rendering and verifying the cases")
        try:
            cs = self.course.build_set(name.strip(), [CaseSpec(c["findings"], int(c["seed"])) for c in cases or []])
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        n_model = sum(c.source == "model" for c in cs.cases)
        return (f"Saved set **{cs.name}**: {len(cs.cases)} case(s), {n_model} from the model (verified), "
                f"{len(cs.cases) - n_model} from the simulator.", *self._set_choices(cs.name))

    def _set_choices(self, selected=None):
        names = self.course.store.set_names()
        return (gr.update(choices=[RANDOM, *names]), gr.update(choices=names, value=selected),
                gr.update(choices=names, value=selected))

    def set_export(self, name, wavs):
        if not name:
            raise gr.Error("Choose a saved set to export.")
        try:
            data = self.course.export_set(name, bool(wavs))
        except (CourseError, CaseSetError) as exc:
            raise gr.Error(str(exc)) from None
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        return cached_file(data, f"case_set_{safe}.json").path, f"Exported **{name}** ({len(data) // 1024 + 1} kB)."

    def set_import(self, path):
        """(status, the file box emptied so the next file goes straight in, the set dropdowns' choices)."""
        if not path:
            return "", None, *(gr.update(),) * 3
        name = Path(path).name
        try:
            cs = self.course.import_set(Path(path).read_bytes())
        except CaseSetError as exc:
            return f"**Import refused** ({name}): {exc}. Nothing was imported.", None, *(gr.update(),) * 3
        n_model = sum(c.source == "model" for c in cs.cases)
        return (f"Imported **{cs.name}**: {len(cs.cases)} case(s) regenerated from their findings and seeds; every "
                f"clip matches the file's hash (same audio as the teacher's; {n_model} model, "
                f"{len(cs.cases) - n_model} simulator).", None, *self._set_choices(cs.name))

    def refresh_sets(self):
        return self._set_choices()

    # -- class display ---------------------------------------------------------------

    def class_show(self, name, number):
        if not name:
            raise gr.Error("Choose a set to show.")
        try:
            specs = self.course.open_set(name)
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        k = int(number or 1)
        if not 1 <= k <= len(specs):
            raise gr.Error(f"case: {k}; the set has cases 1..{len(specs)}")
        case = self.course.case(specs[k - 1])
        seconds = len(case.audio) / case.sr
        return ({"findings": case.spec.findings, "seed": case.spec.seed}, f"# {name}: case {k} of {len(specs)}",
                playback_copy(case.audio, case.sr), half_speed(case.audio, case.sr),
                spectrogram(case.audio, [i for i in case.intervals if i[2] != "murmur"], "What do you hear?"),
                timeline_html([i for i in case.intervals if i[2] != "murmur"], seconds, "class_audio,class_half", True))

    def class_reveal(self, state):
        if not state:
            raise gr.Error("Show a case first.")
        case = self._case_of(state)
        f = case.spec.findings
        return (spectrogram(case.audio, case.intervals, f"{description(f)}  ({f.get('condition')})"),
                timeline_html(case.intervals, len(case.audio) / case.sr, "class_audio,class_half", True),
                f"## {f.get('condition')}: {category(f)}\n{description(f)}")

    # -- API -------------------------------------------------------------------------

    def set_api(self, name: str, conditions: list[str], seed: int = 0) -> dict:
        """Create (or replace) a teacher's case set: one case per listed condition, its typical findings,
        every clip rendered through the verification gate and cached.

        Parameters:
            name: the set's name (students open it by this name)
            conditions: one case per entry, each one of the 17 conditions (repeats allowed)
            seed: fixes the findings and seeds of the cases
        Returns:
            the set: name, model id, and per case its condition, source (model / simulator) and clip sha256
        """
        bad = [c for c in conditions or [] if c not in V.CONDITIONS]
        if bad or not conditions:
            raise gr.Error(f"conditions: {bad or 'none given'}; allowed: {', '.join(V.CONDITIONS)}")
        try:
            cs = self.course.build_set(name, set_specs(conditions, int(seed)))
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        return {"name": cs.name, "model": cs.model, "cases": [{"condition": c.spec.findings.get("condition"),
                                                               "source": c.source, "sha256": c.sha256}
                                                              for c in cs.cases]}

    def case_api(self, set_name: str, index: int) -> tuple[gr.FileData, dict]:
        """One case of a set, to listen to (4 kHz WAV), without its answer.

        Parameters:
            set_name: a teacher's set, or "screening <seed>"
            index: 0-based case number
        Returns:
            the WAV, and {set, index, n, source, note, description_choices} (question 3's options)
        """
        try:
            specs = self.course.open_set(set_name)
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        if not 0 <= int(index) < len(specs):
            raise gr.Error(f"index: {index}; the set has cases 0..{len(specs) - 1}")
        spec = specs[int(index)]
        case = self.course.case(spec)
        return (wav_file(case.audio, case.sr, f"case_{int(index)}.wav"),
                {"set": set_name, "index": int(index), "n": len(specs), "source": case.source, "note": case.note,
                 "description_choices": description_choices(spec.findings, spec.seed)})

    def answer_api(self, learner: str, set_name: str, index: int, category: str | None = None,
                   timing: str | None = None, shape: str | None = None, grade: str | None = None,
                   location: str | None = None, pitch: str | None = None, quality: str | None = None,
                   extra_sounds: list[str] | None = None, description: str | None = None,
                   diagnosis: str | None = None) -> dict:
        """Answer one case of a set as `learner` (registered on first use); the answer is stored and scored.

        Parameters:
            learner: the learner's name (no password)
            set_name: the set the case is from
            index: 0-based case number
            category: normal, innocent or pathological
            timing, shape, grade, location, pitch, quality: the findings ("none" for no murmur)
            extra_sounds: the extra sounds heard (empty: none)
            description: one of the case's description_choices
            diagnosis: one of the 17 conditions
        Returns:
            {questions: score per question, attributes: right or wrong per finding, total, confusions}
        """
        try:
            learner = self.course.store.add_learner(learner).name
            specs = self.course.specs(set_name)
            if not 0 <= int(index) < len(specs):
                raise CourseError(f"index: {index}; the set has cases 0..{len(specs) - 1}")
            att = self.course.attempt_for(learner, "set", set_name, len(specs))
            answer = {"category": category, "timing": timing, "shape": shape, "grade": grade, "location": location,
                      "pitch": pitch, "quality": quality, "extra_sounds": list(extra_sounds or []),
                      "description": description, "diagnosis": diagnosis}
            scored = self.course.answer(att.id, int(index), self.course.case(specs[int(index)]), answer)
        except CourseError as exc:
            raise gr.Error(str(exc)) from None
        return {**scored.to_dict(), "total": scored.total}


def question_widgets(prefix: str) -> list:
    """The four questions' widgets in ANSWER_FIELDS order, element ids `<prefix>_<field>`."""
    with gr.Group():
        cat = gr.Radio(list(CATEGORIES), label="1. Normal, innocent or pathological?", elem_id=f"{prefix}_category")
        gr.Markdown("**2. The findings** (\"none\" when you hear no murmur)")
        with gr.Row():
            timing = gr.Dropdown([NONE, *V.TIMINGS], label="timing", elem_id=f"{prefix}_timing")
            shape = gr.Dropdown([NONE, *V.SHAPES], label="shape", elem_id=f"{prefix}_shape")
            grade = gr.Dropdown([(NONE, NONE), *GRADE_CHOICES], label="grade", elem_id=f"{prefix}_grade")
            location = gr.Dropdown(list(V.LOCATIONS), label="location", elem_id=f"{prefix}_location")
            pitch = gr.Dropdown([NONE, *V.PITCHES], label="pitch", elem_id=f"{prefix}_pitch")
            quality = gr.Dropdown([NONE, *V.QUALITIES], label="quality", elem_id=f"{prefix}_quality")
        extra = gr.CheckboxGroup(list(V.EXTRA_SOUNDS), label="extra sounds", elem_id=f"{prefix}_extra_sounds")
        desc = gr.Radio([], label="3. Which description fits?", elem_id=f"{prefix}_description")
        diagnosis = gr.Dropdown(list(V.CONDITIONS), label="4. Diagnosis", elem_id=f"{prefix}_diagnosis")
    return [cat, timing, shape, grade, location, pitch, quality, extra, desc, diagnosis]


def case_view(prefix: str, questions: str):
    """A case as a learner meets it: header, the clip at normal and half speed, where it came from, and
    the questions (`question_widgets(questions)`); element ids `<prefix>_header`, `_audio`, `_half`, `_note`."""
    header = gr.Markdown(elem_id=f"{prefix}_header")
    with gr.Row():
        audio = audio_player(label="Case", elem_id=f"{prefix}_audio")
        half = audio_player(label="Half speed (same pitch)", elem_id=f"{prefix}_half")
    note = gr.Markdown(elem_id=f"{prefix}_note")
    return header, audio, half, note, question_widgets(questions)


def build_course_tab(course: Course, design: Design) -> CourseHandlers:
    """The tab inside an open `gr.Tabs` and its events; its API endpoints are registered by the caller
    (`set_api`, `case_api`, `answer_api`)."""
    h = CourseHandlers(course)
    learner = gr.State(None)
    names = course.store.set_names()
    with gr.Tab("Course", id="course"):
        with gr.Row():
            name = gr.Textbox(label="Your name (no password; stays on this machine)", elem_id="course_name", scale=3)
            sign = gr.Button("Sign in", elem_id="course_sign_in", scale=1)
        who = gr.Markdown("Not signed in.", elem_id="course_who")
        with gr.Tabs():
            with gr.Tab("Practice", id="course_practice"):
                pstate = gr.State(None)
                with gr.Row():
                    source = gr.Dropdown([RANDOM, *names], value=RANDOM, label="Cases from", elem_id="course_source")
                    nxt = gr.Button("Next case", variant="primary", elem_id="course_next")
                pheader, paudio, phalf, pnote, pq = case_view("course", "cq")
                check = gr.Button("Check", variant="primary", elem_id="course_check")
                pfeedback = gr.Markdown(elem_id="course_feedback")
                pspec = figure(label="Answer", elem_id="course_spec")
                ptimeline = gr.HTML(elem_id="course_timeline")
            with gr.Tab("Screening test", id="course_screening"):
                sstate = gr.State(None)
                with gr.Row():
                    sseed = gr.Number(1, precision=0, minimum=0, label="Test number (seed)", elem_id="screen_seed")
                    sstart = gr.Button("Start or resume the test", variant="primary", elem_id="screen_start")
                sheader, saudio, shalf, snote, sq = case_view("screen", "sq")
                submit = gr.Button("Submit and next", variant="primary", elem_id="screen_submit")
                with gr.Group(visible=False) as sreport_box:
                    splot = figure(label="Report", elem_id="screen_plot")
                sreport = gr.Markdown(elem_id="screen_report")
            with gr.Tab("Contrast drills", id="course_drills"):
                dstate = gr.State(None)
                with gr.Row():
                    dattr = gr.Radio([("Which is louder (grade)?", "grade"), ("Systolic or diastolic?", "timing"),
                                      ("Innocent or pathological?", "category")], value="grade", label="Drill",
                                     elem_id="drill_kind")
                    dnew = gr.Button("New pair", variant="primary", elem_id="drill_new")
                dquestion = gr.Markdown(elem_id="drill_question")
                with gr.Row():
                    da = audio_player(label="A", elem_id="drill_a")
                    db = audio_player(label="B", elem_id="drill_b")
                dnote = gr.Markdown(elem_id="drill_note")
                dgiven = gr.Radio(["A", "B"], label="Your answer", elem_id="drill_given")
                dcheck = gr.Button("Check", elem_id="drill_check")
                dfeedback = gr.Markdown(elem_id="drill_feedback")
                dimage = figure(label="Both spectrograms", elem_id="drill_image")
            with gr.Tab("Progress", id="course_progress"):
                pshow = gr.Button("Show my progress", variant="primary", elem_id="progress_show")
                ptext = gr.Markdown(elem_id="progress_text")
                pplot = figure(label="Progress", elem_id="progress_plot")
                pscreens = figure(label="Screening attempts", elem_id="progress_screens")
            with gr.Tab("Case sets", id="course_sets"):
                gr.Markdown("**Teacher:** choose findings and seeds, name the set, save it (each case is rendered "
                            "and verified once), export it as one file. **Students:** import the file to get the "
                            "same cases; each clip is regenerated and checked against the file's hash.")
                cases = gr.State([])
                with gr.Row():
                    set_name = gr.Textbox(label="Set name", elem_id="set_name")
                    set_seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="set_seed")
                set_conditions = gr.Dropdown(list(V.CONDITIONS), multiselect=True, label="Conditions (one case each)",
                                             elem_id="set_conditions")
                with gr.Row():
                    add_cond = gr.Button("Add these conditions", elem_id="set_add")
                    add_designed = gr.Button("Add the patient designed above", elem_id="set_add_designed")
                    clear = gr.Button("Clear", elem_id="set_clear")
                set_list = gr.Markdown("*No cases yet.*", elem_id="set_list")
                save = gr.Button("Save the set", variant="primary", elem_id="set_save")
                set_status = gr.Markdown(elem_id="set_status")
                with gr.Row():
                    export_name = gr.Dropdown(names, label="Export set", elem_id="set_export_name")
                    wavs = gr.Checkbox(False, label="Include the WAVs", elem_id="set_wavs")
                    export = gr.Button("Export", elem_id="set_export")
                export_file = gr.File(label="Case-set file", interactive=False, elem_id="set_file")
                import_file = gr.File(label="Import a case-set file", file_types=[".json"], type="filepath",
                                      elem_id="set_import")
                import_status = gr.Markdown(elem_id="set_import_status")
            with gr.Tab("Class display", id="course_class"):
                cstate = gr.State(None)
                with gr.Row():
                    class_set = gr.Dropdown(names, label="Set", elem_id="class_set")
                    class_k = gr.Number(1, precision=0, minimum=1, label="Case", elem_id="class_case")
                    class_go = gr.Button("Show", variant="primary", elem_id="class_show")
                    class_reveal = gr.Button("Reveal", elem_id="class_reveal")
                class_title = gr.Markdown(elem_id="class_title")
                with gr.Row(elem_classes=["hldm-big-play"]):
                    class_audio = audio_player(label="Play", elem_id="class_audio")
                    class_half = audio_player(label="Half speed", elem_id="class_half")
                class_spec = figure(label="Case", elem_id="class_spec", elem_classes=["hldm-projector"])
                class_timeline = gr.HTML(elem_id="class_timeline")
                class_answer = gr.Markdown(elem_id="class_answer")

    ui = {"api_name": False, "queue": False}
    sign.click(h.sign_in, name, [learner, who], **ui)
    name.submit(h.sign_in, name, [learner, who], **ui)
    case_out = [paudio, phalf, pnote, *pq, pfeedback, pspec, ptimeline]
    nxt.click(h.practice_next, [learner, source], [pstate, pheader, *case_out], **PAGE_COURSE_CALL)
    check.click(h.practice_check, [pstate, *pq], [pstate, pfeedback, pspec, ptimeline], **PAGE_COURSE_CALL)
    screen_out = [sstate, sheader, saudio, shalf, snote, *sq, sreport_box, splot, sreport]
    sstart.click(h.screening_start, [learner, sseed], screen_out, **PAGE_COURSE_CALL)
    submit.click(h.screening_submit, [sstate, *sq], screen_out, **PAGE_COURSE_CALL)
    dnew.click(h.drill_new, [learner, dattr], [dstate, dquestion, da, db, dnote, dgiven, dfeedback, dimage],
               **PAGE_COURSE_CALL)
    dcheck.click(h.drill_check, [learner, dstate, dgiven], [dstate, dfeedback, dimage], **PAGE_COURSE_CALL)
    pshow.click(h.progress, learner, [ptext, pplot, pscreens], **PAGE_COURSE_CALL)
    add_cond.click(h.set_add_conditions, [cases, set_conditions, set_seed], [cases, set_list], **ui)
    add_designed.click(h.set_add_designed, [cases, set_seed, *design.controls], [cases, set_list], **ui)
    clear.click(lambda: h._set_list([]), None, [cases, set_list], **ui)
    choices = [source, export_name, class_set]
    save.click(h.set_save, [set_name, cases], [set_status, *choices], **PAGE_COURSE_CALL)
    export.click(h.set_export, [export_name, wavs], [export_file, set_status], **PAGE_COURSE_CALL)
    import_file.upload(h.set_import, import_file, [import_status, import_file, *choices], **PAGE_COURSE_CALL)
    class_go.click(h.class_show, [class_set, class_k], [cstate, class_title, class_audio, class_half, class_spec,
                                                       class_timeline], **PAGE_COURSE_CALL)
    class_reveal.click(h.class_reveal, cstate, [class_spec, class_timeline, class_answer], **PAGE_COURSE_CALL)
    return h
