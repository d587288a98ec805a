"""The app's "Rate" tab: a reader rates blind clips; the report reads the stored answers.

    with gr.Tab("Rate", id="rate"):
        build_rating_tab(pipeline, RatingStore(path), real_dir=args.real_dir)

Every answer is written to the ratings database (one transaction) before the next
clip is shown, so a closed browser or a killed app loses nothing answered; the
same reader pressing *Start or resume* again continues where they stopped.
The clip's source and findings are never sent to the browser during a session.
"""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hldm.audio.io import resample
from hldm.clinical import vocabulary as V
from hldm.ratings.session import (MAX_CLIPS, RealRecording, SyntheticSource, as_source, real_recordings,
                                  render, resume_or_start, start_session)
from hldm.ratings.stats import ATTRIBUTES, PLAUSIBLE, SOURCES, Report, make_report, report_markdown, write_csv
from hldm.ratings.store import Answer, RatingsError, RatingStore

PLAYBACK_RATE = 8000  # as the app's other players: laptop speakers handle 8 kHz better than 4 kHz
NOT_SURE = "not sure"
SAID = ("real", "synthetic")
PLAUSIBILITY_CHOICES = [("1 — not a heart sound", 1), ("2", 2), ("3", 3), ("4", 4),
                        ("5 — indistinguishable from a patient", 5)]
GRADE_CHOICES = [NOT_SURE, *[(r, i + 1) for i, r in enumerate(V.ROMAN)]]
DEFAULT_CLIPS = 20


