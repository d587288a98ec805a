"""The Generate tab and the /generate endpoint: findings -> a playable clip, its spectrogram and the
traces the Interpretability tab draws."""
from __future__ import annotations

import time

import gradio as gr

from hldm import app_views
from hldm.app.api import SamplerName, findings_api, wav_file
from hldm.app.common import (MAX_SECONDS, PAGE_MODEL_CALL, audio_out, audio_player, clamp, conform_switch, figure,
                             findings_or_raise, playback_copy, progress_bar, sampling)
from hldm.app.design import Design
from hldm.clinical.vocabulary import Findings
from hldm.conformance import describe
from hldm.pipeline import Generation, HLDMPipeline


class GenerateHandlers:
    """The tab's callbacks over one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline

    def _generate(self, findings: Findings, seed, steps, guidance, sampler, seconds, conform=None,
                  progress=None) -> Generation:
        return self.pipeline.generate(findings, seconds=clamp(seconds, 1.0, MAX_SECONDS, "seconds"),
                                      progress=progress, conform=conform,
                                      **sampling(seed, steps, guidance, sampler))

    def generate(self, conform, *args, progress=gr.Progress()):
        """The conform switch, controls and sampling settings -> (4 kHz audio, 8 kHz playback copy,
        spectrogram, info, traces)."""
        *values, seed, steps, guidance, sampler, seconds = args
        t0 = time.perf_counter()
        gen = self._generate(findings_or_raise(values), seed, steps, guidance, sampler, seconds, conform,
                             progress_bar(progress, "sampling"))
        elapsed = time.perf_counter() - t0
        spec = app_views.spectrogram_image(gen.features, gen.intervals, title=f"{gen.prompts.l2}  (seed {gen.seed})")
        interp = {"weights": gen.weights, "attention": gen.attention}
        counts = {k: sum(1 for *_, lab in gen.intervals if lab == k) for k in ("S1", "S2", "murmur")}
        info = (f"Generated {gen.seconds:.1f} s in {elapsed:.2f} s on **{gen.device}** ({gen.sampler}, "
                f"{gen.steps} steps, guidance {gen.guidance:g}, seed {gen.seed}). Marked: {counts['S1']} S1, "
                f"{counts['S2']} S2, {counts['murmur']} murmur interval(s). {describe(gen.conformance)}")
        return audio_out(gen.audio, gen.sr), playback_copy(gen.audio, gen.sr), spec, info, interp

    @findings_api
    def generate_api(self, findings: Findings, seed: int = 0, steps: int | None = None,
                     guidance: float | None = None, sampler: SamplerName | None = None,
                     seconds: float = 10.0, conform: bool | None = None) -> tuple[gr.FileData, dict]:
        """Generate one phonocardiogram (4 kHz mono WAV) from clinical findings.

        Parameters:
            seed: the same seed and findings give the same clip
            seconds: clip length in seconds
        Returns:
            the WAV file, and its record: validated findings, L1/L2/L3 prompts, sampler settings,
            per-step noise weights w_i, the S1/S2/murmur intervals in seconds, and what was done to
            make the clip carry its findings (conformance: re-timing, murmur level and source)
        """
        gen = self._generate(findings, seed, steps, guidance, sampler, seconds, conform)
        return wav_file(gen.audio, gen.sr, f"hldm_seed{gen.seed}.wav"), gen.to_json()


def build_generate_tab(pipeline: HLDMPipeline, design: Design, interp: gr.State) -> GenerateHandlers:
    """The tab inside an open `gr.Tabs`, its button (which leaves the sampling traces in `interp`) and
    the /generate endpoint."""
    h = GenerateHandlers(pipeline)
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            button = gr.Button("Generate", variant="primary", elem_id="generate_btn", scale=3)
            conform = conform_switch("gen_conform", pipeline)
        info = gr.Markdown(elem_id="gen_info")
        with gr.Row():
            audio4 = audio_player(label="PCG, 4 kHz WAV", elem_id="audio_4k")
            audio8 = audio_player(label="Louder 8 kHz playback copy", elem_id="audio_8k")
        spec = figure(label="Spectrogram (S1, S2, murmur marked)", elem_id="spectrogram")
    button.click(h.generate, [conform, *design.controls, *design.sampling], [audio4, audio8, spec, info, interp],
                 **PAGE_MODEL_CALL)
    return h
