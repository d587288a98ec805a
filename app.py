"""H-LDM Studio: the clinician app (Gradio). Thin over `hldm.pipeline.HLDMPipeline`.

    python app.py [--host 127.0.0.1] [--port 7860] [--checkpoint checkpoints/default]
                  [--data-dir DIR] [--real-dir CIRCOR_FOLDER]

Builds findings from the controls, calls the pipeline, draws with hldm.app_views.
Binds to loopback by default, never creates share links, sends no telemetry.
With no trained checkpoint installed it still serves every tab, on an untrained
tiny model, and says so in a banner.
"""
from __future__ import annotations

import os

# Before gradio is imported: no telemetry, no downloads, no GUI backend.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from hldm import app_views  # noqa: E402
from hldm.audio.features import normalize_loudness, to_features  # noqa: E402
from hldm.audio.io import AudioError, load_audio, resample, wav_bytes  # noqa: E402
from hldm.clinical import vocabulary as V  # noqa: E402
from hldm.clinical.knowledge_graph import default_graph  # noqa: E402
from hldm.clinical.prompts import build_prompts, findings_from_prompt  # noqa: E402
from hldm.clinical.validation import FindingsError, validate_dict  # noqa: E402
from hldm.data.simulator import sample_findings, simulate  # noqa: E402
from hldm.diffusion.schedules import SAMPLERS  # noqa: E402
from hldm.paths import DEFAULT_CHECKPOINT, REPO  # noqa: E402
from hldm.pipeline import MIN_SECONDS, HLDMPipeline  # noqa: E402
from hldm.pipeline_cli import CSV_FIELDS, _csv_row as csv_row  # noqa: E402
from hldm.ratings.session import real_recordings  # noqa: E402
from hldm.ratings.store import RatingsError, RatingStore, default_db_path  # noqa: E402
from hldm.ratings.ui import build_rating_tab  # noqa: E402

ASSETS = REPO / "assets"
NO_CHECKPOINT_BANNER = "No trained checkpoint installed — running an untrained demo model (noise-like output)"

# Input limits: what one request may ask of a shared machine.
MAX_SECONDS = 20.0
MAX_STEPS = 100
MAX_GUIDANCE = 10.0
MAX_EXPORT_CLIPS = 50
UPLOAD_MAX_SECONDS = 60.0
UPLOAD_MAX_BYTES = 20_000_000
UPLOAD_MIN_SECONDS = MIN_SECONDS
QUIZ_SECONDS = 6.0
EXPORT_BATCH = 4  # clips per batched pipeline call
SUBSPACE_MOVED = 0.01  # relative latent change below which a subspace counts as unchanged
CONCURRENCY = 2  # model calls at once; the rest wait in the queue
QUEUE_SIZE = 128
PLAYBACK_RATE = 8000  # most laptop browsers and speakers handle 8 kHz better than 4 kHz
PLAYBACK_RMS = 0.15  # about -16 dBFS: loud on small speakers, still headroom for the limiter

NO_CONDITION = "(none)"
# Controls in the order every handler receives them; names are Findings fields.
CONTROL_FIELDS = ("condition", "murmur", "grade", "timing", "shape", "pitch", "quality", "location",
                  "radiation", "extra_sounds", "heart_rate", "age_group", "sex", "height_cm",
                  "weight_kg", "pregnant")
MURMUR_FIELDS = ("timing", "shape", "grade", "pitch", "quality")
GRADE_CHOICES = [(r, i + 1) for i, r in enumerate(V.ROMAN)]
# What-if attributes and the values offered for each.
WHAT_IF_CHOICES: dict[str, list] = {
    "grade": GRADE_CHOICES,
    "timing": list(V.TIMINGS),
    "shape": list(V.SHAPES),
    "pitch": list(V.PITCHES),
    "quality": list(V.QUALITIES),
    "location": list(V.LOCATIONS),
    "radiation": list(V.RADIATIONS),
    "murmur": list(V.MURMUR_STATUS),
    "heart_rate": [60, 80, 100, 120, 140, 160],
    "age_group": list(V.AGE_GROUPS),
    "sex": list(V.SEXES),
}


# ---------------------------------------------------------------- pipeline

def has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def load_pipeline(checkpoint: Path = DEFAULT_CHECKPOINT) -> tuple[HLDMPipeline, str | None]:
    """The trained pipeline, or an untrained tiny one plus the banner that says so."""
    checkpoint = Path(checkpoint)
    if has_checkpoint(checkpoint):
        return HLDMPipeline.from_pretrained(checkpoint), None
    from hldm.models.hldm import HLDMConfig

    return HLDMPipeline.from_config(HLDMConfig.tiny()), NO_CHECKPOINT_BANNER