class RatingHandlers:
    """The tab's callbacks over one generator, store and real-recording folder; plain methods for tests."""

    def __init__(self, pipeline, store: RatingStore, real_dir: str | Path | list[RealRecording] | None = None):
        self.source: SyntheticSource = as_source(pipeline)
        self.store = store
        self.real_dir = real_dir  # a folder, or its recordings already scanned (`real_recordings`)
        self._real: list[RealRecording] | None = list(real_dir) if isinstance(real_dir, (list, tuple)) else None
        self._scan = threading.Lock()

    def real(self) -> list[RealRecording] | None:
        """The usable real recordings, scanned once (a CirCor folder takes seconds to index)."""
        if self.real_dir is None:
            return None
        with self._scan:
            if self._real is None:
                self._real = real_recordings(self.real_dir)
        return self._real

    # -- readers and sessions
    def register(self, name):
        try:
            r = self.store.add_reader(name)
        except RatingsError as exc:
            raise gr.Error(str(exc)) from exc
        return f"✓ Reader **{r.name}** registered. Press *Start or resume*."

    def start(self, name, n_clips, seed, new_session):
        """Resume the reader's unfinished session (unless a new one is asked for) and show its next clip."""
        try:
            reader = self.store.reader(name).name
            n = int(n_clips)
            seed = _study_seed(seed)
            if new_session:
                session, resumed = start_session(self.store, reader, n, self.source, self.real(), seed), False
            else:
                session, resumed = resume_or_start(self.store, reader, n, self.source, self.real(), seed)
        except (RatingsError, TypeError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        note = (f"Resumed session {session.id} at clip {session.n_answered + 1}." if resumed
                else f"Started session {session.id} ({session.n_clips} clips, seed {session.seed}).")
        return self._show({"session": session.id, "reader": reader}, note)

    def submit(self, state, said, plausibility, murmur, timing, grade, location):
        """Store the answer for the clip on screen, then show the next one."""
        if not state or state.get("clip") is None:
            raise gr.Error("Start a session first.")
        missing = [label for label, v in (("real or synthetic", said), ("plausibility", plausibility),
                                          ("murmur", murmur)) if v in (None, "")]
        if missing:
            raise gr.Error(f"Answer {', '.join(missing)} before submitting.")
        present = murmur == "present"
        answer = Answer(said_real=said == "real", plausibility=int(plausibility), murmur=murmur,
                        timing=_opt(timing) if present else None, grade=_opt_int(grade) if present else None,
                        location=_opt(location))
        try:
            self.store.record_answer(state["session"], state["clip"], answer)
            note = "✓ Answer stored."
        except RatingsError as exc:
            if "already answered" not in str(exc):
                raise gr.Error(str(exc)) from exc
            note = "This clip was already answered (the first answer is kept)."
        return self._show(state, note)

    def _show(self, state: dict, note: str):
        """Outputs: state, audio, progress, note, then the six answer fields reset."""
        session = self.store.session(state["session"])
        clip = self.store.next_clip(session.id)
        reset = [None, None, None, NOT_SURE, NOT_SURE, NOT_SURE]
        if clip is None:
            done = {**state, "clip": None}
            return (done, None, f"**Session {session.id} complete** — {session.n_clips} clips rated by "
                    f"{session.reader}. Thank you.", note, *reset)
        try:
            audio = render(clip, self.source)
        except RatingsError as exc:
            raise gr.Error(str(exc)) from exc
        x = np.clip(resample(audio, V.SAMPLE_RATE, PLAYBACK_RATE), -1.0, 1.0)
        progress = f"**Clip {session.n_answered + 1} of {session.n_clips}** — session {session.id}, reader {session.reader}"
        return ({**state, "clip": clip.id}, (PLAYBACK_RATE, (x * 32767).astype(np.int16)), progress, note, *reset)

    # -- report
    def report(self):
        rep = make_report(self.store.answer_rows())
        return report_markdown(rep, "Rating report (stored answers)"), (report_image(rep) if rep.n_answers else None)

    def export_csv(self):
        rows = self.store.answer_rows()
        if not rows:
            raise gr.Error("No answers stored yet.")
        out = Path(tempfile.mkdtemp(prefix="hldm-ratings-")) / "ratings.csv"
        return str(write_csv(rows, out))


def _study_seed(v) -> int | None:
    """The study seed box: blank -> None (fresh clips), else a whole number >= 0."""
    text = "" if v is None else str(v).strip()
    if not text:
        return None
    if not text.isdigit():
        raise RatingsError(f"study seed: {text!r} is not a whole number >= 0; leave it blank for fresh clips")
    return int(text)


def _opt(v):
    return None if v in (None, "", NOT_SURE) else v


def _opt_int(v):
    return None if v in (None, "", NOT_SURE) else int(v)


def report_image(report: Report) -> np.ndarray:
    """CV and detection accuracy, and per-attribute agreement, as bars with 95 % Wilson intervals (H, W, 3)."""
    fig = Figure(figsize=(10, 3.6), dpi=100, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1, 2))
    bars = [("clinical\nvalidity", report.clinical_validity, "#2ca02c")]
    if report.detection is not None:
        bars.append(("detection\naccuracy", report.detection, "#1f77b4"))
    _bars(ax1, np.arange(len(bars)), [b[1] for b in bars], [b[2] for b in bars], 0.6)
    ax1.set_xticks(np.arange(len(bars)), [b[0] for b in bars])
    ax1.axhline(50, color="grey", ls="--", lw=1)
    ax1.set_title(f"CV = plausible ≥ {PLAUSIBLE}; 50 % = indistinguishable", fontsize=9)
    x = np.arange(len(ATTRIBUTES))
    for k, (src, color) in enumerate(zip(SOURCES, ("#d62728", "#7f7f7f"))):
        _bars(ax2, x + (k - 0.5) * 0.38, [report.agreement[src][a] for a in ATTRIBUTES], [color] * len(x), 0.36,
              label=f"{src} ({'requested' if src == 'synthetic' else 'annotated'})")
    ax2.set_xticks(x, ATTRIBUTES)
    ax2.set_title("heard vs truth", fontsize=9)
    ax2.legend(fontsize=8, loc="lower right")
    for ax in (ax1, ax2):
        ax.set_ylim(0, 105)
        ax.set_ylabel("% of answers")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _bars(ax, x, props, colors, width, label=None):
    p = np.array([100 * q.p if q.n else 0.0 for q in props])
    lo = np.array([100 * q.ci[0] if q.n else 0.0 for q in props])
    hi = np.array([100 * q.ci[1] if q.n else 0.0 for q in props])
    ax.bar(x, p, width, color=colors, label=label, yerr=np.vstack([p - lo, hi - p]), capsize=3)


def _folder_name(real_dir) -> str:
    if isinstance(real_dir, (list, tuple)):
        return ", ".join(sorted({r.path.parent.name for r in real_dir}))
    return Path(real_dir).name


