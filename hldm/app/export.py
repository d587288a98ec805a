"""The Batch export tab and the /export endpoint: N clips of the current findings as a ZIP of 4 kHz WAVs
with labels.csv and labels.json, the same ZIP as `python -m hldm export`."""
from __future__ import annotations

import io

import gradio as gr

from hldm.app.api import SamplerName, cached_file, findings_api
from hldm.app.common import MAX_SECONDS, PAGE_MODEL_CALL, clamp, clamp_int, findings_or_raise, sampling
from hldm.app.design import Design
from hldm.clinical.vocabulary import Findings
from hldm.pipeline import HLDMPipeline
from hldm.pipeline_cli import write_export

MAX_EXPORT_CLIPS = 50
EXPORT_BATCH = 4  # clips per batched pipeline call


class ExportHandlers:
    """The tab's callbacks over one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline

    def _export(self, findings: Findings, n, seconds, seed, steps, guidance, sampler,
                progress=None) -> tuple[gr.FileData, int, float]:
        """The ZIP in Gradio's cache, the clip count and length it holds."""
        n = clamp_int(n, 1, MAX_EXPORT_CLIPS, "clips")
        seconds = clamp(seconds, 1.0, MAX_SECONDS, "seconds")
        settings = sampling(seed, steps, guidance, sampler)
        first = settings.pop("seed")
        buf = io.BytesIO()
        write_export(self.pipeline, [findings], n, buf, seed=first, batch_size=EXPORT_BATCH, progress=progress,
                     seconds=seconds, **settings)
        return cached_file(buf.getvalue(), f"hldm_export_{n}clips_seed{first}.zip"), n, seconds

    def export(self, n, seconds, seed, *args, progress=gr.Progress()):
        """Clip count, length, first seed, controls and sampling settings -> (ZIP path, status)."""
        *values, steps, guidance, sampler = args
        zip_file, n, seconds = self._export(
            findings_or_raise(values), n, seconds, seed, steps, guidance, sampler,
            lambda done, total: progress((done, total), desc="generating clips", unit="clips"))
        return zip_file.path, f"✓ {n} clips ({seconds:g} s each) with labels.csv and labels.json."

    @findings_api
    def export_api(self, findings: Findings, n: int = 8, seconds: float = 4.0, seed: int = 0,
                   steps: int | None = None, guidance: float | None = None,
                   sampler: SamplerName | None = None) -> gr.FileData:
        """N clips of the findings as a ZIP of 4 kHz WAVs with labels.csv and labels.json (data augmentation).

        Parameters:
            n: number of clips, 1-50 (seeds seed, seed+1, ...)
            seconds: length of each clip in seconds
            seed: the first clip's seed
        Returns:
            the ZIP file
        """
        return self._export(findings, n, seconds, seed, steps, guidance, sampler)[0]


def build_export_tab(pipeline: HLDMPipeline, design: Design) -> ExportHandlers:
    """The tab inside an open `gr.Tabs`, its button and the /export endpoint."""
    h = ExportHandlers(pipeline)
    with gr.Tab("Batch export", id="export"):
        gr.Markdown("N clips of the current findings (seeds seed, seed+1, ...) as a ZIP of 4 kHz WAVs "
                    "plus labels.csv and labels.json, for data augmentation.")
        with gr.Row():
            n = gr.Slider(1, MAX_EXPORT_CLIPS, value=8, step=1, label="Clips", elem_id="export_n")
            seconds = gr.Slider(2.0, MAX_SECONDS, value=4.0, step=0.5, label="Length (s)", elem_id="export_seconds")
            seed = gr.Number(value=0, precision=0, minimum=0, label="First seed", elem_id="export_seed")
        button = gr.Button("Export ZIP", variant="primary", elem_id="export_btn")
        file = gr.File(label="ZIP", interactive=False, elem_id="export_file")
        status = gr.Markdown(elem_id="export_status")
    d = design
    button.click(h.export, [n, seconds, seed, *d.controls, d.steps, d.guidance, d.sampler], [file, status],
                 **PAGE_MODEL_CALL)
    return h
