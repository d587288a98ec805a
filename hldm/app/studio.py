"""The whole page over one pipeline, and how it is served: loopback by default, a bounded queue, no
share link, upload size capped."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import torch

from hldm.app.common import MODEL_CALL
from hldm.app.design import build_design
from hldm.app.export import build_export_tab
from hldm.app.generate import build_generate_tab
from hldm.app.interpretability import build_interpretability_tab
from hldm.app.course import COURSE_CALL, build_course_tab
from hldm.app.upload import UPLOAD_MAX_BYTES, build_upload_tab
from hldm.app.what_if import build_what_if_tab
from hldm.models.checkpoint import CheckpointError
from hldm.paths import DEFAULT_CHECKPOINT, REPO, cache_dir
from hldm.pipeline import HLDMPipeline
from hldm.ratings.store import RatingStore, default_db_path
from hldm.ratings.ui import build_rating_tab
from hldm.teaching.course import Course
from hldm.teaching.course_store import CourseStore

NO_CHECKPOINT_BANNER = "No trained checkpoint installed — running an untrained demo model (noise-like output)"
CONCURRENCY = 2  # model calls at once (all tabs and endpoints together); the rest wait in the queue
QUEUE_SIZE = 128


def has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


class BackgroundPipeline:
    """A checkpoint's pipeline loading on a thread, so the page is served before the weights are in;
    the load begins at `start()` (the app: once its page is served) or at the first use.

    The page is built from the generation defaults and the device, which config.json gives at once
    (a bad config stops the start with CheckpointError); any other attribute (generate, what_if,
    edit, model ...) waits for the load and is then the loaded pipeline's, or raises CheckpointError
    with the load's error. The load ends with a one-step warm-up clip, so the first request does not
    also pay for the sampler's imports and first-call allocations.
    """

    def __init__(self, checkpoint: Path, device=None, on_ready: Callable[[BaseException | None], None] | None = None):
        from hldm.models.hldm import load_config
        from hldm.pipeline import default_device

        self.config = load_config(checkpoint)
        self.device = torch.device(device or default_device())
        self._loaded = threading.Event()
        self._pipeline: HLDMPipeline | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(Path(checkpoint), on_ready), name="hldm-load",
                                        daemon=True)
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Begin loading (once). The app calls it when its page is served: loading is Python work that
        holds the GIL, so begun earlier it slowed building the page as much as it overlapped it
        (measured: page after 18.8 s with the load begun first, the model ready at 17.7 s)."""
        with self._start_lock:
            if not self._thread.is_alive() and not self._loaded.is_set():
                self._thread.start()

    def _load(self, checkpoint: Path, on_ready) -> None:
        try:
            pipeline = HLDMPipeline.from_pretrained(checkpoint, self.device)
            pipeline.generate({}, seconds=1.0, steps=1)
            self._pipeline = pipeline
        except Exception as e:  # re-raised to every caller of the pipeline, see `wait`
            self._error = e
        self._loaded.set()
        if on_ready is not None:
            on_ready(self._error)

    def wait(self) -> HLDMPipeline:
        self.start()  # a caller before the page was served (tests, scripts) need not start it first
        self._loaded.wait()
        if self._error is not None:
            raise CheckpointError(f"the model could not be loaded: {self._error}") from self._error
        return self._pipeline

    def __getattr__(self, name: str):  # only names not set in __init__ get here
        return getattr(self.wait(), name)


def load_pipeline(checkpoint: Path = DEFAULT_CHECKPOINT, on_ready=None) -> tuple[HLDMPipeline, str | None]:
    """The trained pipeline (loading in the background, see BackgroundPipeline), or an untrained tiny
    one plus the banner that says so."""
    checkpoint = Path(checkpoint)
    if has_checkpoint(checkpoint):
        return BackgroundPipeline(checkpoint, on_ready=on_ready), None
    from hldm.models.hldm import HLDMConfig

    pipeline = HLDMPipeline.from_config(HLDMConfig.tiny())
    if on_ready is not None:
        on_ready(None)
    return pipeline, NO_CHECKPOINT_BANNER


