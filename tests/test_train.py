"""The 3-stage trainer: presets, atomic resumable state, schedules, and a micro preset end to end
(export + model card, --stop-after/--resume, kill -9, config mismatch, DDP with 2 gloo processes)."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from hldm.clinical.vocabulary import Findings
from hldm.paths import REPO
from hldm.train.config import ConfigError, TrainConfig, load_config
from hldm.train.ema import EMA
from hldm.train.logging import MetricsLogger, read_metrics
from hldm.train.state import (CheckpointError, ConfigMismatchError, TrainState, capture_rng, check_config,
                              load_state, read_index, restore_rng, save_state)
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


ABLATION_DIR = Path(__file__).resolve().parent.parent / "train" / "ablations"
ABLATIONS = ("baseline", "labels_only", "no_medical_attention", "no_disentangle", "no_structured_noise")


@pytest.mark.parametrize("name", ("hldm", *ABLATIONS))
def test_ablation_presets_change_only_their_flags_and_the_ldm_budget(name):
    from hldm.train.trainer import model_config

    path = ABLATION_DIR / f"{name}.toml"
    cpu, cfg = load_config("cpu_v1"), load_config(path)  # the study was run on the v1 recipe
    assert cfg.data == cpu.data and cfg.vae == cpu.vae and cfg.ldm.epochs == 2
    assert cfg.ldm.lr == cpu.ldm.lr and cfg.ldm.batch_size == cpu.ldm.batch_size
    model = model_config(cfg)
    assert model.diffusion.prediction_type == "v_prediction"  # cpu's [model.diffusion] survives the overlay
    flags = {"baseline": {"labels_only", "no_medical_attention", "no_structured_noise", "no_disentangle"},
             "hldm": set()}.get(path.stem, {path.stem})
    assert set(model.ablations) == flags


@pytest.mark.parametrize("name", ABLATIONS)
def test_shipped_budget_ablations_differ_from_the_shipped_preset_only_by_their_flags(name):
    from hldm.train.trainer import model_config

    cpu, cfg = load_config("cpu_v1"), load_config(ABLATION_DIR / "shipped_budget" / f"{name}.toml")
    assert (cfg.data, cfg.vae, cfg.ldm) == (cpu.data, cpu.vae, cpu.ldm)
    flags = set(model_config(cfg).ablations)
    assert flags and flags == set(model_config(load_config(ABLATION_DIR / f"{name}.toml")).ablations)


def test_a_preset_that_is_its_own_base_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match="its own base"):
        load_config(tmp_path / "a.toml")


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


def test_metrics_reader_skips_a_row_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,epoch,split,metric,value\n1,0,train,loss,0.5\n2,0,train,loss,1.2e\n3,0,tr")
    assert read_metrics(path) == [{"step": 1, "epoch": 0, "split": "train", "metric": "loss", "value": 0.5}]


# ---------------------------------------------------------------- end to end: a micro preset

# Smaller than train/tiny.toml so the default suite stays fast: 16 simulated 2 s windows,
# batch 4 -> 4 steps an epoch; vae 8 steps, ldm 8, finetune 4; a checkpoint every 3 steps.
MICRO = {
    "name": "micro", "seed": 0,
    "data": {"source": "sim", "seconds": 2.0, "sim_windows": 16, "val_sim_windows": 4},
    "model": {
        "vae": {"channels": [16, 24, 32], "aux_hidden": 16, "kl_anneal_steps": 4},
        "cond": {"dim": 32, "text_trainable_layers": 0, "graph_hidden": 32, "label_embed_dim": 8},
        "unet": {"channels": [32, 48], "attention_levels": [1], "heads": 2, "cond_dim": 32,
                 "time_embed_dim": 32, "emb_dim": 64, "dropout": 0.0},
        "diffusion": {"steps": 4},
    },
    "vae": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "ema_decay": 0.9, "checkpoint_every": 3},
    "ldm": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "ema_decay": 0.9, "checkpoint_every": 3,
            "latent_scale_batches": 1},
    "finetune": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.9, "checkpoint_every": 3},
    "distill": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.9, "checkpoint_every": 3, "steps": 2,
                "substeps": 2},
}
STEPS = {"vae": 8, "ldm": 8, "finetune": 4}
STEPS_PER_EPOCH = 4
MR = {"murmur": "present", "timing": "holosystolic", "shape": "plateau", "grade": 3, "pitch": "high",
      "quality": "blowing", "location": "MV", "radiation": "axilla", "heart_rate": 90.0}


def _toml(d: dict, table: str = "") -> str:
    """The few TOML forms MICRO needs (JSON spells numbers, strings and lists the same way)."""
    lines = [f"[{table}]"] if table and any(not isinstance(v, dict) for v in d.values()) else []
    lines += [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    lines += [_toml(v, f"{table}.{k}" if table else k) for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n"


def write_config(path: Path, **changes: dict) -> Path:
    """MICRO with `changes` (table -> {key: value}) written to `path` as TOML."""
    cfg = copy.deepcopy(MICRO)
    for table, values in changes.items():
        cfg[table].update(values)
    path.write_text(_toml(cfg))
    return path


def train_cli(*args) -> int:
    """`python -m hldm train ...` in this process (its exit code), on CPU."""
    from hldm.cli import main

    return main(["train", *map(str, args), "--device", "cpu"])


def one_thread_env() -> dict:
    # The same intra-op thread count as this process (set_num_threads(1) below), so that
    # float reductions, hence the weights, are the same in a child process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ between {a} and {b}, e.g. {differ[:3]}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted micro run of all three stages through the CLI: the baseline of the resume tests."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    assert train_cli("--stage", "all", "--config", write_config(root / "micro.toml"), "--out", out) == 0
    return out


def test_micro_run_trains_three_stages_and_exports_a_loadable_model_with_card(reference):
    from hldm.pipeline import HLDMPipeline

    for stage, steps in STEPS.items():
        d = reference / stage
        index = read_index(d)
        assert index["step"] == steps and index["meta"]["completed"]
        rows = read_metrics(d / "metrics.csv")
        assert sorted({r["step"] for r in rows if r["split"] == "train"}) == list(range(1, steps + 1))
        epoch_ends = list(range(STEPS_PER_EPOCH, steps + 1, STEPS_PER_EPOCH))
        val = [r for r in rows if r["split"] == "val" and r["metric"] == "loss"]
        assert [r["step"] for r in val] == epoch_ends and all(math.isfinite(r["value"]) for r in val)
        events = list((d / "tb").glob("events.out.tfevents.*"))
        assert len(events) == 1
        tb = EventAccumulator(str(events[0])).Reload()
        assert [e.step for e in tb.Scalars("val/loss")] == epoch_ends
        assert [e.value for e in tb.Scalars("val/loss")] == pytest.approx([r["value"] for r in val])

    model = reference / "model"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in model.iterdir()}
    assert_bit_identical(model, reference / "finetune" / "final")  # the last stage's EMA weights
    card = (model / "README.md").read_text()
    assert "## Data" in card and "0 real + 0 augmented real" in card and "+ 16 simulated (2 s each)" in card
    for stage, steps in STEPS.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {stage} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == steps
        assert cells[4].split()[-1] in ("s", "min", "h")  # wall time
        assert all(math.isfinite(float(c)) for c in cells[5:7])  # final train and val loss
    assert "Total wall time: " in card

    g = HLDMPipeline.from_pretrained(model, device="cpu").generate(MR, seed=0, steps=3, seconds=2.0)
    assert g.seconds == pytest.approx(2.0, abs=0.05)
    assert np.isfinite(g.audio).all() and np.abs(g.audio).max() > 0


def test_stop_after_then_resume_continues_at_that_step_and_matches_the_uninterrupted_run(reference, tmp_path,
                                                                                           capsys):
    out = tmp_path / "run"
    run = ("--stage", "all", "--config", write_config(tmp_path / "micro.toml"), "--out", out)
    assert train_cli(*run, "--stop-after", 5) == 3  # vae stops at 5 of 8
    assert read_index(out / "vae")["step"] == 5 and not (out / "ldm").exists()
    capsys.readouterr()
    assert train_cli(*run, "--resume", "--stop-after", 3) == 3  # vae 5 -> 8, ldm stops at 3 of 8
    assert "[vae] resumed at step 5/8" in capsys.readouterr().out
    assert read_index(out / "ldm")["step"] == 3
    assert train_cli(*run, "--resume") == 0
    log = capsys.readouterr().out
    assert "[vae] already complete at step 8" in log and "[ldm] resumed at step 3/8" in log

    # Stage 1 is bit-identical to the uninterrupted run: same batches, same draws, same weights.
    assert_bit_identical(out / "vae" / "final", reference / "vae" / "final")
    assert read_metrics(out / "vae" / "metrics.csv") == read_metrics(reference / "vae" / "metrics.csv")
    # Stages 2-3 agree to float rounding only: the text encoder's embedding cache starts empty in a
    # resumed process, and an embedding computed in another batch can differ in the last bit.
    for stage in ("ldm", "finetune"):
        got, want = read_metrics(out / stage / "metrics.csv"), read_metrics(reference / stage / "metrics.csv")
        assert [(r["step"], r["split"], r["metric"]) for r in got] == [(r["step"], r["split"], r["metric"])
                                                                      for r in want]
        np.testing.assert_allclose([r["value"] for r in got], [r["value"] for r in want], rtol=1e-4, atol=1e-6)
        wg, ww = weights(out / stage / "final"), weights(reference / stage / "final")
        for k in ww:
            torch.testing.assert_close(wg[k], ww[k], rtol=0, atol=5e-3, msg=lambda m, k=k: f"{stage} {k}: {m}")
    assert_bit_identical(out / "model", out / "finetune" / "final")


def test_kill_9_mid_stage_then_resume_continues_at_the_checkpointed_step(reference, tmp_path, capsys):
    cfg, out = write_config(tmp_path / "micro.toml"), tmp_path / "run"
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hldm", "train", "--stage", "vae", "--config", str(cfg),
                                 "--out", str(out), "--device", "cpu"],
                                cwd=REPO, env=one_thread_env(), stdout=f, stderr=subprocess.STDOUT)
    index = out / "vae" / "checkpoint.json"
    deadline = time.monotonic() + 600
    try:
        while not index.is_file():  # the first checkpoint: step 3 of 8
            assert proc.poll() is None, f"the trainer exited before its first checkpoint:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    k = read_index(out / "vae")["step"]
    assert 0 < k < STEPS["vae"], f"killed at step {k}: the stage was already finished, nothing to resume"

    assert train_cli("--stage", "vae", "--config", cfg, "--out", out, "--resume") == 0
    assert f"[vae] resumed at step {k}/{STEPS['vae']}" in capsys.readouterr().out
    # The rows the killed process logged past its checkpoint were replaced, not duplicated.
    assert read_metrics(out / "vae" / "metrics.csv") == read_metrics(reference / "vae" / "metrics.csv")
    tb = EventAccumulator(str(out / "vae" / "tb")).Reload()  # both processes' event files, purged at k
    assert [e.step for e in tb.Scalars("train/loss")] == list(range(1, STEPS["vae"] + 1))
    assert_bit_identical(out / "vae" / "final", reference / "vae" / "final")
    assert [p.name for p in (out / "vae").glob("*.safetensors")] == [f"checkpoint-{STEPS['vae']:08d}.safetensors"]
    assert not list((out / "vae").glob(".*.tmp"))


def test_stage_2_reuses_a_trained_vae_under_a_new_denoiser_but_not_a_changed_vae(reference, tmp_path, capsys):
    import shutil

    def with_model(table: str, **values) -> dict:
        return {**MICRO["model"], table: {**MICRO["model"][table], **values}}

    out = tmp_path / "run"
    shutil.copytree(reference / "vae", out / "vae")
    bias_only = write_config(tmp_path / "bias.toml", model=with_model("unet", scale_shift=False))
    assert train_cli("--stage", "ldm", "--config", bias_only, "--out", out) == 0
    vae = {k: v for k, v in weights(reference / "vae" / "final").items() if k.startswith("vae.")}
    ldm = weights(out / "ldm" / "final")
    assert vae and all(torch.equal(ldm[k], v) for k, v in vae.items())  # frozen, taken as trained
    assert json.loads((out / "ldm" / "final" / "config.json").read_text())["config"]["unet"]["scale_shift"] is False
    capsys.readouterr()

    shutil.copytree(reference / "vae", tmp_path / "run2" / "vae")
    other_vae = write_config(tmp_path / "vae.toml", model=with_model("vae", aux_hidden=8))
    assert train_cli("--stage", "ldm", "--config", other_vae, "--out", tmp_path / "run2") == 2
    assert "aux_hidden" in capsys.readouterr().err


def test_stage_1_continues_a_trained_vae_under_a_new_loss_but_refuses_another_shape(reference, tmp_path, capsys):
    def with_vae(**values) -> dict:
        return {**MICRO["model"], "vae": {**MICRO["model"]["vae"], **values}}

    trained = reference / "vae" / "final"
    cont = write_config(tmp_path / "cont.toml", model=with_vae(sharpness=1.0),
                        vae={"init_from": str(trained), "decoder_only": True, "epochs": 1})
    assert train_cli("--stage", "vae", "--config", cont, "--out", tmp_path / "run") == 0
    before = {k: v for k, v in weights(trained).items() if k.startswith("vae.")}
    after = weights(tmp_path / "run" / "vae" / "final")
    # the encoder (and heads) are the trained ones, untouched: a denoiser fitted on their latents still fits
    kept = [k for k in before if not k.startswith("vae.decoder.")]
    assert kept and all(torch.equal(after[k], before[k]) for k in kept)
    # the decoder started from the trained one and moved on (a fresh init would be far away)
    moved = [k for k in before if k.startswith("vae.decoder.") and k.endswith("weight")]
    assert any(not torch.equal(after[k], before[k]) for k in moved)
    fresh = weights(reference / "vae" / "final")  # same shapes; distance check against a re-init below
    torch.manual_seed(0)
    from hldm.models.ms_vae import MSVAE, MSVAEConfig
    init = MSVAE(MSVAEConfig(**{**MICRO["model"]["vae"], "channels": tuple(MICRO["model"]["vae"]["channels"])}))
    k = moved[0]
    assert (after[k] - fresh[k]).norm() < (init.state_dict()[k[len("vae."):]] - fresh[k]).norm()
    capsys.readouterr()
    wider = write_config(tmp_path / "wider.toml", model=with_vae(aux_hidden=8), vae={"init_from": str(trained)})
    assert train_cli("--stage", "vae", "--config", wider, "--out", tmp_path / "run2") == 2
    assert "aux_hidden" in capsys.readouterr().err


def test_stage_2_continues_a_trained_denoiser_on_the_same_encoder(reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference / "vae", out / "vae")
    trained = reference / "ldm" / "final"
    cont = write_config(tmp_path / "cont.toml", ldm={"init_from": str(trained), "epochs": 1, "lr": 1e-9,
                                                     "warmup_steps": 10**6})
    assert train_cli("--stage", "ldm", "--config", cont, "--out", out) == 0
    before, after = weights(trained), weights(out / "ldm" / "final")
    denoiser = [k for k in before if k.startswith(("unet.", "cond."))]
    # lr ~ 0: it starts from (and stays at) the trained denoiser, at the latent scale it was fitted at
    assert denoiser and all(torch.allclose(after[k], before[k], atol=1e-6) for k in denoiser)
    scale = [json.loads((d / "config.json").read_text())["config"]["diffusion"]["latent_scale"] for d in
             (trained, out / "ldm" / "final")]
    assert scale[0] == scale[1]


def test_distill_stage_makes_a_few_step_student_of_a_trained_pipeline(reference, tmp_path):
    from hldm.pipeline import HLDMPipeline

    teacher = reference / "model"
    cfg = write_config(tmp_path / "distill.toml", distill={"init_from": str(teacher)})
    assert train_cli("--stage", "distill", "--config", cfg, "--out", tmp_path / "run") == 0
    student = tmp_path / "run" / "model"
    diffusion = json.loads((student / "config.json").read_text())["config"]["diffusion"]
    assert (diffusion["sampler"], diffusion["steps"], diffusion["guidance"]) == ("ddim", 2, 1.0)
    before, after = weights(teacher), weights(student)
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(("cond.", "vae.")))
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("unet."))
    g = HLDMPipeline.from_pretrained(student, device="cpu").generate(MR, seed=0, seconds=2.0)
    assert (g.sampler, g.steps, g.guidance) == ("ddim", 2, 1.0) and len(g.weights) == 2
    assert np.isfinite(g.audio).all() and np.abs(g.audio).max() > 0


def test_resume_refuses_a_changed_config_a_corrupt_checkpoint_and_a_silent_overwrite(tmp_path, capsys):
    cfg, out = write_config(tmp_path / "micro.toml"), tmp_path / "run"
    assert train_cli("--stage", "vae", "--config", cfg, "--out", out, "--stop-after", 1) == 3
    capsys.readouterr()

    changed = write_config(tmp_path / "changed.toml", vae={"lr": 1e-3}, data={"sim_windows": 20})
    assert train_cli("--stage", "vae", "--config", changed, "--out", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "vae.lr: checkpoint 0.002, now 0.001" in err and "data.sim_windows: checkpoint 16, now 20" in err

    assert train_cli("--stage", "vae", "--config", cfg, "--out", out) == 2  # without --resume
    assert "pass --resume" in capsys.readouterr().err

    tensors = next((out / "vae").glob("checkpoint-*.safetensors"))
    blob = bytearray(tensors.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    tensors.write_bytes(bytes(blob))
    assert train_cli("--stage", "vae", "--config", cfg, "--out", out, "--resume") == 2
    assert f"{tensors.name} is corrupt" in capsys.readouterr().err
    assert read_index(out / "vae")["step"] == 1


DDP_WORKER = """
import sys

