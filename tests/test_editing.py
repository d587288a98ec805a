"""hldm.editing: edits of a user's recording change the murmur phase and keep the rest (simulator clips)."""
import numpy as np
import pytest

from hldm.clinical.vocabulary import SAMPLE_RATE, Findings
from hldm.data.simulator import simulate
from hldm.editing import (DB_PER_GRADE, SegmentationError, edit_kind_change, edit_recording, segment)
from hldm.eval import listener as L
from hldm.eval.counterfactual import onset_shift_ms
from hldm.models.hldm import HLDMConfig
from hldm.pipeline import HLDMPipeline

SECONDS = 6.0
MURMUR = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch="medium",
                  quality="blowing", location="MV", heart_rate=80.0)


@pytest.fixture(scope="module")
def pipe():
    return HLDMPipeline.from_config(HLDMConfig.tiny(labels_only=True), seed=0, device="cpu")


@pytest.fixture(scope="module")
def murmur_clip():
    sim = simulate(MURMUR, seconds=SECONDS, seed=3, noise_level=0.02)
    return sim, segment(sim.audio)


def test_segmentation_finds_the_simulators_beats(murmur_clip):
    sim, seg = murmur_clip
    assert abs(seg.heart_rate - sim.heart_rate) < 3
    assert seg.cycles() >= 4
    truth = sim.segmentation[sim.segmentation[:, 2] == 1, 0]
    found = [a for a, _, kind in seg.intervals() if kind == "S1"]
    assert np.median([np.min(np.abs(truth - t)) for t in found]) < 0.03
    murmurs = [iv for iv in seg.intervals("holosystolic") if iv[2] == "murmur"]
    assert len(murmurs) == seg.cycles() or len(murmurs) == seg.cycles() + 1


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(4 * SAMPLE_RATE, np.float32), "no heart beat"),
    (np.random.default_rng(0).normal(size=4 * SAMPLE_RATE).astype(np.float32), "noisy|beat|cycle"),
    (np.zeros(SAMPLE_RATE, np.float32), "too short"),
])
def test_unsegmentable_uploads_are_refused_with_a_reason(audio, reason):
    with pytest.raises(SegmentationError, match=reason):
        segment(audio)


def test_grade_edits_move_the_murmur_6_db_a_grade_and_leave_the_rest(pipe):
    high = MURMUR.with_(pitch="high")  # above the heart sounds' band: no ceiling (next test)
    sim = simulate(high, seconds=SECONDS, seed=3, noise_level=0.02)
    seg = segment(sim.audio)
    levels = {}
    for g in (1, 3, 4):
        e = edit_recording(pipe, sim.audio, high, "grade", grade=g, segmentation=seg)
        levels[g] = e.level_db[1]
        outside = np.repeat(e.weights == 0, 32)
        outside[:256] = outside[-256:] = False  # a frame's window reaches 128 samples either side
        core = np.convolve(outside, np.ones(257), "same") >= 257  # samples whose every frame is unedited
        assert np.abs(e.edited[core] - sim.audio[core]).max() < 1e-4
        assert e.source == "recording" and e.model_edit is None
    assert levels[1] < e.level_db[0] < levels[3] < levels[4]
    assert levels[4] - levels[3] == pytest.approx(DB_PER_GRADE, abs=1.5)
    assert levels[3] - levels[1] == pytest.approx(2 * DB_PER_GRADE, abs=2)
    assert abs(L.heart_rate(e.edited) - L.heart_rate(sim.audio)) < 2


def test_a_low_pitched_murmur_grows_only_up_to_where_it_would_hide_s2(pipe):
    low = MURMUR.with_(pitch="low")
    sim = simulate(low, seconds=SECONDS, seed=3, noise_level=0.02)
    seg = segment(sim.audio)
    edits = [edit_recording(pipe, sim.audio, low, "grade", grade=g, segmentation=seg) for g in (1, 3, 6)]
    levels = [e.level_db[1] for e in edits]
    assert levels[0] < levels[1] < levels[2] < levels[1] + 3  # louder, but capped under S1/S2 in 25-150 Hz
    loud = edits[-1].edited
    assert onset_shift_ms(sim.audio, loud) < 10 and abs(L.heart_rate(loud) - L.heart_rate(sim.audio)) < 2
    segment(loud)  # still a recording whose heart sounds stand out