# ---------------------------------------------------------------- findings <-> controls

def findings_from_controls(*values):
    """Control values (CONTROL_FIELDS order) -> validated Findings; FindingsError names the field."""
    d = dict(zip(CONTROL_FIELDS, values))
    d["condition"] = None if d["condition"] in (None, "", NO_CONDITION) else d["condition"]
    if d["murmur"] == "absent":
        d.update({k: None for k in MURMUR_FIELDS})
    d["extra_sounds"] = tuple(d["extra_sounds"] or ())
    for key in ("height_cm", "weight_kg"):
        d[key] = None if d[key] in (None, "", 0) else float(d[key])
    d["grade"] = None if d["grade"] in (None, "") else int(d["grade"])
    d["heart_rate"] = float(d["heart_rate"])
    d["pregnant"] = bool(d["pregnant"])
    return validate_dict(d)


def controls_from_findings(f) -> list:
    values = [getattr(f, name) for name in CONTROL_FIELDS]
    values[0] = f.condition or NO_CONDITION
    values[CONTROL_FIELDS.index("extra_sounds")] = list(f.extra_sounds)
    return values


def _findings_or_raise(values):
    try:
        return findings_from_controls(*values)
    except (FindingsError, ValueError) as exc:
        raise gr.Error(f"Findings not valid: {exc}") from exc


# ---------------------------------------------------------------- audio helpers