from safetensors.torch import save_file

import hldm.train.distributed as D
from hldm.train.cli import main

check = D.assert_in_sync


def keep_weights(model, info):
    # Each rank's live weights at the end of the stage, for the test to compare; then the trainer's own check.
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
              f"{sys.argv[1]}/rank{info.rank}.safetensors")
    check(model, info)


D.assert_in_sync = keep_weights
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_ddp_two_gloo_processes_keep_identical_weights_and_rank0_writes_the_checkpoint(tmp_path, capsys):
    cfg, out = write_config(tmp_path / "micro.toml"), tmp_path / "run"
    worker = tmp_path / "ddp_worker.py"
    worker.write_text(DDP_WORKER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(tmp_path), "--stage", "vae", "--config", str(cfg), "--out", str(out),
                           "--device", "cpu"],
                          cwd=REPO, env=one_thread_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world size 2" in proc.stdout

    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    steps = (MICRO["data"]["sim_windows"] // 2) // MICRO["vae"]["batch_size"] * MICRO["vae"]["epochs"]  # 4
    state = load_state(out / "vae")
    assert state.step == steps and state.meta["run"]["world_size"] == 2
    assert all(torch.equal(state.model[k], rank0[k]) for k in rank0)  # written by rank 0, from its weights
    assert len(state.rng) == 2 and not torch.equal(state.rng[0]["torch"], state.rng[1]["torch"])
    rows = read_metrics(out / "vae" / "metrics.csv")  # one writer: no row twice
    assert len(rows) == len({(r["step"], r["split"], r["metric"]) for r in rows})
    assert len(list((out / "vae" / "tb").glob("events.out.tfevents.*"))) == 1

    # The checkpoint holds 2 processes' state: one process cannot resume it.
    assert train_cli("--stage", "vae", "--config", cfg, "--out", out, "--resume") == 2
    assert "world_size: checkpoint 2, now 1" in capsys.readouterr().err
