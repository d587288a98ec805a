"""The evaluation harness end to end (`python -m hldm eval --quick` on a tiny random model and a tiny
evaluator trained on the simulator here), the counterfactual measurements on simulator clips with
known answers, and the augmentation experiment's statistics."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from hldm.clinical.vocabulary import CONDITIONS, Findings
from hldm.data.simulator import simulate
from hldm.eval import augmentation as A
from hldm.eval import counterfactual as CF
from hldm.eval import evaluator_cli, report
from hldm.eval import listener_report as LR
from hldm.models.hldm import HLDMConfig
from hldm.pipeline import HLDMPipeline

MR = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch="high",
              quality="blowing", location="MV", heart_rate=75.0)
SR = 4000


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def no_real_data(tmp_path_factory):
    """Point the harness at an empty CirCor directory: the simulator must stand in, and say so."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HLDM_CIRCOR", str(tmp_path_factory.mktemp("no-circor")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random H-LDM saved as a checkpoint directory (hldm.models.hldm.save_model), as the
    shipped model will be."""
    path = tmp_path_factory.mktemp("model") / "tiny"
    HLDMPipeline.from_config(HLDMConfig.tiny(), seed=0, device="cpu").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sim_evaluator(no_real_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("evaluator") / "ev"
    assert evaluator_cli.main(["--out", str(path), "--small", "--steps", "30", "--sim", "48", "--seconds", "2",
                               "--threads", "1"]) == 0
    return path


def test_evaluator_checkpoint_is_small_and_states_its_data_and_held_out_accuracy(sim_evaluator):
    info = json.loads((sim_evaluator / "config.json").read_text())
    assert info["model_type"] == "pcg-evaluator" and info["steps"] == 30
    assert "NO REAL DATA" in info["trained_on"] and info["val_accuracy"] == {}
    assert set(info["sim_accuracy"]) >= {"murmur", "grade", "timing", "condition"}
    assert all(0 <= row["accuracy"] <= 1 and 0 < row["majority"] <= 1 for row in info["sim_accuracy"].values())
    card = (sim_evaluator / "README.md").read_text()
    assert "Held-out simulator accuracy" in card and "steps: 30" in card
    assert (sim_evaluator / "model.safetensors").stat().st_size < evaluator_cli.MAX_BYTES
    model = evaluator_cli.load_evaluator(sim_evaluator)
    assert model.cfg.channels == (16, 32)


@pytest.fixture(scope="module")
def quick_report(no_real_data, tiny_model_dir, sim_evaluator, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    code = report.main(["--checkpoint", str(tiny_model_dir), "--out", str(out), "--quick", "--evaluator",
                        str(sim_evaluator), "--seconds", "2", "--n-clips", "16", "--device", "cpu"])
    assert code == 0
    return out / "tiny"


def table_rows(markdown: str, first_header: str) -> dict[str, list[str]]:
    """The Markdown table whose first header cell is `first_header`: {first cell: other cells}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_quick_report_main_table_marks_theirs_the_simulator_floor_and_untrained_rows(quick_report):
    md = (quick_report / "report.md").read_text()
    assert "WARNING: NO REAL DATA" in md and "SIMULATOR" in md
    rows = table_rows(md, "model")
    theirs = next(name for name in rows if "THEIRS" in name)
    assert rows[theirs][0] == "9.7"  # the paper's FAD, printed as theirs
    floor = report.floor_name("sim")
    assert floor in rows and "real vs real" not in floor
    assert all(c not in ("not trained", "-", "n/a") for c in rows[floor][:6])  # FAD IS MSD SC SNR CF
    assert all(c not in ("not trained", "-") for c in rows["H-LDM (ours)"])
    for name in report.EXPECTED_ROWS.values():
        assert rows[name] == ["not trained"] * len(report.COLUMNS)
    assert "VGGish" in md  # why our FAD is not the paper's


def test_quick_report_metrics_json_is_finite_and_figures_are_pngs(quick_report):
    def no_nan(token):
        raise AssertionError(f"metrics.json holds {token}")

    data = json.loads((quick_report / "metrics.json").read_text(), parse_constant=no_nan)
    assert data["real_source"] == "sim" and data["quick"] is True
    ours = data["rows"]["H-LDM (ours)"]
    for column in ("FAD", "IS", "MSD", "SC", "SNR", "CF", "AD", "PDS", "SNPA", "CMMD"):
        assert isinstance(ours[column], float) and math.isfinite(ours[column]), column
    assert ours["FAD"] >= 0 and 0 <= ours["CF"] <= 1 and 0 <= ours["SNPA"] <= 1
    floor = data["rows"][report.floor_name("sim")]
    assert floor["FAD"] < ours["FAD"]  # two halves of one distribution sit closer than a random model
    assert data["sweep"]["ddpm-1000"] is None and data["sweep"]["dpmpp-10"]["FAD"] >= 0
    sim_cf = data["counterfactual"]["simulator"]["grade"]
    assert sim_cf["spearman_mean"] == 1.0  # the simulator's grade sweep is the known answer
    for name in ("conditions.png", "grade_sweep.png", "metric_bars.png"):
        assert (quick_report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_report_has_the_listener_section_with_the_simulator_known_answers(quick_report):
    md = (quick_report / "report.md").read_text()
    assert "## 5. Listener" in md
    phase = table_rows(md, "condition (typical findings)")
    assert set(phase) == set(CONDITIONS)
    assert all(row[-1] == "pass" for c, row in phase.items() if c != "normal"), phase  # the simulator's verdicts
    assert set(table_rows(md, "age group")) == {"child", "adult", "simulator (known answer)"}
    assert set(table_rows(md, "what-if clips")) == {"generated", "simulator"}
    data = json.loads((quick_report / "metrics.json").read_text())["listener"]
    assert data["reference"] == "sim"
    assert 0 <= data["realism"]["auc_generated"] <= 1 and 0 <= data["realism"]["auc_floor"] <= 1
    assert all(0 <= data["realism"][k] <= 1 for k in ("auc_griffin_lim", "auc_vae_round_trip"))
    assert set(data["phase"]) == set(CONDITIONS)
    for age in ("child", "adult"):
        row = data["heart_rate"]["by_age"][age]
        assert len(row["measured"]) == len(data["heart_rate"]["rates"]) and "median_abs_error_50_150_bpm" in row
    assert data["heart_rate"]["simulator"]["median_abs_error_bpm"] < 2
    for pitch in ("low", "medium", "high"):
        assert set(data["grade"]["generated"][pitch]) >= {"swing_db", "spearman", "onset_shift_ms", "hr_change_bpm"}
        sim = data["grade"]["simulator"][pitch]
        assert sim["swing_db"] >= 8 and sim["spearman"] == 1.0 and sim["hr_change_bpm"] < 2


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_report_on_real_data_has_the_real_floor_and_places_a_comparison_row(real_circor, tiny_model_dir,
                                                                                   tmp_path):
    labels = tmp_path / "labels"
    HLDMPipeline.from_config(HLDMConfig.tiny(labels_only=True), seed=1, device="cpu").save_pretrained(labels)
    ev = tmp_path / "ev"
    assert evaluator_cli.main(["--out", str(ev), "--small", "--steps", "30", "--sim", "32", "--max-real", "64",
                               "--seconds", "2", "--threads", "1"]) == 0
    assert report.main(["--checkpoint", str(tiny_model_dir), "--out", str(tmp_path), "--quick", "--evaluator",
                        str(ev), "--seconds", "2", "--n-clips", "16", "--compare", f"onehot={labels}"]) == 0
    md = (tmp_path / "tiny" / "report.md").read_text()
    rows = table_rows(md, "model")
    assert "NO REAL DATA" not in md and report.floor_name("circor") in rows
    placed = report.EXPECTED_ROWS[("labels_only",)] + " [onehot]"
    assert placed in rows and "not trained" not in rows[placed]
    assert rows[report.EXPECTED_ROWS[("no_disentangle",)]][0] == "not trained"


# ----------------------------------------------------------------------------- counterfactual measures


def test_murmur_band_energy_grows_with_grade_on_simulator_clips():
    for base in (MR, MR.with_(timing="early-diastolic", shape="decrescendo", pitch="low", location="AV")):
        levels = CF.grade_levels(base)
        render = CF.simulator_renderer(seed=3, seconds=4.0)
        db = [CF.murmur_band_db(render(base.with_(grade=g)), base.pitch) for g in levels]
        assert all(a < b for a, b in zip(db, db[1:])), (base.timing, db)
    no_murmur = simulate(Findings(heart_rate=75.0), seconds=4.0, seed=3, noise_level=0.02).audio
    assert CF.murmur_band_db(no_murmur, "high") < db[0]


def test_onset_shift_is_zero_for_identical_clips_and_measures_a_known_delay():
    audio = simulate(MR, seconds=4.0, seed=3, noise_level=0.02).audio
    assert CF.onset_shift_ms(audio, audio) == 0.0
    for delay_ms in (24, 60):
        k = delay_ms * SR // 1000
        shifted = np.concatenate([np.zeros(k, np.float32), audio[:-k]])
        # Onsets sit on the 8 ms feature grid: the delay is read to within one frame.
        assert CF.onset_shift_ms(audio, shifted) == pytest.approx(delay_ms, abs=8.0)


def test_simulator_study_moves_only_the_edited_attribute():
    result = CF.run([(MR, CF.simulator_renderer(0, 4.0)), (CF.murmur_base(Findings(heart_rate=90.0)),
                                                           CF.simulator_renderer(1, 4.0))])
    s = result.summary
    assert s["grade"]["spearman_mean"] == 1.0 and s["grade"]["monotonic_share"] == 1.0
    assert list(s["grade"]["band_db_by_grade"]) == [1, 2, 3, 4, 5, 6]
    for kind in CF.EDITS:  # same seed, same rhythm: S1/S2 stay put and the heart rate holds
        assert s[kind]["onset_shift_ms"] < 10 and s[kind]["hr_change_bpm"] < 3
    assert result.reads is None and "AD" not in s


def test_edits_change_one_field_and_stay_valid():
    from hldm.clinical.validation import validate

    for f in (MR, MR.with_(timing="early-diastolic", shape="decrescendo", grade=4, pitch="low", location="AV")):
        t, loc = CF.timing_edit(f), CF.location_edit(f)
        assert t.timing != f.timing and validate(t) == t
        assert loc.location != f.location and {k for k, v in loc.to_dict().items() if v != f.to_dict()[k]} == {
            "location"}
    assert CF.murmur_base(Findings()).murmur == "present"


# ----------------------------------------------------------------------------- augmentation statistics


def test_mean_ci_is_the_t_interval():
    assert A.mean_ci([0.7]) == (0.7, 0.0)
    mean, half = A.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert half == pytest.approx(2.4841, abs=1e-4)  # textbook t(0.975, 2) = 4.303 times s/sqrt(n) = 0.577
    mean, half = A.mean_ci([0.5] * 4)
    assert (mean, half) == (0.5, 0.0)


def test_rare_classes_are_those_under_the_share_and_present_in_the_test_set():
    common = [MR.with_(timing="holosystolic")] * 40
    rare = [MR.with_(timing="mid-systolic", shape="diamond")]
    absent = [Findings()] * 20
    train = common + rare + absent
    test = [MR, rare[0], Findings()]
    assert A.rare_classes(train, test, "timing") == ["mid-systolic"]
    # Nothing rare enough: the two least frequent classes present in the test set.
    assert A.rare_classes(common + absent, [MR, Findings()], "timing", rare_share=0.0) == ["none", "holosystolic"]
    # A value unseen in training still gets synthetic requests built on training murmurs.
    asked = A.templates_for(train, "timing", "late-systolic")
    assert asked and all(f.timing == "late-systolic" for f in asked)


@pytest.mark.parametrize("extra, ddpm", [([], True), (["--quick"], False), (["--quick", "--ddpm"], True)])
def test_the_sweep_keeps_ddpm_1000_unless_quick_without_ddpm(extra, ddpm):
    args = report.build_parser().parse_args(["--checkpoint", "x", *extra])
    assert report.settings_from_args(args).sweep_ddpm is ddpm


@pytest.mark.parametrize("extra, message", [(["--n-clips", "4"], "--n-clips"), (["--seconds", "0.5"], "--seconds")])
def test_bad_run_sizes_are_refused_before_any_model_loads(extra, message, capsys):
    assert report.main(["--checkpoint", "/nonexistent", *extra]) == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- sampler sweep


def test_sampler_sweep_measures_each_row_and_resumes_without_measuring_again(no_real_data, tiny_model_dir,
                                                                             sim_evaluator, tmp_path, capsys):
    from hldm.eval import sampler_sweep

    out = tmp_path / "sweep"
    common = ["--checkpoint", str(tiny_model_dir), "--evaluator", str(sim_evaluator), "--n-clips", "8",
              "--seeds", "1", "--out", str(out)]
    assert sampler_sweep.main(common + ["--rows", "ddim-2-4"]) == 0
    first = json.loads((out / "sweep.json").read_text())["rows"]
    assert sampler_sweep.main(common + ["--rows", "ddim-2-4", "unipc-2-4", "--resume"]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["row"] for r in rows] == ["ddim-2-4", "unipc-2-4"] and rows[0] == first[0]
    for r in rows:
        assert math.isfinite(r["FAD"]) and 0 <= r["CF"] <= 1 and 0 <= r["realism_auc"] <= 1
        assert set(r["grade"]) == {"low", "medium", "high"} and r["seconds_per_clip"] > 0
    table = (out / "README.md").read_text()
    assert "| ddim | 2 | 4 |" in table and "| unipc | 2 | 4 |" in table
    assert sampler_sweep.main(common + ["--rows", "euler-2-4"]) == 2
    assert "SAMPLER-STEPS-GL" in capsys.readouterr().err


def test_with_conformance_the_listener_section_shows_the_model_alone_beside(quick_report, tiny_model_dir):
    data = json.loads((quick_report / "metrics.json").read_text())["listener"]
    data["model_alone"] = {"phase": data["phase"], "heart_rate": data["heart_rate"],
                           "grade": {"generated": data["grade"]["generated"]}}
    md = "\n".join(report.listener_markdown(data, 2.0))
    assert "model alone: sys/dia" in md
    assert {"child, model alone", "adult, model alone"} <= set(table_rows(md, "age group"))
    assert set(table_rows(md, "what-if clips")) == {"generated", "simulator", "generated, model alone"}
    pipe = HLDMPipeline.from_pretrained(tiny_model_dir, device="cpu")
    pipe.config.diffusion.conform = True
    with LR.model_alone(pipe):
        assert not pipe.config.diffusion.conform
    assert pipe.config.diffusion.conform
