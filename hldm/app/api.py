"""The app's programmatic API (`gradio_client`): named, typed, documented parameters.

Each endpoint is a handler method registered with `gr.api`, which names the endpoint's
parameters after the method's signature and takes their types from its hints. The findings
are spelled out as one optional parameter per field (`findings_api`), each None unless
given, so an endpoint validates exactly what the caller said, like `HLDMPipeline.generate`
with a dict: a condition alone gives its typical findings and the fields beside it override
them. The page's own events have no API name: these are the API.

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/")
    wav, record = client.predict(condition="mitral regurgitation", grade=4, seed=7, api_name="/generate")
"""
from __future__ import annotations

import functools
import inspect
import typing
from typing import Literal

import gradio as gr
from gradio import processing_utils, utils

from hldm.audio.io import wav_bytes
from hldm.clinical import vocabulary as V
from hldm.clinical.validation import FindingsError, validate_dict
from hldm.diffusion.schedules import SAMPLERS

SamplerName = Literal[SAMPLERS]

# (name, type, description) of each findings parameter, in the controls' order.
FINDINGS_PARAMETERS: tuple[tuple[str, object, str], ...] = (
    ("condition", Literal[V.CONDITIONS] | None,
     "one of the 17 conditions; given alone, its typical findings, which the other fields override"),
    ("murmur", Literal[V.MURMUR_STATUS] | None, "present or absent"),
    ("grade", int | None, "Levine grade: 1-6 for systolic and continuous murmurs, 1-4 for diastolic ones"),
    ("timing", Literal[V.TIMINGS] | None, "when in the cardiac cycle the murmur sounds"),
    ("shape", Literal[V.SHAPES] | None, "the murmur's envelope"),
    ("pitch", Literal[V.PITCHES] | None, "the murmur's pitch"),
    ("quality", Literal[V.QUALITIES] | None, "the murmur's quality"),
    ("location", Literal[V.LOCATIONS] | None, "auscultation site where the murmur is loudest"),
    ("radiation", Literal[V.RADIATIONS] | None, "where the murmur radiates"),
    ("extra_sounds", list[str] | None, f"any of: {', '.join(V.EXTRA_SOUNDS)}"),
    ("heart_rate", float | None, f"beats per minute, {V.HEART_RATE_RANGE[0]:g}-{V.HEART_RATE_RANGE[1]:g}"),
    ("age_group", Literal[V.AGE_GROUPS] | None, "the patient's age group"),
    ("sex", Literal[V.SEXES] | None, "the patient's sex"),
    ("height_cm", float | None, "the patient's height in cm"),
    ("weight_kg", float | None, "the patient's weight in kg"),
    ("pregnant", bool | None, "pregnancy (a female adolescent or older)"),
)
# Sampler settings every endpoint takes, documented once.
SETTINGS_DOCS = {"steps": "sampling steps (default: the model's)",
                 "guidance": "classifier-free guidance scale (default: the model's)",
                 "sampler": f"{', '.join(SAMPLERS)} (default: the model's)",
                 "conform": "edit each clip to its findings' heart rate, murmur phase and level (default: the "
                            "model's, on for the shipped one; false: the sampler's clip as it comes)"}


def findings_api(method):
    """`method(self, ..., findings, ...)` as an endpoint whose `findings` parameter is spelled out as
    the FINDINGS_PARAMETERS (each defaulting to None), documented in its docstring's Parameters with
    the sampler settings (SETTINGS_DOCS).

    The fields given (not None) are validated with `validate_dict`; the method receives the
    Findings, and a refusal reaches the caller as a gr.Error naming the field.
    """
    # Gradio reads the types off the signature: resolved hints, not the strings `annotations` leaves
    hints = typing.get_type_hints(method)
    signature = inspect.signature(method)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    at = [p.name for p in params].index("findings")
    fields = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=hint)
              for name, hint, _ in FINDINGS_PARAMETERS]
    spelled_out = signature.replace(parameters=params[:at] + fields + params[at + 1:],
                                    return_annotation=hints["return"])

    @functools.wraps(method)
    def endpoint(*args, **kwargs):
        bound = spelled_out.bind(*args, **kwargs)
        bound.apply_defaults()
        given = {name: bound.arguments.pop(name) for name, *_ in FINDINGS_PARAMETERS}
        try:
            findings = validate_dict({k: v for k, v in given.items() if v is not None})
        except FindingsError as exc:
            raise gr.Error(f"Findings not valid: {exc}") from exc
        return method(**bound.arguments, findings=findings)

    endpoint.__signature__ = spelled_out
    endpoint.__annotations__ = {p.name: p.annotation for p in spelled_out.parameters.values()
                                if p.annotation is not inspect.Parameter.empty} | {"return": hints["return"]}
    indent = "    " * 3
    docs = [(name, text) for name, _, text in FINDINGS_PARAMETERS]
    docs += [(name, text) for name, text in SETTINGS_DOCS.items() if name in signature.parameters]
    documented = "".join(f"{indent}{name}: {text}\n" for name, text in docs)
    endpoint.__doc__ = method.__doc__.replace("Parameters:\n", "Parameters:\n" + documented, 1)
    return endpoint


def wav_file(audio, sr: int, name: str) -> gr.FileData:
    """A WAV for the client to download (see `cached_file`)."""
    return cached_file(wav_bytes(audio, sr), name)


def cached_file(data: bytes, name: str) -> gr.FileData:
    """`data` as a file in Gradio's upload folder: Gradio serves files from there, and a name under a
    content-hash folder cannot collide with another request's."""
    return gr.FileData(path=processing_utils.save_bytes_to_cache(data, name, utils.get_upload_folder()))


def what_if_record(wi) -> dict:
    """A WhatIf as JSON: what changed, the latent subspace deltas and both clips' records."""
    return {"changed_fields": list(wi.changed_fields), "held": list(wi.held),
            "subspace_delta": {k: round(v, 5) for k, v in wi.subspace_delta.items()},
            "before": wi.a.to_json(), "after": wi.b.to_json()}
