"""HLDMPipeline, the HLDM container and its ablation flags, and the generate/export CLI (tiny random models)."""
import csv
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from hldm.clinical.validation import FindingsError
from hldm.models.checkpoint import CheckpointError
from hldm.models.hldm import ABLATIONS, HLDM, HLDMConfig, load_model
from hldm.pipeline import HLDMPipeline, intervals_from_s1s2

MR = {"murmur": "present", "timing": "holosystolic", "shape": "plateau", "grade": 3, "pitch": "high",
      "quality": "blowing", "location": "MV", "radiation": "axilla", "heart_rate": 90.0}
SECONDS = 2.0


@pytest.fixture(scope="module")
def clinical():
    """Text + graph conditioner (the paper's model), random weights."""
    return HLDMPipeline.from_config(HLDMConfig.tiny(), seed=0, device="cpu")


@pytest.fixture(scope="module")
def labels():
    """Label conditioner: the cheapest model, for the sampler-level tests."""
    return HLDMPipeline.from_config(HLDMConfig.tiny(labels_only=True), seed=0, device="cpu")


def count_denoiser_calls(pipe, monkeypatch) -> list[int]:
    """Batch size of every U-Net call the pipeline makes."""
    calls, denoise = [], pipe.model.denoise

    def spy(z_t, t, c, hr):
        calls.append(z_t.shape[0])
        return denoise(z_t, t, c, hr)

    monkeypatch.setattr(pipe.model, "denoise", spy)
    return calls


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding of batched vs single runs (random models give latents of any scale)."""
    return float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(a).max())


def test_random_pipeline_generates_saves_reloads_and_regenerates_identical_audio(clinical, tmp_path):
    g = clinical.generate(MR, seed=5, seconds=SECONDS)
    T = int(SECONDS * 125)
    assert g.audio.dtype == np.float32 and g.audio.shape == (int(SECONDS * 4000),) and g.sr == 4000
    assert np.isfinite(g.audio).all() and np.abs(g.audio).max() > 0
    assert g.features.shape == (129, T) and g.latent.shape == (16, -(-T // 4))
    assert g.weights.shape == (clinical.config.diffusion.steps, 4)
    assert np.allclose(g.weights.sum(axis=1), 1.0, atol=1e-5)  # w_i(c) is a convex combination
    assert set(g.attention) == {"down1", "mid", "up1"} and g.attention["mid"].ndim == 2
    assert "holosystolic" in g.prompts.l2 and g.findings.grade == 3 and g.device == "cpu"
    assert all(kind in ("S1", "S2", "murmur") and 0 <= a < b <= SECONDS for a, b, kind in g.intervals)

    clinical.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    again = HLDMPipeline.from_pretrained(tmp_path / "model", device="cpu").generate(MR, seed=5, seconds=SECONDS)
    assert np.array_equal(g.audio, again.audio) and np.array_equal(g.latent, again.latent)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp", "dpmpp_sde"])
def test_every_sampler_runs_with_batched_guidance_and_reports_every_step(labels, sampler, monkeypatch):
    calls = count_denoiser_calls(labels, monkeypatch)
    seen = []
    g = labels.generate(MR, seed=1, steps=5, guidance=2.5, sampler=sampler, seconds=SECONDS,
                        progress=lambda i, n: seen.append((i, n)))
    assert calls == [2] * 5  # conditional + null branch in one forward per step
    assert seen == [(i, 5) for i in range(1, 6)] and g.weights.shape == (5, 4)
    assert g.sampler == sampler and np.isfinite(g.audio).all()
    assert not np.array_equal(g.audio, labels.generate(MR, seed=1, steps=5, guidance=0.0, sampler=sampler,
                                                       seconds=SECONDS).audio)


def test_generation_is_deterministic_under_a_seed_and_batches_match_single_runs(labels):
    a = labels.generate(MR, seed=3, sampler="ddpm", seconds=SECONDS)
    assert np.array_equal(a.audio, labels.generate(MR, seed=3, sampler="ddpm", seconds=SECONDS).audio)
    assert not np.allclose(a.latent, labels.generate(MR, seed=4, sampler="ddpm", seconds=SECONDS).latent)
    batch = labels.generate(MR, seed=3, sampler="ddpm", seconds=SECONDS, batch=2)
    assert [b.seed for b in batch] == [3, 4]
    assert close(batch[0].latent, a.latent)
    assert close(batch[1].latent, labels.generate(MR, seed=4, sampler="ddpm", seconds=SECONDS).latent)
    mixed = labels.generate([MR, {"murmur": "absent"}], seed=3, seconds=SECONDS)
    assert [m.findings.murmur for m in mixed] == ["present", "absent"]


def test_what_if_shares_the_initial_noise(labels):
    same = labels.what_if(MR, {}, seed=2, seconds=SECONDS)
    assert np.array_equal(same.a.audio, same.b.audio) and same.changed_fields == ()
    assert all(v == 0 for v in same.subspace_delta.values())
    w = labels.what_if(MR, {"grade": 5}, seed=2, seconds=SECONDS)
    assert w.changed_fields == ("grade",) and w.b.findings.grade == 5 and "V/VI" in w.b.prompts.l2
    assert close(w.a.latent, same.a.latent)  # side a does not depend on the change
    assert not np.allclose(w.a.latent, w.b.latent) and set(w.subspace_delta) == {"rhythm", "s1s2", "murmur", "noise"}
    assert max(w.subspace_delta.values()) > 0


@pytest.mark.parametrize("sampler", ["dpmpp", "ddpm"])
def test_a_grade_what_if_holds_rhythm_and_heart_sounds_unless_told_not_to(labels, sampler):
    held = labels.what_if(MR, {"grade": 5}, seed=2, seconds=SECONDS, sampler=sampler, steps=8)
    assert held.held == ("rhythm", "s1s2")
    assert held.subspace_delta["rhythm"] == 0 and held.subspace_delta["s1s2"] == 0
    assert held.subspace_delta["murmur"] > 0 and held.subspace_delta["noise"] > 0
    free = labels.what_if(MR, {"grade": 5}, seed=2, seconds=SECONDS, sampler=sampler, steps=8, hold=False)
    assert free.held == () and min(free.subspace_delta.values()) > 0
    assert np.array_equal(free.a.latent, held.a.latent)  # side a never depends on the hold
    rate = labels.what_if(MR, {"heart_rate": 120.0}, seed=2, seconds=SECONDS, sampler=sampler, steps=8)
    assert rate.held == () and rate.subspace_delta["rhythm"] > 0


def test_encode_and_edit_a_recording(labels):
    audio = labels.generate({"murmur": "absent"}, seed=0, seconds=SECONDS).audio
    z = labels.encode(audio)
    assert z.shape == (16, -(-int(SECONDS * 125) // 4)) and np.isfinite(z).all()
    seen = []
    e = labels.edit(audio, {"murmur": "absent"}, {}, strength=0.5, seed=1, steps=6,
                    progress=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 3) for i in range(1, 4)] and e.a.weights.shape == (3, 4)
    assert np.array_equal(e.a.audio, e.b.audio) and len(e.a.audio) == len(audio)
    louder = labels.edit(audio, MR, {"grade": 5}, strength=0.5, seed=1, steps=6)
    assert louder.held == ("rhythm", "s1s2") and louder.subspace_delta["rhythm"] == 0
    with pytest.raises(ValueError, match="audio"):
        labels.encode(np.full(4000, np.nan, dtype=np.float32))


@pytest.mark.parametrize("bad, field", [
    ({**MR, "grade": 7}, "grade"),
    ({**MR, "timing": "sometimes"}, "timing"),
    ({**MR, "timing": "holodiastolic", "shape": "plateau", "grade": 5}, "grade"),
    ({"murmur": "absent", "pitch": "high"}, "pitch"),
    ({"condition": "aortic stenosis", "murmur": "absent"}, "condition"),
    ({"condition": "pulmonary stenosis", "timing": "early-diastolic"}, "condition"),
])
def test_invalid_findings_raise_and_generate_nothing(labels, bad, field, monkeypatch):
    calls = count_denoiser_calls(labels, monkeypatch)
    with pytest.raises(FindingsError) as e:
        labels.generate(bad, seconds=SECONDS)
    assert e.value.field == field
    with pytest.raises(FindingsError):
        labels.what_if(MR, bad, seconds=SECONDS)
    assert calls == []


def test_a_condition_alone_starts_from_its_typical_findings(labels):
    from hldm.clinical.knowledge_graph import default_graph

    typical = default_graph().typical_findings("aortic stenosis")
    alone, louder = labels.generate([{"condition": "aortic stenosis"}, {"condition": "aortic stenosis", "grade": 5}],
                                    steps=2, seconds=SECONDS)
    assert alone.findings == typical and "harsh" in alone.prompts.l2
    assert louder.findings == typical.with_(grade=5) and "V/VI" in louder.prompts.l2


def test_bad_generation_settings_name_the_field(labels):
    for kwargs, field in [({"sampler": "euler"}, "sampler"), ({"steps": 0}, "steps"),
                          ({"guidance": -1.0}, "guidance"), ({"seconds": 600.0}, "seconds")]:
        with pytest.raises(ValueError, match=field):
            labels.generate(MR, **kwargs)


def test_bad_checkpoint_dirs_raise_checkpoint_error(labels, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        HLDMPipeline.from_pretrained(tmp_path / "missing")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"w": torch.zeros(1)}, pickled / "model.pt")
    (pickled / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="pickle"):
        HLDMPipeline.from_pretrained(pickled)
    good = labels.save_pretrained(tmp_path / "good")
    cfg = json.loads((good / "config.json").read_text())
    (good / "config.json").write_text(json.dumps({**cfg, "model_type": "evaluator"}))
    with pytest.raises(CheckpointError, match="not an H-LDM model config"):
        HLDMPipeline.from_pretrained(good)
    cfg["config"]["unet"]["channels"] = [16, 48]  # weights no longer fit the config
    (good / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        HLDMPipeline.from_pretrained(good)
    cfg["config"]["unet"]["wings"] = 2
    (good / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="wings"):
        HLDMPipeline.from_pretrained(good)


def test_config_round_trips_through_json_and_flags_mirror_sub_configs():
    for cfg in (HLDMConfig.tiny(), HLDMConfig.default(), HLDMConfig.tiny(no_structured_noise=True, labels_only=True)):
        assert HLDMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert HLDMConfig.default().ablations == ()
    d = HLDMConfig.tiny().to_dict()
    d["unet"]["medical_attention"] = False
    assert HLDMConfig.from_dict(d).ablations == ("no_medical_attention",)
    with pytest.raises(ValueError, match="cond.dim"):
        HLDMConfig.from_dict({**d, "cond": {**d["cond"], "dim": 8}})
    with pytest.raises(ValueError, match="no_medical_atention"):
        HLDMConfig.from_dict({"no_medical_atention": True})


def _removed(flag: str, model: HLDM) -> bool:
    """Whether the component named by `flag` is really gone from the built model."""
    names = list(dict(model.named_parameters()))
    if flag == "no_medical_attention":
        out = model.denoise(torch.randn(1, 16, 16), torch.tensor([500]), model.cond.null(1), torch.tensor([80.0]))
        return not any("strength" in n or "rel_bias" in n for n in names) and all(not m.any() for m in out["attn"])
    if flag == "labels_only":
        return not any(n.startswith("cond.text") or n.startswith("cond.graph") for n in names)
    if flag == "no_structured_noise":
        out = model.denoise(torch.randn(1, 16, 16), torch.tensor([500]), model.cond.null(1), torch.tensor([80.0]))
        return not any(n.startswith("unet.head.weights") for n in names) and torch.all(out["w"] == 0.25)
    if flag == "no_disentangle":  # the auxiliary heads send no gradient into the encoder
        out = model.vae(torch.randn(2, 129, 32))
        sum(v.float().sum() for v in out["aux"].values()).backward()
        return all(p.grad is None or not p.grad.any() for p in model.vae.encoder.parameters())
    raise AssertionError(flag)


@pytest.mark.parametrize("flag", list(ABLATIONS))
def test_each_ablation_flag_removes_its_component_and_survives_save_load(flag, tmp_path):
    torch.manual_seed(0)
    cheap = flag != "labels_only"  # the label conditioner keeps the other flags' tests fast
    flags = {flag: True, **({"labels_only": True} if cheap else {})}
    cfg = HLDMConfig.tiny(**flags)
    assert set(cfg.ablations) == set(flags)
    ablated, reference = HLDM(cfg).train(), HLDM(HLDMConfig.tiny(labels_only=cheap)).train()
    assert _removed(flag, ablated) and not _removed(flag, reference)
    pipe = HLDMPipeline(ablated, device="cpu")
    pipe.save_pretrained(tmp_path / flag)
    assert flag in load_model(tmp_path / flag).config.ablations
    assert np.isfinite(pipe.generate(MR, seconds=SECONDS, steps=2).audio).all()


def test_intervals_label_s1_s2_and_place_the_murmur_by_timing():
    # sounds at frames [2,4) S1, [8,10) S2, [20,22) S1, [26,28) S2: systole (4 frames) < diastole (10)
    prob = np.zeros(32)
    for a in (2, 8, 20, 26):
        prob[a:a + 2] = 0.9
    iv = intervals_from_s1s2(prob, 0.1, "holosystolic")
    assert [k for _, _, k in iv if k != "murmur"] == ["S1", "S2", "S1", "S2"]
    assert [(round(a, 3), round(b, 3)) for a, b, k in iv if k == "murmur"] == [(0.4, 0.8), (2.2, 2.6)]
    dia = [(round(a, 3), round(b, 3)) for a, b, k in intervals_from_s1s2(prob, 0.1, "holodiastolic") if k == "murmur"]
    assert dia == [(1.0, 2.0)]
    assert intervals_from_s1s2(np.zeros(10), 0.1, "holosystolic") == []


def test_generate_cli_writes_wav_and_json(labels, tmp_path, capsys):
    from hldm.audio.io import load_audio
    from hldm.pipeline_cli import main

    ckpt = labels.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "as.wav"
    rc = main(["--checkpoint", str(ckpt), "--condition", "aortic stenosis", "--findings", '{"grade": 4}',
               "--seed", "2", "--steps", "3", "--sampler", "ddim", "--seconds", "2", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    assert load_audio(out).shape == (8000,)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["findings"]["condition"] == "aortic stenosis" and record["findings"]["grade"] == 4
    assert len(record["weights"]["murmur"]) == 3 and record["prompts"]["l2"]
    assert main(["--checkpoint", str(ckpt), "--findings", '{"grade": 9, "murmur": "present", '
                 '"timing": "holosystolic"}', "--out", str(tmp_path / "bad.wav")]) == 2
    assert main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "bad.wav")]) == 2
    assert not (tmp_path / "bad.wav").exists()
    assert "grade" in capsys.readouterr().err


def test_generate_cli_conforms_as_the_model_says_unless_raw(labels, tmp_path):
    from hldm.pipeline_cli import main

    ckpt = labels.save_pretrained(tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config["config"]["diffusion"]["conform"] = True
    (ckpt / "config.json").write_text(json.dumps(config))
    for flags, conformed in (([], True), (["--raw"], False)):
        out = tmp_path / f"clip{len(flags)}.wav"
        assert main(["--checkpoint", str(ckpt), "--findings", '{"heart_rate": 60}', "--steps", "2", "--seconds", "2",
                     "--device", "cpu", "--out", str(out), *flags]) == 0
        record = json.loads(out.with_suffix(".json").read_text())["conformance"]
        assert bool(record) == conformed  # a random model's clip: conformance says why it left it alone
        assert not conformed or "skipped" in record


def test_export_cli_writes_zip_with_labels(labels, tmp_path):
    from hldm.pipeline_cli import export_main

    ckpt = labels.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "clips.zip"
    rc = export_main(["--checkpoint", str(ckpt), "--n", "3", "--batch-size", "2", "--steps", "2", "--seconds", "1",
                      "--condition", "normal", "--condition", "mitral regurgitation", "--device", "cpu",
                      "--out", str(out)])
    assert rc == 0
    with zipfile.ZipFile(out) as zf:
        wavs = sorted(n for n in zf.namelist() if n.endswith(".wav"))
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        meta = json.loads(zf.read("labels.json"))
    assert len(wavs) == 3 and [r["file"] for r in rows] == wavs
    assert [r["condition"] for r in rows] == ["normal", "mitral regurgitation", "normal"]
    assert [r["seed"] for r in rows] == ["0", "1", "2"] and rows[1]["murmur"] == "present"
    assert [c["file"] for c in meta["clips"]] == wavs
