"""The "Your recording" tab and the /edit endpoint: a user's WAV/FLAC is encoded and re-generated with
one attribute changed (SDEdit: the strength says how far from the recording it may move)."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from hldm import app_views
from hldm.app.api import SamplerName, findings_api, wav_file, what_if_record
from hldm.app.common import (PAGE_MODEL_CALL, UI_ONLY, WHAT_IF_CHOICES, audio_out, audio_player, change, clamp,
                             deltas_markdown, figure, findings_or_raise, offer_values, progress_bar, sampling, show)
from hldm.app.design import Design
from hldm.audio.features import normalize_loudness, to_features
from hldm.audio.io import AudioError, load_audio
from hldm.clinical import vocabulary as V
from hldm.clinical.validation import FindingsError
from hldm.clinical.vocabulary import Findings
from hldm.pipeline import MIN_SECONDS, HLDMPipeline, WhatIf

UPLOAD_MAX_SECONDS = 60.0
UPLOAD_MAX_BYTES = 20_000_000
UPLOAD_MIN_SECONDS = MIN_SECONDS


def load_recording(path: str, name: str) -> np.ndarray:
    """A user's file -> 4 kHz mono waveform within the upload limits; AudioError says why not, naming the
    file by `name` (the server's temp path means nothing to the user)."""
    try:
        audio = load_audio(path, max_seconds=UPLOAD_MAX_SECONDS, max_bytes=UPLOAD_MAX_BYTES)
    except AudioError as exc:
        raise AudioError(str(exc).replace(str(path), name)) from None
    if len(audio) < UPLOAD_MIN_SECONDS * V.SAMPLE_RATE:
        raise AudioError(f"audio: {len(audio) / V.SAMPLE_RATE:.2f} s is too short; "
                         f"at least {UPLOAD_MIN_SECONDS:g} s is needed")
    return audio


class UploadHandlers:
    """The tab's callbacks over one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline

    def upload(self, path):
        """A user's recording -> (file box, state audio, player, spectrogram, status). A refused file is
        taken out of the file box, so the next one can be dropped straight in."""
        if not path:
            return None, None, None, None, "Upload a WAV or FLAC recording."
        try:
            audio = load_recording(path, Path(path).name)
        except AudioError as exc:
            gr.Warning(str(exc))
            return None, None, None, None, f"**❌ Upload refused:** {exc}"
        spec = app_views.spectrogram_image(to_features(normalize_loudness(audio)).numpy(), (),
                                           title="Your recording")
        return (gr.update(), audio, audio_out(audio, V.SAMPLE_RATE), spec,
                f"✓ Loaded {len(audio) / V.SAMPLE_RATE:.1f} s at {V.SAMPLE_RATE} Hz. Set the findings above to "
                "describe it, pick a change, press *Edit*.")

    def _edit(self, audio: np.ndarray, findings: Findings, change: dict, strength, hold, seed, steps, guidance,
              sampler, progress=None) -> WhatIf:
        try:
            return self.pipeline.edit(np.asarray(audio, dtype=np.float32), findings, change,
                                      strength=clamp(strength, 0.05, 1.0, "strength"), hold=bool(hold),
                                      progress=progress, **sampling(seed, steps, guidance, sampler))
        except gr.Error:
            raise
        except (FindingsError, ValueError, TypeError) as exc:
            raise gr.Error(f"Edit not possible: {exc}") from exc

    def edit_upload(self, audio, attribute, new_value, *args, progress=gr.Progress()):
        """Loaded audio, dropdowns, controls, sampling settings and strength -> (image, edited audio, deltas)."""
        *values, seed, steps, guidance, sampler, strength = args
        if audio is None:
            raise gr.Error("Upload a recording first.")
        wi = self._edit(audio, findings_or_raise(values), change(attribute, new_value), strength, True, seed, steps,
                        guidance, sampler, progress_bar(progress, "encoding and editing"))
        titles = ("Your recording, as the model reads it",
                  f"Edited: {attribute} = {show(getattr(wi.b.findings, attribute), attribute)}")
        img = app_views.what_if_image(wi.a.features, wi.b.features, wi.a.intervals, wi.b.intervals, titles=titles)
        return img, audio_out(wi.b.audio, wi.b.sr), deltas_markdown(wi)

    @findings_api
    def edit_api(self, recording: gr.FileData, change: dict, findings: Findings, strength: float = 0.5,
                 hold: bool = True, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 sampler: SamplerName | None = None) -> tuple[gr.FileData, gr.FileData, dict]:
        """Edit a real recording: re-generate it with `change` applied to the findings that describe it.

        Parameters:
            recording: a WAV or FLAC phonocardiogram (gradio_client.handle_file(path)); 0.5-60 s, at most 20 MB
            change: the findings fields to change, e.g. {"grade": 4}
            strength: how far from the recording the edit may move, 0.05 (close) to 1 (ignore it)
            hold: keep what the change cannot move (a murmur edit keeps the rhythm and S1/S2)
            seed: the same seed, recording and findings give the same edit
        Returns:
            the recording as the model reads it and the edited clip (WAVs), and the record: changed
            fields, held subspaces, relative change of each latent subspace, and both clips' records
        """
        try:
            audio = load_recording(recording["path"], recording.get("orig_name") or Path(recording["path"]).name)
        except AudioError as exc:
            raise gr.Error(f"Recording refused: {exc}") from exc
        wi = self._edit(audio, findings, change, strength, hold, seed, steps, guidance, sampler)
        return (wav_file(wi.a.audio, wi.a.sr, "as_read.wav"),
                wav_file(wi.b.audio, wi.b.sr, f"edited_seed{wi.b.seed}.wav"), what_if_record(wi))


def build_upload_tab(pipeline: HLDMPipeline, design: Design) -> UploadHandlers:
    """The tab inside an open `gr.Tabs`, its upload and edit events and the /edit endpoint."""
    h = UploadHandlers(pipeline)
    with gr.Tab("Your recording", id="upload"):
        gr.Markdown(f"Upload a WAV or FLAC PCG ({UPLOAD_MIN_SECONDS:g}–{UPLOAD_MAX_SECONDS:g} s, "
                    f"≤ {UPLOAD_MAX_BYTES // 1_000_000} MB). It is resampled to 4 kHz and encoded; set the "
                    "findings above to describe it, then *Edit* re-generates it with one attribute changed "
                    "(SDEdit: the strength says how far from the recording it may move).")
        loaded = gr.State(None)
        with gr.Row():
            file = gr.File(label="Recording (WAV/FLAC)", file_types=[".wav", ".flac"], type="filepath",
                           elem_id="upload_file")
            player = audio_player(label="As loaded (4 kHz)", elem_id="upload_audio")
        status = gr.Markdown(elem_id="upload_status")
        spec = figure(label="Your recording", elem_id="upload_spec")
        with gr.Row():
            attribute = gr.Dropdown(list(WHAT_IF_CHOICES), value="grade", label="Attribute", elem_id="up_attr")
            value = gr.Dropdown(WHAT_IF_CHOICES["grade"], value=4, label="New value", allow_custom_value=True,
                                elem_id="up_value")
            strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Edit strength", elem_id="up_strength")
            button = gr.Button("Edit", variant="primary", elem_id="up_btn")
        img = figure(label="Original / edited / difference", elem_id="upload_whatif")
        edited = audio_player(label="Edited", elem_id="upload_edited")
        deltas = gr.Markdown(elem_id="upload_deltas")
    # .upload, not .change: clearing a refused file from the box must not answer itself
    file.upload(h.upload, file, [file, loaded, player, spec, status], api_name=False)
    file.clear(lambda: (None, None, None, "Upload a WAV or FLAC recording."), None, [loaded, player, spec, status],
               **UI_ONLY)
    attribute.input(offer_values, attribute, value, **UI_ONLY)
    d = design
    button.click(h.edit_upload, [loaded, attribute, value, *d.controls, d.seed, d.steps, d.guidance, d.sampler,
                                 strength], [img, edited, deltas], **PAGE_MODEL_CALL)
    return h
