"""The whole page over one pipeline, and how it is served: loopback by default, a bounded queue, no
share link, upload size capped."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from hldm.app.common import MODEL_CALL
from hldm.app.design import build_design
from hldm.app.export import build_export_tab
from hldm.app.generate import build_generate_tab
from hldm.app.interpretability import build_interpretability_tab
from hldm.app.quiz import build_quiz_tab
from hldm.app.upload import UPLOAD_MAX_BYTES, build_upload_tab
from hldm.app.what_if import build_what_if_tab
from hldm.paths import DEFAULT_CHECKPOINT, REPO
from hldm.pipeline import HLDMPipeline
from hldm.ratings.store import RatingStore, default_db_path
from hldm.ratings.ui import build_rating_tab

NO_CHECKPOINT_BANNER = "No trained checkpoint installed — running an untrained demo model (noise-like output)"
CONCURRENCY = 2  # model calls at once (all tabs and endpoints together); the rest wait in the queue
QUEUE_SIZE = 128


def has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def load_pipeline(checkpoint: Path = DEFAULT_CHECKPOINT) -> tuple[HLDMPipeline, str | None]:
    """The trained pipeline, or an untrained tiny one plus the banner that says so."""
    checkpoint = Path(checkpoint)
    if has_checkpoint(checkpoint):
        return HLDMPipeline.from_pretrained(checkpoint), None
    from hldm.models.hldm import HLDMConfig

    return HLDMPipeline.from_config(HLDMConfig.tiny()), NO_CHECKPOINT_BANNER


def build_app(pipeline: HLDMPipeline, banner: str | None = None, ratings: RatingStore | None = None,
              real=None) -> gr.Blocks:
    """The whole UI over one pipeline; serve it with `launch()`.

    ratings: the Rate tab's database (default: `default_db_path()`); real: recordings mixed blind into
    rating sessions (a CirCor-layout folder or its `real_recordings`; None: synthetic only)."""
    ratings = RatingStore(default_db_path()) if ratings is None else ratings
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
            build_quiz_tab()
            export = build_export_tab(pipeline, design)
            with gr.Tab("Rate", id="rate"):
                build_rating_tab(pipeline, ratings, real_dir=real)
        # The API (hldm.app.api), outside the tabs: gr.api adds components, and gr.Tabs holds only tabs.
        for fn, name in ((generate.generate_api, "generate"), (what_if.what_if_api, "what_if"),
                         (upload.edit_api, "edit"), (export.export_api, "export")):
            gr.api(fn, api_name=name, **MODEL_CALL)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Queue with a concurrency limit, loopback by default, no share link, upload size capped."""
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    # _frontend=False skips Gradio's self-check (HEAD / with a 3 s timeout), which on a busy machine
    # times out and then aborts asking for a share link; we never share, and the page does load.
    return app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                      max_file_size=UPLOAD_MAX_BYTES, css_paths=[REPO / "assets" / "app.css"], show_error=True,
                      footer_links=[], quiet=not block, _frontend=False)