def _audio_out(audio: np.ndarray, sr: int) -> tuple[int, np.ndarray]:
    """(sr, int16 samples) for gr.Audio; clipping guarded, level untouched."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return sr, (x * 32767).astype(np.int16)


def playback_copy(audio: np.ndarray, sr: int) -> tuple[int, np.ndarray]:
    """Louder 8 kHz copy for laptop speakers: anti-alias resampled, raised to PLAYBACK_RMS (never lowered)
    and soft-limited with tanh, so S1/S2 peaks round off instead of clipping."""
    x = resample(audio, sr, PLAYBACK_RATE).astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    gain = max(PLAYBACK_RMS / rms, 1.0) if rms > 0 else 1.0
    return _audio_out(np.tanh(gain * x), PLAYBACK_RATE)


# ---------------------------------------------------------------- handlers

class Handlers:
    """Every UI callback, bound to one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline
        self.graph = default_graph()

    # -- prompts
    def preview(self, *values):
        try:
            f = findings_from_controls(*values)
        except (FindingsError, ValueError) as exc:
            return gr.update(), gr.update(), gr.update(), f"**⚠ Findings not valid:** {exc}"
        p = build_prompts(f)
        return p.l1, p.l2, p.l3, "✓ Findings valid."

    def prefill_condition(self, condition, *values):
        """Choosing a condition fills its typical murmur findings; demographics and rate stay."""
        if condition in (None, "", NO_CONDITION):
            return [gr.update()] * len(CONTROL_FIELDS)
        typical = self.graph.typical_findings(condition)
        current = dict(zip(CONTROL_FIELDS, values))
        out = controls_from_findings(typical)
        for k in ("heart_rate", "age_group", "sex", "height_cm", "weight_kg", "pregnant"):
            out[CONTROL_FIELDS.index(k)] = current[k]
        return out

    def apply_l2(self, l2_text, *values):
        """Parse an edited L2 back into findings -> (controls..., l1, l2, l3, status); the prompts are
        rebuilt here, not by a preview event, so this status is the one the user sees. Refusals leave the
        controls and the edited text as they were."""
        try:
            f = findings_from_prompt(l2_text, findings_from_controls(*values))
        except (FindingsError, ValueError) as exc:
            gr.Warning(f"L2 edit not applied: {exc}")
            return [gr.update()] * (len(CONTROL_FIELDS) + 3) + [f"**⚠ L2 edit not applied:** {exc}"]
        p = build_prompts(f)
        return controls_from_findings(f) + [p.l1, p.l2, p.l3, "✓ L2 edit parsed and validated; controls updated."]

    def load_example(self, name, *values):
        ex = {e["name"]: e["findings"] for e in load_examples()}.get(name)
        if ex is None:
            return [gr.update()] * len(CONTROL_FIELDS)
        return controls_from_findings(validate_dict(ex))

    # -- generate
    def generate(self, *args, progress=gr.Progress()):
        *values, seed, steps, guidance, sampler, seconds = args
        f = _findings_or_raise(values)
        t0 = time.perf_counter()
        gen = self.pipeline.generate(f, seconds=_clamp(seconds, 1.0, MAX_SECONDS, "seconds"),
                                     progress=_progress(progress, "sampling"), **_sampling(seed, steps, guidance,
                                                                                          sampler))
        elapsed = time.perf_counter() - t0
        spec = app_views.spectrogram_image(gen.features, gen.intervals, title=f"{gen.prompts.l2}  (seed {gen.seed})")
        interp = {"weights": gen.weights, "attention": gen.attention}
        counts = {k: sum(1 for *_, lab in gen.intervals if lab == k) for k in ("S1", "S2", "murmur")}
        info = (f"Generated {gen.seconds:.1f} s in {elapsed:.2f} s on **{gen.device}** ({gen.sampler}, "
                f"{gen.steps} steps, guidance {gen.guidance:g}, seed {gen.seed}). Marked: {counts['S1']} S1, "
                f"{counts['S2']} S2, {counts['murmur']} murmur interval(s).")
        return _audio_out(gen.audio, gen.sr), playback_copy(gen.audio, gen.sr), spec, info, interp

    # -- interpretability (drawn when its tab is opened: most generations never look at it)
    def interpretability(self, interp, layer):
        """w_i plot, M_cardiac of the chosen layer (default: the first), and the layer chooser's update."""
        if not interp:
            return None, None, gr.update()
        names = list(interp["attention"])
        layer = layer if layer in names else (names[0] if names else None)
        attn = app_views.attention_image(_as_square(interp["attention"][layer]), layer) if layer else None
        return app_views.weights_image(interp["weights"]), attn, gr.update(choices=names, value=layer)

    def attention_layer(self, interp, layer):
        if not interp or layer not in interp["attention"]:
            return None
        return app_views.attention_image(_as_square(interp["attention"][layer]), layer)

    def fusion(self):
        weights = self.pipeline.model.cond.fusion_weights()
        return app_views.fusion_image(weights) if weights else None

    # -- what-if
    def what_if(self, attribute, new_value, hold, *args, progress=gr.Progress()):
        *values, seed, steps, guidance, sampler, seconds = args
        f = _findings_or_raise(values)
        change = _change(attribute, new_value)
        if getattr(f, attribute) == change[attribute]:
            raise gr.Error(f"What-if: {attribute} is already {_show(change[attribute], attribute)}; "
                           "pick a different value.")
        try:
            wi = self.pipeline.what_if(f, change, seconds=_clamp(seconds, 1.0, MAX_SECONDS, "seconds"),
                                       progress=_progress(progress, "sampling both"), hold=bool(hold),
                                       **_sampling(seed, steps, guidance, sampler))
        except (FindingsError, ValueError) as exc:
            raise gr.Error(f"What-if not possible: {exc}") from exc
        before, after = (_show(getattr(g.findings, attribute), attribute) for g in (wi.a, wi.b))
        img = app_views.what_if_image(wi.a.features, wi.b.features, wi.a.intervals, wi.b.intervals,
                                      titles=(f"Before: {attribute} = {before}", f"After: {attribute} = {after}"))
        return (img, _audio_out(wi.a.audio, wi.a.sr), _audio_out(wi.b.audio, wi.b.sr), _deltas_markdown(wi))

    # -- upload your own recording
    def upload(self, path):
        """A user's recording -> (file box, state audio, player, spectrogram, status). A refused file is
        taken out of the file box, so the next one can be dropped straight in."""
        if not path:
            return None, None, None, None, "Upload a WAV or FLAC recording."
        try:
            audio = load_audio(path, max_seconds=UPLOAD_MAX_SECONDS, max_bytes=UPLOAD_MAX_BYTES)
            if len(audio) < UPLOAD_MIN_SECONDS * V.SAMPLE_RATE:
                raise AudioError(f"audio: {len(audio) / V.SAMPLE_RATE:.2f} s is too short; "
                                 f"at least {UPLOAD_MIN_SECONDS:g} s is needed")
        except AudioError as exc:
            msg = str(exc).replace(str(path), Path(path).name)  # the server's temp path means nothing to the user
            gr.Warning(msg)
            return None, None, None, None, f"**❌ Upload refused:** {msg}"
        spec = app_views.spectrogram_image(to_features(normalize_loudness(audio)).numpy(), (),
                                           title="Your recording")
        return (gr.update(), audio, _audio_out(audio, V.SAMPLE_RATE), spec,
                f"✓ Loaded {len(audio) / V.SAMPLE_RATE:.1f} s at {V.SAMPLE_RATE} Hz. Set the findings above to "
                "describe it, pick a change, press *Edit*.")

    def edit_upload(self, audio, attribute, new_value, *args, progress=gr.Progress()):
        *values, seed, steps, guidance, sampler, strength = args
        if audio is None:
            raise gr.Error("Upload a recording first.")
        f = _findings_or_raise(values)
        change = _change(attribute, new_value)
        try:
            wi = self.pipeline.edit(np.asarray(audio, dtype=np.float32), f, change,
                                    strength=_clamp(strength, 0.05, 1.0, "strength"),
                                    progress=_progress(progress, "encoding and editing"),
                                    **_sampling(seed, steps, guidance, sampler))
        except (FindingsError, ValueError) as exc:
            raise gr.Error(f"Edit not possible: {exc}") from exc
        img = app_views.what_if_image(wi.a.features, wi.b.features, wi.a.intervals, wi.b.intervals,
                                      titles=("Your recording, as the model reads it",
                                              f"Edited: {attribute} = "
                                              f"{_show(getattr(wi.b.findings, attribute), attribute)}"))
        return img, _audio_out(wi.b.audio, wi.b.sr), _deltas_markdown(wi)

    # -- teaching quiz (simulator: its labels are exact, whatever the model's quality)
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
        rows = [f"| {k} | {_show(given, k)} | {_show(right, k)} | {'✓' if given == right else '✗'} |"
                for k, (given, right) in answers.items()]
        score = sum(given == right for given, right in answers.values())
        md = "\n".join([f"### Score: {score} / {len(answers)}", "", "| | your answer | answer | |",
                        "|---|---|---|---|", *rows])
        title = build_prompts(validate_dict(truth)).l2
        spec = app_views.spectrogram_image(to_features(normalize_loudness(case["audio"])).numpy(),
                                           case["intervals"], title=title)
        return md, spec

    # -- batch export (same ZIP layout as `python -m hldm export`)
    def export(self, n, seconds, seed, *args, progress=gr.Progress()):
        *values, steps, guidance, sampler = args
        f = _findings_or_raise(values)
        n = _clamp_int(n, 1, MAX_EXPORT_CLIPS, "clips")
        seconds = _clamp(seconds, 1.0, MAX_SECONDS, "seconds")
        first = _sampling(seed, steps, guidance, sampler)
        table, records, buf = io.StringIO(), [], io.BytesIO()
        writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
        writer.writeheader()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for start in range(0, n, EXPORT_BATCH):
                progress((start, n), desc="generating clips", unit="clips")
                size = min(EXPORT_BATCH, n - start)
                gens = self.pipeline.generate(f, batch=size, seconds=seconds, **{**first, "seed": first["seed"] + start})
                for k, g in enumerate([gens] if size == 1 else gens):
                    name = f"clip_{start + k:04d}_{(g.findings.condition or 'custom').replace(' ', '_')}.wav"
                    zf.writestr(name, wav_bytes(g.audio, g.sr))
                    writer.writerow(csv_row(name, g))
                    records.append({"file": name, **g.to_json()})
            zf.writestr("labels.csv", table.getvalue())
            zf.writestr("labels.json", json.dumps({"subspaces": list(V.SUBSPACES), "clips": records}, indent=1))
        out = Path(tempfile.mkdtemp(prefix="hldm-export-")) / f"hldm_export_{n}clips_seed{first['seed']}.zip"
        out.write_bytes(buf.getvalue())
        return str(out), f"✓ {n} clips ({seconds:g} s each) with labels.csv and labels.json."


