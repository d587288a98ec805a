"""The app's pipeline loads in the background: the page is built from config.json at once, every model
call waits for the weights, and a checkpoint that cannot load says so on use instead of hanging."""
import json

import numpy as np
import pytest

from hldm.app.studio import BackgroundPipeline, load_pipeline
from hldm.models.checkpoint import CheckpointError
from hldm.models.hldm import HLDMConfig
from hldm.pipeline import HLDMPipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    pipe = HLDMPipeline.from_config(HLDMConfig.tiny(), seed=0)
    pipe.save_pretrained(directory)
    return directory, pipe


def test_background_pipeline_serves_the_loaded_model(saved):
    directory, pipe = saved
    ready = []
    loading = BackgroundPipeline(directory, on_ready=ready.append)
    assert loading.config.diffusion == pipe.config.diffusion  # known before the weights
    a = loading.generate({"murmur": "absent"}, seed=3, seconds=1.0, steps=2).audio
    b = pipe.generate({"murmur": "absent"}, seed=3, seconds=1.0, steps=2).audio
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert ready == [None]


def test_weights_that_cannot_load_fail_each_call_with_a_message(saved, tmp_path):
    directory, _ = saved
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((directory / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    ready = []
    loading = BackgroundPipeline(broken, on_ready=ready.append)
    for _ in range(2):
        with pytest.raises(CheckpointError, match="could not be loaded"):
            loading.generate({"murmur": "absent"}, seconds=1.0)
    assert len(ready) == 1 and ready[0] is not None


def test_a_bad_config_stops_the_start(saved, tmp_path):
    directory, _ = saved
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = json.loads((directory / "config.json").read_text())
    raw["config"]["diffusion"]["steps"] = 0
    (bad / "config.json").write_text(json.dumps(raw))
    (bad / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="steps"):
        load_pipeline(bad)