def load_course(pipeline: HLDMPipeline, data_dir: Path | None = None, **settings) -> Course:
    """The Course tab's state: its database and render cache in `data_dir` (default `cache_dir()`), cases
    verified by checkpoints/evaluator (absent: every case from the simulator, and the page says so)."""
    from hldm.eval.evaluator_cli import load_evaluator
    from hldm.teaching.cases import EvaluatorVerifier

    data_dir = cache_dir() if data_dir is None else Path(data_dir)
    evaluator = REPO / "checkpoints" / "evaluator"
    verifier = EvaluatorVerifier(load_evaluator(evaluator)) if has_checkpoint(evaluator) else None
    return Course(pipeline, CourseStore(CourseStore.default_path(data_dir)), data_dir / "course-cases", verifier,
                  **settings)


def build_app(pipeline: HLDMPipeline, banner: str | None = None, ratings: RatingStore | None = None,
              real=None, course: Course | None = None) -> gr.Blocks:
    """The whole UI over one pipeline; serve it with `launch()`.

    ratings: the Rate tab's database (default: `default_db_path()`); real: recordings mixed blind into
    rating sessions (a CirCor-layout folder or its `real_recordings`; None: synthetic only); course: the
    Course tab's state (default: `load_course(pipeline)`)."""
    ratings = RatingStore(default_db_path()) if ratings is None else ratings
    course = load_course(pipeline) if course is None else course
    with gr.Blocks(title="H-LDM Studio", analytics_enabled=False) as app:
        gr.Markdown(f"# H-LDM Studio\nSynthetic phonocardiograms from clinical findings · device: "
                    f"**{pipeline.device}**", elem_id="header")
        if banner:
            gr.Markdown(f"⚠️ **{banner}**", elem_id="banner", elem_classes=["hldm-banner"])
        design = build_design(app, pipeline.config.diffusion)
        interp = gr.State(None)  # the last generation's traces, drawn by the Interpretability tab
        with gr.Tabs():
            generate = build_generate_tab(pipeline, design, interp)
            what_if = build_what_if_tab(pipeline, design)
            build_interpretability_tab(app, pipeline, interp)
            upload = build_upload_tab(pipeline, design)
            course_tab = build_course_tab(course, design)
            export = build_export_tab(pipeline, design)
            with gr.Tab("Rate", id="rate"):
                build_rating_tab(pipeline, ratings, real_dir=real)
        # The API (hldm.app.api), outside the tabs: gr.api adds components, and gr.Tabs holds only tabs.
        for fn, name in ((generate.generate_api, "generate"), (what_if.what_if_api, "what_if"),
                         (upload.edit_api, "edit"), (upload.edit_recording_api, "edit_recording"),
                         (export.export_api, "export")):
            gr.api(fn, api_name=name, **MODEL_CALL)
        for fn, name in ((course_tab.set_api, "course_set"), (course_tab.case_api, "course_case"),
                         (course_tab.answer_api, "course_answer")):
            gr.api(fn, api_name=name, **COURSE_CALL)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
           serving: Callable[[], None] | None = None):
    """Queue with a concurrency limit, loopback by default, no share link, upload size capped.
    serving: called once the page is served (e.g. BackgroundPipeline.start)."""
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    # _frontend=False skips Gradio's self-check (HEAD / with a 3 s timeout), which on a busy machine
    # times out and then aborts asking for a share link; we never share, and the page does load.
    out = app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True,
                     max_file_size=UPLOAD_MAX_BYTES, css_paths=[REPO / "assets" / "app.css"], show_error=True,
                     js=(REPO / "assets" / "course.js").read_text(),
                     footer_links=[], quiet=not block, _frontend=False)
    if serving is not None:
        serving()
    if block:
        app.block_thread()
    return out