def _sampling(seed, steps, guidance, sampler) -> dict:
    """The sampler settings a request may ask for, checked against the app's limits."""
    return {"seed": _clamp_int(seed, 0, 2**31 - 1, "seed"), "steps": _clamp_int(steps, 1, MAX_STEPS, "steps"),
            "guidance": _clamp(guidance, 0.0, MAX_GUIDANCE, "guidance"),
            "sampler": _choice(sampler, SAMPLERS, "sampler")}


def _progress(progress, desc: str):
    """Pipeline progress (steps done, total) -> Gradio's progress bar."""
    return lambda done, total: progress((done, total), desc=desc, unit="steps")


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


def _deltas_markdown(wi) -> str:
    """Which findings changed and how far each latent subspace moved (relative L2), largest first;
    subspaces the what-if held to the first clip's are marked as such."""
    items = sorted(wi.subspace_delta.items(), key=lambda kv: -kv[1])
    top = max((v for _, v in items), default=0.0)
    lines = [f"Changed findings: **{', '.join(wi.changed_fields) or 'none'}**", "",
             "| latent subspace | relative change | |", "|---|---|---|"]
    for name, v in items:
        verdict = ("held (kept from *before*)" if name in wi.held
                   else "**changed**" if v >= max(0.25 * top, SUBSPACE_MOVED) else "about the same")
        lines.append(f"| {name} | {v:.3f} | {verdict} |")
    return "\n".join(lines)