def test_removal_brings_the_murmur_phase_to_the_murmur_free_level(pipe, murmur_clip):
    sim, seg = murmur_clip
    e = edit_recording(pipe, sim.audio, MURMUR, "remove", segmentation=seg)
    free = L.murmur_level_db(sim.audio, "medium", seg.rows, phase="diastolic")
    assert e.level_db[0] - free > 6  # there was a murmur to remove
    assert abs(e.level_db[1] - free) < 2
    assert e.after.murmur == "absent" and e.after.grade is None


def test_timing_change_keeps_the_phase_and_is_refused_across_phases(pipe, murmur_clip):
    sim, seg = murmur_clip
    e = edit_recording(pipe, sim.audio, MURMUR, "timing", timing="late-systolic", segmentation=seg)
    assert e.after.timing == "late-systolic"
    early = e.edited[L._mask(seg.rows, len(e.edited), (L.SYSTOLE,), (0.1, 0.4))]
    late = e.edited[L._mask(seg.rows, len(e.edited), (L.SYSTOLE,), (0.7, 0.9))]
    assert np.mean(late ** 2) > 3 * np.mean(early ** 2)
    with pytest.raises(ValueError, match="another lesion"):
        edit_kind_change(MURMUR, "timing", timing="early-diastolic")


def test_edits_that_do_not_apply_say_so():
    with pytest.raises(ValueError, match="needs a recording with a murmur"):
        edit_kind_change(Findings(), "grade", grade=3)
    with pytest.raises(ValueError, match="already describe a murmur"):
        edit_kind_change(MURMUR, "add")
    with pytest.raises(ValueError, match="other than the recorded"):
        edit_kind_change(MURMUR, "grade", grade=2)
    with pytest.raises(ValueError, match="unknown kind"):
        edit_kind_change(MURMUR, "louder")


def test_a_murmur_added_to_a_normal_recording_lands_at_its_grade(pipe):
    normal = simulate(Findings(heart_rate=75.0), seconds=SECONDS, seed=5, noise_level=0.02).audio
    seg = segment(normal)
    levels = [edit_recording(pipe, normal, Findings(), "add", grade=g, segmentation=seg, steps=4) for g in (2, 4)]
    assert levels[0].after.murmur == "present" and levels[0].source in ("model", "simulator")
    assert levels[0].level_db[1] > levels[0].level_db[0] + 3
    assert levels[1].level_db[1] - levels[0].level_db[1] == pytest.approx(2 * DB_PER_GRADE, abs=3)
    assert levels[0].model_edit is not None  # the latent what-if it asked the model for


def test_report_section_on_simulator_stand_ins(pipe, monkeypatch):
    from hldm.eval import edit_report as ER

    monkeypatch.setattr("hldm.eval.harness.circor_available", lambda root=None: False)
    sec = ER.run(pipe, per_pitch=1, normals=1, seconds=SECONDS, baseline=False)
    assert sec["source"] == "sim" and sec["n_murmur"] == 3
    m = sec["methods"]["recording edit (hldm.editing)"]
    assert set(m["pitch"]) == {"low", "medium", "high"} and sec["refused"] == {}
    for r in m["pitch"].values():
        assert r["min_spearman"] >= 0.9 and abs(r["removal_gap_db"]) <= 2.0
    assert m["by_kind"]["remove"]["outside_db"] < 0.5 < m["same_patient_db"]
    text = "\n".join(ER.markdown(sec))
    assert "## 6. Your recording" in text and "SIMULATOR" in text and "nan" not in text


def test_a_loud_low_pitched_murmur_does_not_hide_s2_from_the_segmenter():
    loud = simulate(MURMUR.with_(pitch="low", grade=5), seconds=SECONDS, seed=0, noise_level=0.02)
    seg = segment(loud.audio)  # the envelope rule took the murmur's onset for S2 here and refused it
    for state in (L.S1, L.S2):
        truth = loud.segmentation[loud.segmentation[:, 2] == state, 0]
        found = seg.rows[seg.rows[:, 2] == state, 0]
        assert np.median([np.min(np.abs(truth - t)) for t in found]) < 0.02


def test_a_recording_whose_murmur_is_not_where_the_findings_say_is_refused(pipe, murmur_clip):
    sim, seg = murmur_clip
    with pytest.raises(ValueError, match="no high-pitched murmur found"):
        edit_recording(pipe, sim.audio, MURMUR.with_(pitch="high", timing="early-diastolic", shape="decrescendo"),
                       "grade", grade=3, segmentation=seg)
