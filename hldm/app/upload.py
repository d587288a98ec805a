"""The "Your recording" tab and its endpoints. The tab segments a user's WAV/FLAC (S1/S2 and murmur
intervals drawn on its spectrogram, or a refusal that says why) and edits the recording itself
(hldm.editing: only the murmur phase changes), as /edit_recording does; /edit is the model's SDEdit
of the whole clip."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import gradio as gr
import numpy as np

from hldm import app_views
from hldm.app.api import SamplerName, findings_api, wav_file, what_if_record
from hldm.app.common import (GRADE_CHOICES, PAGE_MODEL_CALL, UI_ONLY, audio_out, audio_player, clamp, figure,
                             findings_from_controls, findings_or_raise, sampling, show)
from hldm.app.design import Design
from hldm.audio.features import normalize_loudness, to_features
from hldm.audio.io import AudioError, load_audio
from hldm.clinical import vocabulary as V
from hldm.clinical.validation import FindingsError
from hldm.clinical.vocabulary import Findings
from hldm.editing import EDIT_KINDS, EDIT_LABELS, RecordingEdit, SegmentationError, edit_recording, segment
from hldm.pipeline import MIN_SECONDS, HLDMPipeline, WhatIf

UPLOAD_MAX_SECONDS = 60.0
UPLOAD_MAX_BYTES = 20_000_000
UPLOAD_MIN_SECONDS = MIN_SECONDS
EDIT_CHOICES = [(label, kind) for kind, label in EDIT_LABELS.items()]
EditKind = Literal[EDIT_KINDS]
TimingName = Literal[V.TIMINGS]
PEAK = 0.99  # a louder murmur may push the edit past full scale: the player gets it scaled below


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


def _murmur_timing(values) -> str | None:
    """The timing of the murmur the findings controls describe (None: no murmur, or controls not valid yet)."""
    try:
        f = findings_from_controls(*values) if values else None
    except (FindingsError, ValueError):
        return None
    return f.timing if f is not None and f.murmur == "present" else None


def _describe(e: RecordingEdit) -> str:
    b, a = e.before, e.after
    if e.kind == "grade":
        return f"grade {show(b.grade, 'grade')} → {show(a.grade, 'grade')}"
    if e.kind == "timing":
        return f"{b.timing} → {a.timing}"
    if e.kind == "add":
        return f"{a.timing} murmur added, grade {show(a.grade, 'grade')}"
    return "murmur removed"


def edit_markdown(e: RecordingEdit) -> str:
    """What the edit did, measured on the audio (hldm.eval.listener)."""
    f = e.after if e.after.murmur == "present" else e.before
    phase = V.timing_phase(f.timing)
    source = {"recording": "the recording's own murmur, re-levelled",
              "model": "H-LDM's murmur (the latent what-if's decoded difference), levelled to the grade",
              "simulator": "the simulator's murmur (the model added none here), levelled to the grade"}[e.source]
    share = float(np.mean(e.weights > 0))
    return "\n".join([
        f"**{_describe(e)}**: murmur band ({f.pitch or 'medium'} pitch) in {phase.replace('ic', 'e')} "
        f"**{e.level_db[0]:+.1f} → {e.level_db[1]:+.1f} dB** re S1/S2 (6 dB a Levine grade).", "",
        f"Only the murmur's phase changed ({share:.0%} of the STFT frames); S1/S2, the rhythm "
        f"({e.segmentation.heart_rate:.0f} bpm) and the recording's own noise are the upload's. Murmur: {source}."])


def _playable(e: RecordingEdit) -> np.ndarray:
    """The edited clip, scaled under full scale only if a louder murmur pushed it past."""
    return e.edited * min(1.0, PEAK / max(float(np.abs(e.edited).max()), 1e-9))


class UploadHandlers:
    """The tab's callbacks over one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline

    def upload(self, path, *values):
        """A user's recording and the findings controls -> (file box, state audio, player, spectrogram with
        its segmentation, status). A refused file is taken out of the file box, so the next one can be
        dropped straight in; a recording that cannot be segmented stays loaded (it plays) and the status
        says why it cannot be edited."""
        if not path:
            return None, None, None, None, "Upload a WAV or FLAC recording."
        try:
            audio = load_recording(path, Path(path).name)
        except AudioError as exc:
            gr.Warning(str(exc))
            return None, None, None, None, f"**❌ Upload refused:** {exc}"
        feat = to_features(normalize_loudness(audio)).numpy()
        loaded = f"✓ Loaded {len(audio) / V.SAMPLE_RATE:.1f} s at {V.SAMPLE_RATE} Hz. "
        try:
            seg = segment(audio)
        except SegmentationError as exc:
            spec = app_views.spectrogram_image(feat, (), title="Your recording (not segmented)")
            return gr.update(), audio, audio_out(audio, V.SAMPLE_RATE), spec, (
                f"{loaded}**❌ Cannot edit this recording:** {exc}.")
        timing = _murmur_timing(values)
        spec = app_views.spectrogram_image(feat, seg.intervals(timing), title=(
            f"Your recording: {seg.cycles()} cycles at {seg.heart_rate:.0f} bpm"
            + (f", {timing} murmur intervals from the findings" if timing else "")))
        return (gr.update(), audio, audio_out(audio, V.SAMPLE_RATE), spec,
                f"{loaded}Segmented: {seg.cycles()} heart cycles at {seg.heart_rate:.0f} bpm (S1/S2 marked). Set "
                "the findings above to describe it (its murmur, if it has one), pick an edit, press *Edit*.")

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

    def edit_upload(self, audio, kind, grade, timing, *args, progress=gr.Progress()):
        """Loaded audio, the edit (kind, new grade, new timing), findings controls and sampling settings ->
        (original / edited / difference image, edited audio, summary)."""
        *values, seed, steps, guidance, sampler = args
        if audio is None:
            raise gr.Error("Upload a recording first.")
        findings = findings_or_raise(values)
        progress(0.1, desc="segmenting and editing")
        e = self._edit_recording(audio, findings, kind, grade, timing, seed, steps, guidance, sampler)
        before, after = e.features()
        img = app_views.what_if_image(before, after, *e.intervals(),
                                      titles=("Your recording", f"Edited: {_describe(e)}"))
        return img, audio_out(_playable(e), e.sr), edit_markdown(e)

    def _edit_recording(self, audio, findings: Findings, kind, grade, timing, seed, steps, guidance,
                        sampler) -> RecordingEdit:
        try:
            return edit_recording(self.pipeline, np.asarray(audio, dtype=np.float32), findings, kind,
                                  grade=None if grade in (None, "") else int(grade), timing=timing or None,
                                  **sampling(seed, steps, guidance, sampler))
        except SegmentationError as exc:
            raise gr.Error(f"Cannot edit this recording: {exc}") from exc
        except (FindingsError, ValueError, TypeError) as exc:
            raise gr.Error(f"Edit not possible: {exc}") from exc

    @findings_api
    def edit_recording_api(self, recording: gr.FileData, kind: EditKind, findings: Findings,
                           new_grade: int | None = None, new_timing: TimingName | None = None, seed: int = 0,
                           steps: int | None = None, guidance: float | None = None,
                           sampler: SamplerName | None = None) -> tuple[gr.FileData, dict]:
        """Edit a real recording itself, as the Your recording tab does: only the murmur's phase changes,
        its beats, heart sounds and noise stay the upload's.

        Parameters:
            recording: a WAV or FLAC phonocardiogram (gradio_client.handle_file(path)); 0.5-60 s, at most 20 MB
            kind: grade (to new_grade), remove (the murmur), add (a murmur to a murmur-free recording, of
                new_grade and new_timing when given), timing (to new_timing, in the same phase)
            new_grade: the grade of a grade edit or an added murmur
            new_timing: the timing of a timing edit or an added murmur
            seed: the added murmur's texture (kind add)
        Returns:
            the edited recording (WAV, 4 kHz) and the record: the findings before and after, the murmur
            band re S1/S2 before and after (dB), the segmentation's S1/S2/murmur intervals, the heart
            rate, the share of STFT frames edited and where the murmur's texture came from
        """
        try:
            audio = load_recording(recording["path"], recording.get("orig_name") or Path(recording["path"]).name)
        except AudioError as exc:
            raise gr.Error(f"Recording refused: {exc}") from exc
        e = self._edit_recording(audio, findings, kind, new_grade, new_timing, seed, steps, guidance, sampler)
        return wav_file(_playable(e), e.sr, f"edited_{e.kind}.wav"), e.to_json()

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
                    f"≤ {UPLOAD_MAX_BYTES // 1_000_000} MB). It is resampled to 4 kHz and segmented (S1, systole, "
                    "S2, diastole); set the findings above to describe it, then *Edit* changes its murmur and "
                    "nothing else: the edit works on the recording's own spectrogram in the murmur's phase, so "
                    "its beats, heart sounds and noise stay the upload's.")
        loaded = gr.State(None)
        with gr.Row():
            file = gr.File(label="Recording (WAV/FLAC)", file_types=[".wav", ".flac"], type="filepath",
                           elem_id="upload_file")
            player = audio_player(label="As loaded (4 kHz)", elem_id="upload_audio")
        status = gr.Markdown(elem_id="upload_status")
        spec = figure(label="Your recording", elem_id="upload_spec")
        with gr.Row():
            kind = gr.Dropdown(EDIT_CHOICES, value="grade", label="Edit", elem_id="up_kind")
            grade = gr.Dropdown(GRADE_CHOICES, value=4, label="New grade (grade edit, added murmur)",
                                elem_id="up_grade")
            timing = gr.Dropdown(list(V.TIMINGS), value=None, label="New timing (timing edit, added murmur)",
                                 elem_id="up_timing")
            button = gr.Button("Edit", variant="primary", elem_id="up_btn")
        img = figure(label="Original / edited / difference", elem_id="upload_whatif")
        edited = audio_player(label="Edited", elem_id="upload_edited")
        summary = gr.Markdown(elem_id="upload_deltas")
    d = design
    # .upload, not .change: clearing a refused file from the box must not answer itself
    file.upload(h.upload, [file, *d.controls], [file, loaded, player, spec, status], api_name=False)
    file.clear(lambda: (None, None, None, "Upload a WAV or FLAC recording."), None, [loaded, player, spec, status],
               **UI_ONLY)
    button.click(h.edit_upload, [loaded, kind, grade, timing, *d.controls, d.seed, d.steps, d.guidance, d.sampler],
                 [img, edited, summary], **PAGE_MODEL_CALL)
    return h
