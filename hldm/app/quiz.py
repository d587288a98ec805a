"""The Teaching quiz tab: an unknown murmur from the physiological simulator (its labels are exact,
whatever the model's quality); the student answers grade, timing, location and condition, is scored,
and sees the case revealed on the annotated spectrogram."""
from __future__ import annotations

import time

import gradio as gr
import numpy as np

from hldm import app_views
from hldm.app.common import GRADE_CHOICES, audio_player, figure, playback_copy, show
from hldm.audio.features import normalize_loudness, to_features
from hldm.clinical import vocabulary as V
from hldm.clinical.prompts import build_prompts
from hldm.clinical.validation import validate_dict
from hldm.data.simulator import sample_findings, simulate

QUIZ_SECONDS = 6.0


class QuizHandlers:
    """The tab's callbacks; plain methods so tests can call them directly."""

    def quiz_new(self, counter):
        counter = int(counter or 0) + 1
        seed = int(time.time_ns() % 1_000_000_007) + counter
        f = sample_findings(np.random.default_rng(seed))
        sim = simulate(f, seconds=QUIZ_SECONDS, seed=seed)
        case = {"findings": sim.findings.to_dict(), "audio": sim.audio.astype(np.float32),
                "intervals": simulator_intervals(sim)}
        return (case, counter, playback_copy(sim.audio, sim.sr), None,
                "Listen, then answer grade, timing, location and condition.")

    def quiz_check(self, case, grade, timing, location, condition):
        if not case:
            raise gr.Error("Press *New case* first.")
        truth = case["findings"]
        answers = {"grade": (None if grade in (None, "", "none") else int(grade), truth["grade"]),
                   "timing": (None if timing in (None, "", "none") else timing, truth["timing"]),
                   "location": (location or None, truth["location"]),
                   "condition": (condition or None, truth["condition"])}
        rows = [f"| {k} | {show(given, k)} | {show(right, k)} | {'✓' if given == right else '✗'} |"
                for k, (given, right) in answers.items()]
        score = sum(given == right for given, right in answers.values())
        md = "\n".join([f"### Score: {score} / {len(answers)}", "", "| | your answer | answer | |",
                        "|---|---|---|---|", *rows])
        title = build_prompts(validate_dict(truth)).l2
        spec = app_views.spectrogram_image(to_features(normalize_loudness(case["audio"])).numpy(),
                                           case["intervals"], title=title)
        return md, spec


def simulator_intervals(sim) -> list[tuple[float, float, str]]:
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


def build_quiz_tab() -> QuizHandlers:
    """The tab inside an open `gr.Tabs` and its events (public: /quiz_new, /quiz_check)."""
    h = QuizHandlers()
    with gr.Tab("Teaching quiz", id="quiz"):
        gr.Markdown("A synthetic murmur from the physiological simulator: listen, answer, check.")
        case, counter = gr.State(None), gr.State(0)
        new = gr.Button("New case", elem_id="quiz_new")
        audio = audio_player(label="Unknown case", elem_id="quiz_audio")
        with gr.Row():
            grade = gr.Dropdown([("none", "none"), *GRADE_CHOICES], value=None, label="Grade", elem_id="q_grade")
            timing = gr.Dropdown(["none", *V.TIMINGS], value=None, label="Timing", elem_id="q_timing")
            location = gr.Dropdown(list(V.LOCATIONS), value=None, label="Location", elem_id="q_location")
            condition = gr.Dropdown(list(V.CONDITIONS), value=None, label="Condition", elem_id="q_condition")
        check = gr.Button("Check my answer", variant="primary", elem_id="quiz_check")
        result = gr.Markdown(elem_id="quiz_result")
        spec = figure(label="Answer: annotated spectrogram", elem_id="quiz_spec")
    new.click(h.quiz_new, counter, [case, counter, audio, spec, result], api_name="quiz_new")
    check.click(h.quiz_check, [case, grade, timing, location, condition], [result, spec], api_name="quiz_check")
    return h
