"""The What-if tab and the /what_if endpoint: the same seed and initial noise with one attribute
changed (e.g. grade II/VI -> IV/VI), both spectrograms, their difference and the latent subspaces
that moved."""
from __future__ import annotations

import gradio as gr

from hldm import app_views
from hldm.app.api import SamplerName, findings_api, wav_file, what_if_record
from hldm.app.common import (MAX_SECONDS, PAGE_MODEL_CALL, UI_ONLY, WHAT_IF_CHOICES, audio_out, audio_player, change,
                             clamp, conform_switch, deltas_markdown, figure, findings_or_raise, offer_values,
                             progress_bar, sampling, show)
from hldm.app.design import Design
from hldm.clinical.validation import FindingsError, validate_dict
from hldm.clinical.vocabulary import Findings
from hldm.pipeline import HLDMPipeline, WhatIf


def refuse_no_change(findings: Findings, change: dict) -> None:
    """A what-if whose change leaves the findings as they are would play the same clip twice."""
    if isinstance(change, dict) and validate_dict({**findings.to_dict(), **change}) == findings:
        already = ", ".join(f"{k} is already {show(getattr(findings, k), k)}" for k in change)
        raise gr.Error(f"What-if: {already or 'no change given'}; pick a different value.")


class WhatIfHandlers:
    """The tab's callbacks over one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline

    def _what_if(self, findings: Findings, change: dict, hold, conform, seed, steps, guidance, sampler, seconds,
                 progress=None) -> WhatIf:
        try:
            refuse_no_change(findings, change)
            return self.pipeline.what_if(findings, change, seconds=clamp(seconds, 1.0, MAX_SECONDS, "seconds"),
                                         progress=progress, hold=bool(hold), conform=conform,
                                         **sampling(seed, steps, guidance, sampler))
        except gr.Error:
            raise
        except (FindingsError, ValueError, TypeError) as exc:
            raise gr.Error(f"What-if not possible: {exc}") from exc

    def what_if(self, attribute, new_value, hold, conform, *args, progress=gr.Progress()):
        """Dropdowns, switches, controls and sampling settings -> (before/after/difference image, both audios,
        deltas)."""
        *values, seed, steps, guidance, sampler, seconds = args
        wi = self._what_if(findings_or_raise(values), change(attribute, new_value), hold, conform, seed, steps,
                           guidance, sampler, seconds, progress_bar(progress, "sampling both"))
        before, after = (show(getattr(g.findings, attribute), attribute) for g in (wi.a, wi.b))
        img = app_views.what_if_image(wi.a.features, wi.b.features, wi.a.intervals, wi.b.intervals,
                                      titles=(f"Before: {attribute} = {before}", f"After: {attribute} = {after}"))
        return img, audio_out(wi.a.audio, wi.a.sr), audio_out(wi.b.audio, wi.b.sr), deltas_markdown(wi)

    @findings_api
    def what_if_api(self, change: dict, findings: Findings, hold: bool = True, seed: int = 0,
                    steps: int | None = None, guidance: float | None = None, sampler: SamplerName | None = None,
                    seconds: float = 10.0, conform: bool | None = None) -> tuple[gr.FileData, gr.FileData, dict]:
        """Two clips from the same seed and initial noise: the findings, and the findings with `change` applied.

        Parameters:
            change: the findings fields to change, e.g. {"grade": 4}
            hold: keep what the change cannot move (a murmur edit keeps the rhythm and S1/S2 of the first clip)
            seed: the same seed and findings give the same pair
            seconds: clip length in seconds
        Returns:
            the WAV before and after the change, and the record: changed fields, held subspaces,
            relative change of each latent subspace, and both clips' records
        """
        wi = self._what_if(findings, change, hold, conform, seed, steps, guidance, sampler, seconds)
        return (wav_file(wi.a.audio, wi.a.sr, f"before_seed{wi.a.seed}.wav"),
                wav_file(wi.b.audio, wi.b.sr, f"after_seed{wi.b.seed}.wav"), what_if_record(wi))


def build_what_if_tab(pipeline: HLDMPipeline, design: Design) -> WhatIfHandlers:
    """The tab inside an open `gr.Tabs`, its button and the /what_if endpoint."""
    h = WhatIfHandlers(pipeline)
    with gr.Tab("What-if", id="what_if"):
        gr.Markdown("Change one attribute; both clips use the same seed and initial noise.")
        with gr.Row():
            attribute = gr.Dropdown(list(WHAT_IF_CHOICES), value="grade", label="Attribute", elem_id="wi_attr")
            value = gr.Dropdown(WHAT_IF_CHOICES["grade"], value=4, label="New value", allow_custom_value=True,
                                elem_id="wi_value")
            button = gr.Button("Run what-if", variant="primary", elem_id="wi_btn")
        hold = gr.Checkbox(value=True, elem_id="wi_hold",
                           label="Hold what the edit cannot change (a murmur edit keeps the rhythm and S1/S2 of the "
                                 "first clip; untick to let the whole clip re-form)")
        conform = conform_switch("wi_conform", pipeline)
        img = figure(label="Before / after / difference", elem_id="wi_image")
        with gr.Row():
            before = audio_player(label="Before", elem_id="wi_a")
            after = audio_player(label="After", elem_id="wi_b")
        deltas = gr.Markdown(elem_id="wi_deltas")
    attribute.input(offer_values, attribute, value, **UI_ONLY)
    button.click(h.what_if, [attribute, value, hold, conform, *design.controls, *design.sampling],
                 [img, before, after, deltas],
                 **PAGE_MODEL_CALL)
    return h
