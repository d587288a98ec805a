"""The Interpretability tab: per-subspace noise weights w_i over the sampling steps of the last
*Generate*, the Medical Attention mask M_cardiac per layer, and the learned fusion weights. Drawn
when the tab is opened: most generations never look at it."""
from __future__ import annotations

import gradio as gr
import numpy as np

from hldm import app_views
from hldm.app.common import UI_ONLY, figure
from hldm.pipeline import HLDMPipeline


class InterpretabilityHandlers:
    """The tab's callbacks over one pipeline; plain methods so tests can call them directly."""

    def __init__(self, pipeline: HLDMPipeline):
        self.pipeline = pipeline

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


def _as_square(mask) -> np.ndarray:
    """A stored mask may carry batch/head axes in front of (L, L): average them out for display."""
    m = np.asarray(mask, dtype=np.float32)
    return m.reshape(-1, *m.shape[-2:]).mean(axis=0) if m.ndim > 2 else m


def build_interpretability_tab(app: gr.Blocks, pipeline: HLDMPipeline, interp: gr.State) -> InterpretabilityHandlers:
    """The tab inside an open `gr.Tabs`; `interp` holds the last generation's traces (Generate tab)."""
    h = InterpretabilityHandlers(pipeline)
    with gr.Tab("Interpretability", id="interp") as tab:
        gr.Markdown("From the last *Generate*: structured-noise weights w_i per step, the Medical "
                    "Attention mask M_cardiac, and the learned text/graph/attribute fusion weights.")
        with gr.Row():
            weights = figure(label="w_i over sampling steps", scale=3, elem_id="weights_plot")
            fusion = figure(label="Fusion weights", scale=1, elem_id="fusion_plot")
        with gr.Row():
            with gr.Column(scale=1):
                layer = gr.Dropdown([], value=None, label="Medical Attention layer", elem_id="attn_layer")
            attention = figure(label="M_cardiac (last sampling step)", scale=2, elem_id="attn_plot")
    app.load(h.fusion, None, fusion, **UI_ONLY)
    tab.select(h.interpretability, [interp, layer], [weights, attention, layer], **UI_ONLY)
    layer.input(h.attention_layer, [interp, layer], attention, **UI_ONLY)
    return h
