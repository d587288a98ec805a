"""What several tabs share: request limits, the findings controls' order and conversions, audio
outputs, the checks of sampler settings, the what-if deltas table and the component styles."""
from __future__ import annotations

from functools import partial

import gradio as gr
import numpy as np

from hldm.audio.io import resample
from hldm.clinical import vocabulary as V
from hldm.clinical.validation import FindingsError, validate_dict
from hldm.conformance import describe
from hldm.diffusion.schedules import SAMPLERS

# Input limits: what one request may ask of a shared machine.
MAX_SECONDS = 20.0
MAX_STEPS = 100
MAX_GUIDANCE = 10.0
SUBSPACE_MOVED = 0.01  # relative latent change below which a subspace counts as unchanged
PLAYBACK_RATE = 8000  # most laptop browsers and speakers handle 8 kHz better than 4 kHz
PLAYBACK_RMS = 0.15  # about -16 dBFS: loud on small speakers, still headroom for the limiter
# Model calls of every tab and API endpoint share one concurrency group, so CONCURRENCY in
# `launch` bounds them all together; the rest wait in the queue.
MODEL_CALL = {"concurrency_id": "model"}
# The page's own events stay out of the API (hldm.app.api's endpoints are the API); with no name
# they cannot take an endpoint's. The page's model calls queue, cheap UI updates bypass the queue.
PAGE_MODEL_CALL = {"api_name": False, **MODEL_CALL}
UI_ONLY = {"queue": False, "api_name": False}

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

audio_player = partial(gr.Audio, type="numpy", format="wav", interactive=False, buttons=["download"])
# Every figure carries its own title; Gradio's label badge would sit on top of it.
figure = partial(gr.Image, type="numpy", interactive=False, show_label=False, buttons=["download", "fullscreen"])
dropdown = partial(gr.Dropdown, min_width=120)


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


def findings_or_raise(values):
    try:
        return findings_from_controls(*values)
    except (FindingsError, ValueError) as exc:
        raise gr.Error(f"Findings not valid: {exc}") from exc


# ---------------------------------------------------------------- audio

def audio_out(audio: np.ndarray, sr: int) -> tuple[int, np.ndarray]:
    """(sr, int16 samples) for gr.Audio; clipping guarded, level untouched."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return sr, (x * 32767).astype(np.int16)


def playback_copy(audio: np.ndarray, sr: int) -> tuple[int, np.ndarray]:
    """Louder 8 kHz copy for laptop speakers: anti-alias resampled, raised to PLAYBACK_RMS (never lowered)
    and soft-limited with tanh, so S1/S2 peaks round off instead of clipping."""
    x = resample(audio, sr, PLAYBACK_RATE).astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    gain = max(PLAYBACK_RMS / rms, 1.0) if rms > 0 else 1.0
    return audio_out(np.tanh(gain * x), PLAYBACK_RATE)


# ---------------------------------------------------------------- request settings

def sampling(seed, steps, guidance, sampler) -> dict:
    """The sampler settings a request may ask for, checked against the app's limits (None: the model's)."""
    return {"seed": clamp_int(seed, 0, 2**31 - 1, "seed"),
            "steps": None if steps is None else clamp_int(steps, 1, MAX_STEPS, "steps"),
            "guidance": None if guidance is None else clamp(guidance, 0.0, MAX_GUIDANCE, "guidance"),
            "sampler": None if sampler is None else choice(sampler, SAMPLERS, "sampler")}


def progress_bar(progress, desc: str):
    """Pipeline progress (steps done, total) -> Gradio's progress bar."""
    return lambda done, total: progress((done, total), desc=desc, unit="steps")


def clamp(v, lo: float, hi: float, name: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise gr.Error(f"{name}: not a number ({v!r}); allowed {lo:g}..{hi:g}") from None
    if not lo <= x <= hi:
        raise gr.Error(f"{name}: {x:g} is outside the allowed range {lo:g}..{hi:g}")
    return x


def clamp_int(v, lo: int, hi: int, name: str) -> int:
    return int(round(clamp(v, lo, hi, name)))


def choice(v, allowed, name: str):
    if v not in allowed:
        raise gr.Error(f"{name}: unknown value {v!r}; allowed: {', '.join(allowed)}")
    return v


# ---------------------------------------------------------------- what-if (the What-if and Your recording tabs)

def change(attribute: str, value) -> dict:
    """The what-if dropdowns' attribute and value -> the change dict the pipeline takes."""
    if attribute not in WHAT_IF_CHOICES:
        raise gr.Error(f"attribute: unknown {attribute!r}; allowed: {', '.join(WHAT_IF_CHOICES)}")
    if value in (None, ""):
        raise gr.Error(f"Pick a new value for {attribute}.")
    if attribute == "grade":
        value = int(value)
    elif attribute == "heart_rate":
        value = float(value)
    return {attribute: value}


def offer_values(attribute):
    """The new-value dropdown's choices for the chosen attribute."""
    return gr.update(choices=WHAT_IF_CHOICES[attribute], value=None)


def show(v, attribute: str | None = None) -> str:
    if v is None:
        return "—"
    return V.ROMAN[int(v) - 1] if attribute == "grade" else str(v)


def conform_switch(elem_id: str, pipeline) -> gr.Checkbox:
    """The switch between the clip edited to its findings (hldm.conformance) and the sampler's clip as it
    comes; starts at the model's default."""
    return gr.Checkbox(value=pipeline.config.diffusion.conform, elem_id=elem_id,
                       label="Edit to the findings (heart rate, murmur phase and level; untick for the model's "
                             "clip as sampled)")


def deltas_markdown(wi) -> str:
    """Which findings changed and how far each latent subspace moved (relative L2), largest first;
    subspaces the what-if held to the first clip's are marked as such; then what conformance did to
    each side."""
    items = sorted(wi.subspace_delta.items(), key=lambda kv: -kv[1])
    top = max((v for _, v in items), default=0.0)
    lines = [f"Changed findings: **{', '.join(wi.changed_fields) or 'none'}**", "",
             "| latent subspace | relative change | |", "|---|---|---|"]
    for name, v in items:
        verdict = ("held (kept from *before*)" if name in wi.held
                   else "**changed**" if v >= max(0.25 * top, SUBSPACE_MOVED) else "about the same")
        lines.append(f"| {name} | {v:.3f} | {verdict} |")
    for side, g in (("Before", wi.a), ("After", wi.b)):
        if text := describe(g.conformance):
            lines += ["", f"*{side}*: {text}"]  # a paragraph each
    return "\n".join(lines)