def build_rating_tab(pipeline, store: RatingStore,
                     real_dir: str | Path | list[RealRecording] | None = None) -> RatingHandlers:
    """Create and wire the Rate tab's components inside an open `gr.Blocks()` / `gr.Tab` context.

    pipeline: the app's HLDMPipeline (or a session.SyntheticSource, e.g. the simulator);
    real_dir: a CirCor-layout folder of real recordings mixed in blind, or its `real_recordings`
    (None: synthetic only).
    Returns the handlers (tests call them directly)."""
    h = RatingHandlers(pipeline, store, real_dir)
    mix = (f"about half synthetic, half real recordings from `{_folder_name(real_dir)}`" if real_dir
           else "synthetic clips only (start the app with a real-recordings folder to mix real ones in)")
    gr.Markdown("Blind reading session: each clip is 4-10 s, level-matched, " + mix + ". For each clip say "
                "whether it is real or synthetic, how clinically plausible it sounds (1-5) and what you hear. "
                "Answers are saved one by one; *Start or resume* continues an interrupted session. Readers "
                "who use the same study seed hear the same clips (for inter-reader agreement).",
                elem_id="rate_intro")
    state = gr.State(None)
    with gr.Row():
        reader = gr.Textbox(label="Reader (name or code)", max_lines=1, elem_id="rate_reader")
        register = gr.Button("Register reader", size="sm", elem_id="rate_register")
        n_clips = gr.Slider(1, MAX_CLIPS, value=DEFAULT_CLIPS, step=1, label="Clips per session", elem_id="rate_n")
        # a Textbox, not a Number: Gradio shows an empty Number as 0, and 0 is a seed like any other
        seed = gr.Textbox(value="", max_lines=1, label="Study seed (blank = fresh clips)", elem_id="rate_seed")
        new_session = gr.Checkbox(value=False, label="New session even if one is unfinished", elem_id="rate_new")
    start = gr.Button("Start or resume", variant="primary", elem_id="rate_start")
    progress = gr.Markdown(elem_id="rate_progress")
    clip_audio = gr.Audio(label="Clip", type="numpy", format="wav", interactive=False, buttons=[],
                          elem_id="rate_audio")
    with gr.Row():
        said = gr.Radio(list(SAID), value=None, label="Real or synthetic?", elem_id="rate_said")
        plausibility = gr.Radio(PLAUSIBILITY_CHOICES, value=None, label="Clinically plausible?",
                                elem_id="rate_plausibility")
    with gr.Row():
        murmur = gr.Radio(list(V.MURMUR_STATUS), value=None, label="Murmur", elem_id="rate_murmur")
        timing = gr.Dropdown([NOT_SURE, *V.TIMINGS], value=NOT_SURE, label="Timing", elem_id="rate_timing")
        grade = gr.Dropdown(GRADE_CHOICES, value=NOT_SURE, label="Grade", elem_id="rate_grade")
        location = gr.Dropdown([NOT_SURE, *V.LOCATIONS], value=NOT_SURE, label="Location (loudest)",
                               elem_id="rate_location")
    submit = gr.Button("Submit and next", variant="primary", elem_id="rate_submit")
    note = gr.Markdown(elem_id="rate_status")
    with gr.Accordion("Report from stored answers", open=False):
        with gr.Row():
            report_btn = gr.Button("Refresh report", size="sm", elem_id="rate_report_btn")
            csv_btn = gr.Button("Export CSV", size="sm", elem_id="rate_csv_btn")
        report_md = gr.Markdown(elem_id="rate_report")
        report_img = gr.Image(type="numpy", interactive=False, label="Report", show_label=False, elem_id="rate_plot")
        csv_file = gr.File(label="answers.csv", interactive=False, elem_id="rate_csv")

    form = [said, plausibility, murmur, timing, grade, location]
    shown = [state, clip_audio, progress, note, *form]
    register.click(h.register, reader, note, queue=False)
    # Rendering a clip may run the model: these go through the queue.
    start.click(h.start, [reader, n_clips, seed, new_session], shown, api_name="rate_start")
    submit.click(h.submit, [state, *form], shown, api_name="rate_submit")
    report_btn.click(h.report, None, [report_md, report_img], api_name="rate_report")
    csv_btn.click(h.export_csv, None, csv_file, api_name="rate_export")
    return h
