"""The patient being designed, shared by every tab: findings controls, live L1/L2/L3 prompts (L2 editable
and parsed back) and the sampling settings."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from hldm.app.common import (CONTROL_FIELDS, GRADE_CHOICES, MAX_GUIDANCE, MAX_SECONDS, MAX_STEPS, NO_CONDITION,
                             UI_ONLY, controls_from_findings, dropdown, findings_from_controls)
from hldm.clinical import vocabulary as V
from hldm.clinical.prompts import build_prompts, findings_from_prompt
from hldm.clinical.validation import FindingsError, validate_dict
from hldm.diffusion.schedules import SAMPLERS
from hldm.paths import REPO

EXAMPLES = REPO / "assets" / "examples.json"


def load_examples() -> list[dict]:
    return json.loads(EXAMPLES.read_text())


class DesignHandlers:
    """The controls' callbacks; plain methods so tests can call them directly."""

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
        current = dict(zip(CONTROL_FIELDS, values))
        out = controls_from_findings(validate_dict({"condition": condition}))
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


@dataclass
class Design:
    """The shared components: `controls` in CONTROL_FIELDS order, `sampling` = [seed, steps, guidance,
    sampler, seconds] (also by name)."""

    handlers: DesignHandlers
    controls: list
    seed: gr.Number
    steps: gr.Slider
    guidance: gr.Slider
    sampler: gr.Dropdown
    seconds: gr.Slider

    @property
    def sampling(self) -> list:
        return [self.seed, self.steps, self.guidance, self.sampler, self.seconds]


def build_design(app: gr.Blocks, defaults) -> Design:
    """The controls, prompts and sampling settings (defaults: the model's DiffusionConfig) inside the
    open `app`, wired to refresh the prompts when the page loads and on every edit."""
    h = DesignHandlers()
    with gr.Row():
        with gr.Column(scale=3, elem_id="controls"):
            with gr.Row():
                example = dropdown([e["name"] for e in load_examples()], value=None, label="Example case",
                                   elem_id="example")
                condition = dropdown([NO_CONDITION, *V.CONDITIONS], value=NO_CONDITION,
                                     label="Condition (fills its typical findings)", elem_id="condition")
            with gr.Row():
                murmur = gr.Radio(list(V.MURMUR_STATUS), value="absent", label="Murmur", min_width=120,
                                  elem_id="murmur")
                grade = dropdown(GRADE_CHOICES, value=None, label="Grade (diastolic ≤ IV)", elem_id="grade")
                timing = dropdown(list(V.TIMINGS), value=None, label="Timing", elem_id="timing")
                shape = dropdown(list(V.SHAPES), value=None, label="Shape", elem_id="shape")
            with gr.Row():
                pitch = dropdown(list(V.PITCHES), value=None, label="Pitch", elem_id="pitch")
                quality = dropdown(list(V.QUALITIES), value=None, label="Quality", elem_id="quality")
                location = dropdown(list(V.LOCATIONS), value="MV", label="Location", elem_id="location")
                radiation = dropdown(list(V.RADIATIONS), value="none", label="Radiation", elem_id="radiation")
            extra = gr.CheckboxGroup(list(V.EXTRA_SOUNDS), value=[], label="Extra sounds", elem_id="extra")
            with gr.Row():
                heart_rate = gr.Slider(*V.HEART_RATE_RANGE, value=80, step=1, label="Heart rate (bpm)",
                                       min_width=120, elem_id="heart_rate")
                age_group = dropdown(list(V.AGE_GROUPS), value="child", label="Age group", elem_id="age_group")
                sex = dropdown(list(V.SEXES), value="female", label="Sex", elem_id="sex")
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

    preview_out = [l1, l2, l3, status]
    # .input (user edits), not .change: a .change preview would also fire after apply_l2 sets the
    # controls and overwrite its status; programmatic fills chain the preview explicitly instead.
    preview = {"fn": h.preview, "inputs": controls, "outputs": preview_out, "show_progress": "hidden", **UI_ONLY}
    gr.on([app.load, *(c.input for c in controls if c is not condition)], trigger_mode="always_last", **preview)
    condition.input(h.prefill_condition, [condition, *controls], controls, **UI_ONLY).then(**preview)
    example.input(h.load_example, [example, *controls], controls, **UI_ONLY).then(**preview)
    gr.on([l2.submit, apply_l2.click], h.apply_l2, [l2, *controls], [*controls, *preview_out], **UI_ONLY)
    return Design(h, controls, seed, steps, guidance, sampler, seconds)
