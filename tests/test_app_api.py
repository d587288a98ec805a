"""The app's API endpoints: named, typed, documented parameters; findings validated like every entry point's;
called directly on a tiny random pipeline and through gradio_client against app.py on loopback (`app_url`)."""
import csv
import io
import inspect
import zipfile

import gradio as gr
import pytest
import soundfile as sf

from hldm.app.api import FINDINGS_PARAMETERS
from hldm.app.export import ExportHandlers
from hldm.app.generate import GenerateHandlers
from hldm.app.upload import UploadHandlers
from hldm.app.what_if import WhatIfHandlers
from hldm.clinical.knowledge_graph import default_graph

FINDINGS = [name for name, *_ in FINDINGS_PARAMETERS]


@pytest.fixture(scope="module")
def pipeline():
    from hldm.models.hldm import HLDMConfig
    from hldm.pipeline import HLDMPipeline

    return HLDMPipeline.from_config(HLDMConfig.tiny(labels_only=True), device="cpu")


@pytest.mark.parametrize("endpoint, own", [
    (GenerateHandlers.generate_api, ["seed", "steps", "guidance", "sampler", "seconds", "conform"]),
    (WhatIfHandlers.what_if_api, ["change", "hold", "seed", "steps", "guidance", "sampler", "seconds", "conform"]),
    (UploadHandlers.edit_api, ["recording", "change", "strength", "hold", "seed", "steps", "guidance", "sampler"]),
    (ExportHandlers.export_api, ["n", "seconds", "seed", "steps", "guidance", "sampler"]),
])
def test_every_endpoint_names_and_documents_each_parameter(endpoint, own):
    from gradio.utils import get_function_description

    params = list(inspect.signature(endpoint).parameters)[1:]  # after self
    assert sorted(params) == sorted(FINDINGS + own) and params[params.index("condition"):][:len(FINDINGS)] == FINDINGS
    assert all(inspect.signature(endpoint).parameters[name].default is None for name in FINDINGS)
    summary, described, _ = get_function_description(endpoint)
    assert summary and all(described[name] for name in params), described
    assert described["grade"].startswith("Levine grade")


def test_a_condition_alone_gives_its_typical_findings_and_contradictions_are_refused(pipeline):
    h = GenerateHandlers(pipeline)
    wav, record = h.generate_api(condition="aortic stenosis", grade=4, steps=2, seconds=2.0)
    assert record["findings"] == default_graph().typical_findings("aortic stenosis").with_(grade=4).to_dict()
    assert sf.info(wav.path).samplerate == 4000 and sf.info(wav.path).duration == pytest.approx(2.0)
    with pytest.raises(gr.Error, match="condition: 'aortic stenosis' always has a murmur"):
        h.generate_api(condition="aortic stenosis", murmur="absent", steps=2, seconds=2.0)
    with pytest.raises(gr.Error, match="steps"):  # the app's limits hold for the API too
        h.generate_api(condition="aortic stenosis", steps=1000)
    with pytest.raises(gr.Error, match="already II"):
        WhatIfHandlers(pipeline).what_if_api({"grade": 2}, condition="mitral valve prolapse", seconds=2.0)


def test_export_and_refusals_through_gradio_client(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False, analytics_enabled=False)
    path = client.predict(condition="ventricular septal defect", n=2, seconds=2.0, steps=2, seed=5,
                          api_name="/export")
    with zipfile.ZipFile(path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        assert sf.info(io.BytesIO(zf.read(rows[0]["file"]))).samplerate == 4000
    assert [(r["seed"], r["condition"], r["grade"]) for r in rows] == [("5", "ventricular septal defect", "4"),
                                                                       ("6", "ventricular septal defect", "4")]
    with pytest.raises(Exception, match="condition: 'pulmonary stenosis' does not produce an early-diastolic"):
        client.predict(condition="pulmonary stenosis", timing="early-diastolic", api_name="/generate")