def _as_square(mask) -> np.ndarray:
    """A stored mask may carry batch/head axes in front of (L, L): average them out for display."""
    m = np.asarray(mask, dtype=np.float32)
    return m.reshape(-1, *m.shape[-2:]).mean(axis=0) if m.ndim > 2 else m


def _change(attribute: str, value) -> dict:
    if attribute not in WHAT_IF_CHOICES:
        raise gr.Error(f"attribute: unknown {attribute!r}; allowed: {', '.join(WHAT_IF_CHOICES)}")
    if value in (None, ""):
        raise gr.Error(f"Pick a new value for {attribute}.")
    if attribute == "grade":
        value = int(value)
    elif attribute == "heart_rate":
        value = float(value)
    return {attribute: value}


def _show(v, attribute: str | None = None) -> str:
    if v is None:
        return "—"
    return V.ROMAN[int(v) - 1] if attribute == "grade" else str(v)


def _clamp(v, lo: float, hi: float, name: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise gr.Error(f"{name}: not a number ({v!r}); allowed {lo:g}..{hi:g}") from None
    if not lo <= x <= hi:
        raise gr.Error(f"{name}: {x:g} is outside the allowed range {lo:g}..{hi:g}")
    return x


def _clamp_int(v, lo: int, hi: int, name: str) -> int:
    return int(round(_clamp(v, lo, hi, name)))


def _choice(v, allowed, name: str):
    if v not in allowed:
        raise gr.Error(f"{name}: unknown value {v!r}; allowed: {', '.join(allowed)}")
    return v


def load_examples() -> list[dict]:
    return json.loads((ASSETS / "examples.json").read_text())


# ---------------------------------------------------------------- layout

_audio = partial(gr.Audio, type="numpy", format="wav", interactive=False, buttons=["download"])
# Every figure carries its own title; Gradio's label badge would sit on top of it.
_image = partial(gr.Image, type="numpy", interactive=False, show_label=False, buttons=["download", "fullscreen"])
_dropdown = partial(gr.Dropdown, min_width=120)

def build_app(pipeline: HLDMPipeline, banner: str | None = None, ratings: RatingStore | None = None,
              real=None) -> gr.Blocks:
    """The whole UI over one pipeline; call `.queue(...)` / `.launch(...)` via `launch()`.

    ratings: the Rate tab's database (default: `default_db_path()`); real: recordings mixed blind into
    rating sessions (a CirCor-layout folder or its `real_recordings`; None: synthetic only)."""
    h = Handlers(pipeline)
    ratings = RatingStore(default_db_path()) if ratings is None else ratings
    examples = load_examples()
    defaults = pipeline.config.diffusion  # the model's own steps / guidance / sampler
    with gr.Blocks(title="H-LDM Studio", analytics_enabled=False) as app:
        gr.Markdown(f"# H-LDM Studio\nSynthetic phonocardiograms from clinical findings · device: "
                    f"**{pipeline.device}**", elem_id="header")
        if banner:
            gr.Markdown(f"⚠️ **{banner}**", elem_id="banner", elem_classes=["hldm-banner"])

        # Controls shared by every tab (the patient being designed).
        with gr.Row():
            with gr.Column(scale=3, elem_id="controls"):
                with gr.Row():
                    example = _dropdown([e["name"] for e in examples], value=None, label="Example case",
                                        elem_id="example")
                    condition = _dropdown([NO_CONDITION, *V.CONDITIONS], value=NO_CONDITION,
                                          label="Condition (fills its typical findings)", elem_id="condition")
                with gr.Row():
                    murmur = gr.Radio(list(V.MURMUR_STATUS), value="absent", label="Murmur", min_width=120,
                                      elem_id="murmur")
                    grade = _dropdown(GRADE_CHOICES, value=None, label="Grade (diastolic ≤ IV)", elem_id="grade")
                    timing = _dropdown(list(V.TIMINGS), value=None, label="Timing", elem_id="timing")
                    shape = _dropdown(list(V.SHAPES), value=None, label="Shape", elem_id="shape")
                with gr.Row():
                    pitch = _dropdown(list(V.PITCHES), value=None, label="Pitch", elem_id="pitch")
                    quality = _dropdown(list(V.QUALITIES), value=None, label="Quality", elem_id="quality")
                    location = _dropdown(list(V.LOCATIONS), value="MV", label="Location", elem_id="location")
                    radiation = _dropdown(list(V.RADIATIONS), value="none", label="Radiation", elem_id="radiation")
                extra = gr.CheckboxGroup(list(V.EXTRA_SOUNDS), value=[], label="Extra sounds", elem_id="extra")
                with gr.Row():
                    heart_rate = gr.Slider(*V.HEART_RATE_RANGE, value=80, step=1, label="Heart rate (bpm)",
                                           min_width=120, elem_id="heart_rate")
                    age_group = _dropdown(list(V.AGE_GROUPS), value="child", label="Age group", elem_id="age_group")
                    sex = _dropdown(list(V.SEXES), value="female", label="Sex", elem_id="sex")
                    height = gr.Number(value=None, label="Height (cm; 0 = n/a)", min_width=100, elem_id="height")
                    weight = gr.Number(value=None, label="Weight (kg; 0 = n/a)", min_width=100, elem_id="weight")
                    pregnant = gr.Checkbox(value=False, label="Pregnant", min_width=100, elem_id="pregnant")
            with gr.Column(scale=2, elem_id="prompts"):
                l1 = gr.Textbox(label="L1 — demographics", lines=2, interactive=False, elem_id="l1")
                l2 = gr.Textbox(label="L2 — murmur description (editable: edit, then Shift+Enter or 'Apply L2 edit')",
                                lines=3, elem_id="l2")
                l3 = gr.Textbox(label="L3 — differential diagnosis (knowledge graph)", lines=2, interactive=False,
                                elem_id="l3")
                apply_l2 = gr.Button("Apply L2 edit", size="sm", elem_id="apply_l2")
                status = gr.Markdown(elem_id="status")
        controls = [condition, murmur, grade, timing, shape, pitch, quality, location, radiation, extra,
                    heart_rate, age_group, sex, height, weight, pregnant]
        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, elem_id="seed")
                steps = gr.Slider(1, MAX_STEPS, value=defaults.steps, step=1, label="Steps", elem_id="steps")
                guidance = gr.Slider(0.0, MAX_GUIDANCE, value=defaults.guidance, step=0.5, label="Guidance (CFG)",
                                     elem_id="guidance")
                sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler", elem_id="sampler")
                seconds = gr.Slider(2.0, MAX_SECONDS, value=6.0, step=0.5, label="Length (s)", elem_id="seconds")
        sampling = [seed, steps, guidance, sampler, seconds]
        interp = gr.State(None)

        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                gen_btn = gr.Button("Generate", variant="primary", elem_id="generate_btn")
                gen_info = gr.Markdown(elem_id="gen_info")
                with gr.Row():
                    audio4 = _audio(label="PCG, 4 kHz WAV", elem_id="audio_4k")
                    audio8 = _audio(label="Louder 8 kHz playback copy", elem_id="audio_8k")
                spec = _image(label="Spectrogram (S1, S2, murmur marked)", elem_id="spectrogram")

            with gr.Tab("What-if", id="what_if"):
                gr.Markdown("Change one attribute; both clips use the same seed and initial noise.")
                with gr.Row():
                    wi_attr = gr.Dropdown(list(WHAT_IF_CHOICES), value="grade", label="Attribute",
                                          elem_id="wi_attr")
                    wi_value = gr.Dropdown(WHAT_IF_CHOICES["grade"], value=4, label="New value",
                                           allow_custom_value=True, elem_id="wi_value")
                    wi_btn = gr.Button("Run what-if", variant="primary", elem_id="wi_btn")
                wi_hold = gr.Checkbox(value=True, elem_id="wi_hold",
                                      label="Hold what the edit cannot change (a murmur edit keeps the rhythm and "
                                            "S1/S2 of the first clip; untick to let the whole clip re-form)")
                wi_img = _image(label="Before / after / difference", elem_id="wi_image")
                with gr.Row():
                    wi_a = _audio(label="Before", elem_id="wi_a")
                    wi_b = _audio(label="After", elem_id="wi_b")
                wi_deltas = gr.Markdown(elem_id="wi_deltas")

            with gr.Tab("Interpretability", id="interp") as interp_tab:
                gr.Markdown("From the last *Generate*: structured-noise weights w_i per step, the Medical "
                            "Attention mask M_cardiac, and the learned text/graph/attribute fusion weights.")
                with gr.Row():
                    w_img = _image(label="w_i over sampling steps", scale=3, elem_id="weights_plot")
                    fusion_img = _image(label="Fusion weights", scale=1, elem_id="fusion_plot")
                with gr.Row():
                    with gr.Column(scale=1):
                        layer = gr.Dropdown([], value=None, label="Medical Attention layer", elem_id="attn_layer")
                    attn_img = _image(label="M_cardiac (last sampling step)", scale=2, elem_id="attn_plot")

            with gr.Tab("Your recording", id="upload"):
                gr.Markdown(f"Upload a WAV or FLAC PCG ({UPLOAD_MIN_SECONDS:g}–{UPLOAD_MAX_SECONDS:g} s, "
                            f"≤ {UPLOAD_MAX_BYTES // 1_000_000} MB). It is resampled to 4 kHz and encoded; set the "
                            "findings above to describe it, then *Edit* re-generates it with one attribute changed "
                            "(SDEdit: the strength says how far from the recording it may move).")
                up_audio = gr.State(None)
                with gr.Row():
                    up_file = gr.File(label="Recording (WAV/FLAC)", file_types=[".wav", ".flac"],
                                      type="filepath", elem_id="upload_file")
                    up_play = _audio(label="As loaded (4 kHz)", elem_id="upload_audio")
                up_status = gr.Markdown(elem_id="upload_status")
                up_spec = _image(label="Your recording", elem_id="upload_spec")
                with gr.Row():
                    up_attr = gr.Dropdown(list(WHAT_IF_CHOICES), value="grade", label="Attribute",
                                          elem_id="up_attr")
                    up_value = gr.Dropdown(WHAT_IF_CHOICES["grade"], value=4, label="New value",
                                           allow_custom_value=True, elem_id="up_value")
                    up_strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Edit strength",
                                            elem_id="up_strength")
                    up_btn = gr.Button("Edit", variant="primary", elem_id="up_btn")
                up_img = _image(label="Original / edited / difference", elem_id="upload_whatif")
                up_edited = _audio(label="Edited", elem_id="upload_edited")
                up_deltas = gr.Markdown(elem_id="upload_deltas")

            with gr.Tab("Teaching quiz", id="quiz"):
                gr.Markdown("A synthetic murmur from the physiological simulator: listen, answer, check.")
                quiz_case, quiz_counter = gr.State(None), gr.State(0)
                quiz_btn = gr.Button("New case", elem_id="quiz_new")
                quiz_audio = _audio(label="Unknown case", elem_id="quiz_audio")
                with gr.Row():
                    q_grade = gr.Dropdown([("none", "none"), *GRADE_CHOICES], value=None, label="Grade", elem_id="q_grade")
                    q_timing = gr.Dropdown(["none", *V.TIMINGS], value=None, label="Timing", elem_id="q_timing")
                    q_location = gr.Dropdown(list(V.LOCATIONS), value=None, label="Location", elem_id="q_location")
                    q_condition = gr.Dropdown(list(V.CONDITIONS), value=None, label="Condition", elem_id="q_condition")
                q_check = gr.Button("Check my answer", variant="primary", elem_id="quiz_check")
                q_result = gr.Markdown(elem_id="quiz_result")
                q_spec = _image(label="Answer: annotated spectrogram", elem_id="quiz_spec")

            with gr.Tab("Batch export", id="export"):
                gr.Markdown("N clips of the current findings (seeds seed, seed+1, ...) as a ZIP of 4 kHz WAVs "
                            "plus labels.csv and labels.json, for data augmentation.")
                with gr.Row():
                    ex_n = gr.Slider(1, MAX_EXPORT_CLIPS, value=8, step=1, label="Clips", elem_id="export_n")
                    ex_seconds = gr.Slider(2.0, MAX_SECONDS, value=4.0, step=0.5, label="Length (s)",
                                           elem_id="export_seconds")
                    ex_seed = gr.Number(value=0, precision=0, minimum=0, label="First seed", elem_id="export_seed")
                ex_btn = gr.Button("Export ZIP", variant="primary", elem_id="export_btn")
                ex_file = gr.File(label="ZIP", interactive=False, elem_id="export_file")
                ex_status = gr.Markdown(elem_id="export_status")

            with gr.Tab("Rate", id="rate"):
                build_rating_tab(pipeline, ratings, real_dir=real)

        # Wiring. Cheap UI updates bypass the queue and stay out of the API (private); model calls go
        # through the queue and are the public API (`gradio_client`: /generate, /what_if, ...).
        ui = {"queue": False, "api_visibility": "private"}
        preview_out = [l1, l2, l3, status]
        # .input (user edits), not .change: a .change preview would also fire after apply_l2 sets the
        # controls and overwrite its status; programmatic fills chain the preview explicitly instead.
        preview = {"fn": h.preview, "inputs": controls, "outputs": preview_out, "show_progress": "hidden", **ui}
        gr.on([app.load, *(c.input for c in controls if c is not condition)], trigger_mode="always_last", **preview)
        condition.input(h.prefill_condition, [condition, *controls], controls, **ui).then(**preview)
        example.input(h.load_example, [example, *controls], controls, **ui).then(**preview)
        gr.on([l2.submit, apply_l2.click], h.apply_l2, [l2, *controls], [*controls, *preview_out], **ui)
        app.load(h.fusion, None, fusion_img, **ui)

        gen_btn.click(h.generate, [*controls, *sampling], [audio4, audio8, spec, gen_info, interp],
                      api_name="generate")
        interp_tab.select(h.interpretability, [interp, layer], [w_img, attn_img, layer], **ui)
        layer.input(h.attention_layer, [interp, layer], attn_img, **ui)
        for attr, val in ((wi_attr, wi_value), (up_attr, up_value)):
            attr.input(lambda a: gr.update(choices=WHAT_IF_CHOICES[a], value=None), attr, val, **ui)
        wi_btn.click(h.what_if, [wi_attr, wi_value, wi_hold, *controls, *sampling], [wi_img, wi_a, wi_b, wi_deltas],
                     api_name="what_if")
        # .upload, not .change: clearing a refused file from the box must not answer itself
        up_file.upload(h.upload, up_file, [up_file, up_audio, up_play, up_spec, up_status], api_name="upload")
        up_file.clear(lambda: (None, None, None, "Upload a WAV or FLAC recording."), None,
                      [up_audio, up_play, up_spec, up_status], **ui)
        up_btn.click(h.edit_upload, [up_audio, up_attr, up_value, *controls, seed, steps, guidance, sampler, up_strength],
                     [up_img, up_edited, up_deltas], api_name="edit")
        quiz_btn.click(h.quiz_new, quiz_counter, [quiz_case, quiz_counter, quiz_audio, q_spec, q_result],
                       api_name="quiz_new")
        q_check.click(h.quiz_check, [quiz_case, q_grade, q_timing, q_location, q_condition], [q_result, q_spec],
                      api_name="quiz_check")
        ex_btn.click(h.export, [ex_n, ex_seconds, ex_seed, *controls, steps, guidance, sampler],
                     [ex_file, ex_status], api_name="export")
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Queue with a concurrency limit, loopback by default, no share link, upload size capped."""
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    # _frontend=False skips Gradio's self-check (HEAD / with a 3 s timeout), which on a busy machine
    # times out and then aborts asking for a share link; we never share, and the page does load.
    return app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                      max_file_size=UPLOAD_MAX_BYTES, css_paths=[ASSETS / "app.css"], show_error=True,
                      footer_links=[], quiet=not block, _frontend=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="H-LDM Studio clinician app")
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                    help="pipeline directory (default: %(default)s)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help=f"where the ratings database lives (default: {default_db_path().parent})")
    ap.add_argument("--real-dir", type=Path, default=None,
                    help="CirCor-layout folder of real recordings mixed blind into rating sessions")
    args = ap.parse_args(argv)
    try:  # a bad ratings database or real folder stops here, before any model is loaded
        ratings = RatingStore(default_db_path(args.data_dir))
        real = real_recordings(args.real_dir) if args.real_dir else None
    except RatingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pipeline, banner = load_pipeline(args.checkpoint)
    if banner:
        print(f"WARNING: {banner} (looked in {args.checkpoint})", file=sys.stderr)
    print(f"H-LDM Studio on http://{args.host}:{args.port}  (device: {pipeline.device}; ratings: {ratings.path}"
          f"{f'; {len(real)} real recordings' if real else ''})", flush=True)
    launch(build_app(pipeline, banner, ratings, real), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
