"""The 3-stage trainer: presets, atomic resumable state, schedules, the tiny preset end to end."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hldm.clinical.vocabulary import Findings
from hldm.paths import REPO
from hldm.train.config import ConfigError, TrainConfig, load_config
from hldm.train.ema import EMA
from hldm.train.logging import MetricsLogger, read_metrics
from hldm.train.state import (CheckpointError, ConfigMismatchError, TrainState, capture_rng, check_config,
                              load_state, restore_rng, save_state)
from hldm.train.weighting import RareWeights, curriculum_subspace_weights, curriculum_timestep_weights

PRESETS = ("tiny", "cpu", "paper")


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("name", PRESETS)
def test_shipped_presets_load(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.to_dict()["ldm"]["cond_dropout"] == pytest.approx(0.1)


def test_preset_paper_epochs_match_the_paper():
    cfg = load_config("paper")
    assert (cfg.vae.epochs, cfg.ldm.epochs, cfg.finetune.epochs) == (50, 150, 50)


@pytest.mark.parametrize("raw, field", [
    ({"vae": {"lr": -1.0}}, "vae.lr"),
    ({"vae": {"learning_rate": 1e-3}}, "vae.learning_rate"),
    ({"data": {"source": "youtube"}}, "data.source"),
    ({"ldm": {"batch_size": "8"}}, "ldm.batch_size"),
    ({"optimiser": {}}, "optimiser"),
    ({"data": {"sim_fraction": 1.0}}, "data.sim_fraction"),
])
def test_bad_config_names_the_field(raw, field):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(raw)
    assert e.value.field == field
    assert field in str(e.value)


def test_unknown_preset_lists_shipped_ones():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("no-such-preset")


# ---------------------------------------------------------------- state files

def _toy_state(step: int = 3) -> TrainState:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ema = EMA(model, 0.9)
    return TrainState(step, model.state_dict(), ema.state_dict(), opt.state_dict(), [capture_rng()],
                      {"run": {"a": 1}})


def test_state_round_trip_restores_model_optimizer_and_rng(tmp_path):
    st = _toy_state()
    save_state(tmp_path, st)
    expected = torch.rand(5)  # the next draw after the captured state
    back = load_state(tmp_path)
    assert back.step == 3 and back.meta == {"run": {"a": 1}}
    for k, v in st.model.items():
        assert torch.equal(back.model[k], v)
    assert back.optimizer["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert torch.equal(back.optimizer["state"][0]["exp_avg"], st.optimizer["state"][0]["exp_avg"])
    restore_rng(back.rng[0])
    assert torch.equal(torch.rand(5), expected)
    # a second save replaces the tensor file; only the current one remains
    st.step = 4
    save_state(tmp_path, st)
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["checkpoint-00000004.safetensors"]
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    save_state(tmp_path, _toy_state())
    tensors = next(tmp_path.glob("*.safetensors"))
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state(tmp_path)
    (tmp_path / "checkpoint.json").write_text('{"format": "hldm-train-state/1", "st')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_state(tmp_path)


def test_truncated_tensor_file_gives_clear_error(tmp_path):
    save_state(tmp_path, _toy_state())
    tensors = next(tmp_path.glob("*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=tensors.name):
        load_state(tmp_path)


def test_config_mismatch_names_each_key():
    saved = {"seed": 0, "stage_config": {"lr": 1e-3, "batch_size": 8}, "model": {"unet": {"channels": [8, 16]}}}
    now = {"seed": 0, "stage_config": {"lr": 2e-3, "batch_size": 8}, "model": {"unet": {"channels": [8, 32]}}}
    check_config(saved, json.loads(json.dumps(saved)), "x")  # JSON round trip is no mismatch
    with pytest.raises(ConfigMismatchError) as e:
        check_config(saved, now, "the checkpoint")
    assert e.value.keys == ["model.unet.channels", "stage_config.lr"]
    assert "stage_config.lr: checkpoint 0.001, now 0.002" in str(e.value)


# ---------------------------------------------------------------- EMA, logging, schedules

def test_ema_tracks_and_applies_weights():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(30):
        ema.update(model)
    assert 0.99 < float(ema.shadow["weight"][0, 0]) <= 1.0
    with torch.no_grad():
        model.weight.fill_(5.0)
    with ema.applied(model):
        assert float(model.weight.detach()[0, 0]) == pytest.approx(float(ema.shadow["weight"][0, 0]))
    assert float(model.weight.detach()[0, 0]) == 5.0


def test_metrics_resume_drops_rows_after_checkpoint(tmp_path):
    log = MetricsLogger(tmp_path)
    for s in range(1, 7):
        log.log(s, 0, "train", {"loss": float(s)})
    log.close()
    log = MetricsLogger(tmp_path, resume_step=4)
    log.log(5, 0, "train", {"loss": 50.0})
    log.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["step"], r["value"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_curriculum_moves_rhythm_to_sounds_to_details():
    focus = [int(torch.argmax(curriculum_subspace_weights(p, end=0.75))) for p in (0.0, 0.375, 0.74)]
    assert focus[0] == 0 and focus[1] == 1 and focus[2] in (2, 3)  # rhythm, s1s2, murmur/noise
    for p in (0.0, 0.3, 0.6, 0.9):
        w = curriculum_subspace_weights(p)
        assert float(w.mean()) == pytest.approx(1.0) and float(w.min()) > 0
    assert torch.allclose(curriculum_subspace_weights(1.0), torch.ones(4))
    tw0, tw1 = curriculum_timestep_weights(100, 0.0), curriculum_timestep_weights(100, 0.9)
    assert tw0[-1] > tw0[0] and torch.allclose(tw1, torch.ones(100))


def test_rare_weights_favour_rare_classes_and_are_capped():
    common = [Findings()] * 90
    rare = [Findings(murmur="present", timing="holosystolic", shape="plateau", grade=5, pitch="high",
                     quality="blowing", condition="mitral regurgitation")] * 3
    w = RareWeights(common + rare, cap=4.0)
    assert w.weight(rare[0]) == pytest.approx(4.0)  # capped
    assert w.weight(common[0]) < 1.0
    assert RareWeights(common + rare, cap=1000.0).weight(rare[0]) > 10
