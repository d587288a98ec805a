"""hldm.conformance: a clip is edited to carry its findings' rate, murmur phase and level (simulator clips
stand in for generated ones: their beats and murmurs are known)."""
import re

import numpy as np
import pytest
from scipy import stats

from hldm.clinical.knowledge_graph import default_graph
from hldm.clinical.vocabulary import SAMPLE_RATE, Findings
from hldm.conformance import conform, conform_pair, describe, plan_retiming, retime, set_murmur, simulator_level_db
from hldm.data.simulator import PITCH_BAND_HZ, simulate
from hldm.editing import SegmentationError, segment
from hldm.eval import listener as L
from hldm.models.hldm import HLDMConfig
from hldm.pipeline import HLDMPipeline

SECONDS = 8.0
NORMAL = Findings(heart_rate=100.0, age_group="adult")


@pytest.fixture(scope="module")
def normal_clip():
    return simulate(NORMAL, seconds=SECONDS, seed=4, noise_level=0.02).audio


def _s1_lengths(rows: np.ndarray) -> np.ndarray:
    s1 = rows[rows[:, 2] == L.S1]
    return s1[:, 1] - s1[:, 0]


@pytest.mark.parametrize("rate", [50.0, 150.0])
def test_a_clip_at_the_wrong_rate_is_retimed_to_the_asked_one_with_its_heart_sounds_kept(normal_clip, rate):
    seg = segment(normal_clip)
    plan = plan_retiming(seg, rate)
    out = retime(normal_clip, plan, seed=0)
    assert out.shape == normal_clip.shape and out.dtype == np.float32
    assert abs(L.heart_rate(out) - rate) < 0.05 * rate
    found = segment(out)  # the re-timed clip's beats are where the plan says
    assert abs(found.heart_rate - rate) < 0.05 * rate
    assert np.median(_s1_lengths(plan.rows)) == pytest.approx(np.median(_s1_lengths(seg.rows)), abs=0.01)
    rr = np.diff(plan.rows[plan.rows[:, 2] == L.S1, 0])
    assert np.all(np.abs(rr / (60.0 / rate) - 1) < 0.06)  # sinus rhythm: within 5 % of the asked period
    np.testing.assert_array_equal(out, retime(normal_clip, plan, seed=0))


def test_a_clip_already_at_its_rate_keeps_its_timing(normal_clip):
    plan = plan_retiming(segment(normal_clip), 100.0)
    assert plan.identity
    np.testing.assert_array_equal(retime(normal_clip, plan, seed=0), normal_clip)


@pytest.mark.parametrize("condition", ["aortic regurgitation", "mitral stenosis", "patent ductus arteriosus",
                                       "mitral valve prolapse"])
def test_a_murmur_the_clip_lacks_is_placed_in_its_phase(normal_clip, condition):
    f = default_graph().typical_findings(condition).with_(heart_rate=100.0)
    seg = segment(normal_clip)
    out, record = set_murmur(normal_clip, seg, f, seed=1)
    band = PITCH_BAND_HZ[f.pitch]
    assert record["murmur"] == "simulator"
    phase = {"early-diastolic": "diastolic", "mid-diastolic": "diastolic", "continuous": "continuous",
             "late-systolic": "systolic"}[f.timing]
    if phase == "continuous":
        assert L.spans_s2(out, band, seg.rows) >= 0.3
    else:
        ratio = L.systole_diastole_ratio(out, band, seg.rows)
        assert ratio >= 0.3 if phase == "systolic" else ratio <= -0.3
    assert record["level_db"][1] > record["level_db"][0]


def test_a_murmur_in_the_wrong_phase_is_moved(normal_clip):
    systolic = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=3, pitch="high",
                        quality="blowing", location="MV", heart_rate=100.0)
    clip = simulate(systolic, seconds=SECONDS, seed=4, noise_level=0.02).audio
    seg = segment(clip)
    diastolic = systolic.with_(timing="early-diastolic", shape="decrescendo", location="AV")
    band = PITCH_BAND_HZ["high"]
    assert L.systole_diastole_ratio(clip, band, seg.rows) > 0.3
    out, record = set_murmur(clip, seg, diastolic, seed=1)
    assert record["found_db"] < -1 and record["murmur"] == "simulator"
    assert L.systole_diastole_ratio(out, band, seg.rows) <= -0.3


@pytest.mark.parametrize("pitch, swing", [("medium", 8.0), ("high", 8.0)])
def test_grade_sets_the_level_re_s1_s2_and_leaves_the_heart_sounds(pitch, swing):
    base = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch=pitch,
                    quality="blowing", location="MV", heart_rate=80.0)
    clip = simulate(base, seconds=SECONDS, seed=2, noise_level=0.02).audio
    seg = segment(clip)
    levels, sources = [], set()
    for grade in range(1, 7):
        out, record = set_murmur(clip, seg, base.with_(grade=grade), seed=0)
        levels.append(L.murmur_level_db(out, pitch, seg.rows, phase="systolic"))
        sources.add(record["murmur"])
        assert abs(L.heart_rate(out) - L.heart_rate(clip)) < 2
    assert sources == {"model"}  # the clip's own murmur, scaled: it was where the findings say
    assert stats.spearmanr(range(1, 7), levels).statistic >= 0.9
    assert levels[-1] - levels[0] >= swing


def test_a_what_if_pair_differs_in_its_murmurs_level_not_its_texture(normal_clip):
    """Grade III -> I: the model's faint grade I murmur is not found, so that side gets the simulator's
    texture; the grade III side then takes the simulator's too, on the same time map."""
    f3 = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=3, pitch="high",
                  quality="blowing", location="MV", heart_rate=100.0, age_group="adult")
    loud = simulate(f3, seconds=SECONDS, seed=4, noise_level=0.02).audio
    f1 = f3.with_(grade=1)
    alone = conform(loud, f3, seed=0)[0], conform(normal_clip, f1, seed=0)[0]
    assert [c.record["murmur"] for c in alone] == ["model", "simulator"]
    a, b = conform_pair((loud, normal_clip), (f3, f1), (0, 0))
    assert a.record["murmur"] == b.record["murmur"] == "simulator"
    np.testing.assert_array_equal(a.segmentation.rows, b.segmentation.rows)
    assert a.record["level_db"][1] - b.record["level_db"][1] > 6.0  # two grades apart
    hr = conform_pair((loud, normal_clip), (f3, f1.with_(heart_rate=60.0)), (0, 0), shared_timing=False)[1]
    assert hr.record["heart_rate"][1] == 60.0 and hr.record["murmur"] == "simulator"


def test_a_what_if_pair_is_left_as_it_is_when_side_a_cannot_be_segmented(normal_clip):
    noise = np.random.default_rng(0).normal(size=len(normal_clip)).astype(np.float32)
    a, b = conform_pair((noise, normal_clip), (NORMAL, NORMAL), (0, 0))
    assert a.segmentation is None and b.segmentation is None
    np.testing.assert_array_equal(b.audio, normal_clip)
    assert describe(b.record).startswith("Left as the model made it: side a could not be edited")


def test_a_clip_with_a_loud_continuous_murmur_is_segmented_when_one_is_asked():
    """A continuous murmur fills the pauses the editor's contrast check reads: a clip the editor refuses
    as too noisy is conformed when a continuous murmur is asked (its murmur brought down to the grade),
    and still refused for findings without one."""
    pda = default_graph().typical_findings("patent ductus arteriosus").with_(heart_rate=100.0, age_group="child")
    clip = simulate(pda.with_(grade=6), seconds=SECONDS, seed=1, noise_level=0.02).audio
    with pytest.raises(SegmentationError, match="too noisy"):
        segment(clip)
    done, plan = conform(clip, pda, seed=0)
    assert plan is not None and done.record["murmur"] == "model"
    assert done.record["level_db"][1] < done.record["level_db"][0] - 3.0  # grade VI -> III
    assert L.spans_s2(done.audio, PITCH_BAND_HZ[pda.pitch], done.segmentation.rows) >= 0.3
    assert abs(L.heart_rate(done.audio) - 100.0) < 5.0
    assert "skipped" in conform(clip, NORMAL, seed=0)[0].record


def test_a_murmur_lifted_over_a_noisy_floor_may_not_hide_the_beat():
    """On a noisy clip a soft murmur is lifted over the floor to stay audible, unless a listener would then
    count another rate: then it keeps its grade's level."""
    from hldm.conformance import set_loud_murmur

    ms = default_graph().typical_findings("mitral stenosis").with_(heart_rate=80.0, age_group="child")
    clip = simulate(Findings(heart_rate=80.0), seconds=SECONDS, seed=0, noise_level=0.2).audio
    seg = segment(clip, min_contrast_db=2.0)  # S1/S2 5 dB over the noise
    lifted, record = set_murmur(clip, seg, ms, seed=0)
    assert record["level_set_by"] == "floor" and abs(L.heart_rate(lifted) - 40.0) < 2.0  # heard at half rate
    out, record = set_loud_murmur(clip, seg, ms, seed=0)
    assert record["level_set_by"] == "grade" and abs(L.heart_rate(out) - 80.0) < 4.0
    assert L.systole_diastole_ratio(out, PITCH_BAND_HZ[ms.pitch], seg.rows) < 0.0  # still in diastole


def test_a_clip_that_cannot_be_segmented_is_left_as_it_is():
    noise = np.random.default_rng(0).normal(size=int(SECONDS * SAMPLE_RATE)).astype(np.float32)
    done, plan = conform(noise, NORMAL, seed=0)
    assert plan is None and done.segmentation is None
    assert "noisy" in done.record["skipped"] or "beat" in done.record["skipped"]
    np.testing.assert_array_equal(done.audio, noise)


def test_the_pipeline_records_conformance_and_turns_it_off():
    pipe = HLDMPipeline.from_config(HLDMConfig.tiny(), seed=0, device="cpu")
    f = {"murmur": "absent", "heart_rate": 60}
    raw = pipe.generate(f, seed=3, seconds=2.0, conform=False)
    assert raw.conformance == {} and "conformance" in raw.to_json()
    done = pipe.generate(f, seed=3, seconds=2.0, conform=True)  # a random model's noise: nothing to segment
    assert "skipped" in done.conformance
    np.testing.assert_array_equal(done.audio, raw.audio)


def test_the_user_is_told_what_conformance_did(normal_clip):
    assert describe({}) == ""
    assert describe({"skipped": "no heart beat found"}).startswith("Left as the model made it: no heart beat")
    f = default_graph().typical_findings("aortic regurgitation").with_(heart_rate=60.0)
    done, _ = conform(normal_clip, f, seed=0)
    text = describe(done.record)
    assert re.search(r"re-timed 10[01] -> 60 bpm", text) and "simulator" in text and "dB re S1/S2" in text


def test_alternating_strong_and_weak_beats_heard_at_half_rate_are_levelled(normal_clip):
    """The sampler sometimes makes every other beat softer; a listener then counts only the loud ones."""
    seg = segment(normal_clip)
    s1 = seg.rows[seg.rows[:, 2] == L.S1, 0]
    gain = np.ones(len(normal_clip), dtype=np.float32)
    for a, b in list(zip(s1[:-1], s1[1:]))[1::2]:
        gain[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] = 10 ** (-8 / 20)
    alternating = normal_clip * gain
    assert abs(L.heart_rate(alternating) - 50.0) < 2.5  # heard at half the rate
    done, _ = conform(alternating, NORMAL, seed=0)
    assert abs(L.heart_rate(done.audio) - 100.0) < 5.0
    assert done.record["beats_db"] >= 1.0 and "levelled" in describe(done.record)
    steady, _ = conform(normal_clip, NORMAL, seed=0)  # heard right: its beats keep their own levels
    assert steady.record["beats_db"] == 0.0
    np.testing.assert_array_equal(steady.audio, normal_clip)


def test_a_grade_is_the_simulators_level_re_s1_s2_six_db_a_step():
    base = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=1, pitch="medium",
                    quality="blowing", location="MV", heart_rate=80.0)
    levels = [simulator_level_db(base.with_(grade=g)) for g in range(1, 7)]
    np.testing.assert_allclose(np.diff(levels), 6.0, atol=0.5)
    clip = simulate(base.with_(grade=4), seconds=SECONDS, seed=0, noise_level=0.0)
    alone = L.murmur_level_db(clip.components["murmur"], "medium", clip.segmentation, phase="systolic",
                              sounds=clip.components["s1s2"])
    assert alone == pytest.approx(levels[3], abs=0.5)


def test_loud_low_pitched_grades_come_closer_to_s1_s2_without_masking_the_beat():
    """A low-pitched murmur shares the heart sounds' band: grades IV-VI may approach S1/S2 there, as long
    as a listener still counts the beat and hears S1/S2 start where a grade I murmur leaves them."""
    from hldm.conformance import set_loud_murmur
    from hldm.eval.counterfactual import onset_shift_ms

    base = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch="low",
                    quality="rumbling", location="MV", heart_rate=80.0)
    clip = simulate(Findings(heart_rate=80.0), seconds=SECONDS, seed=3, noise_level=0.05).audio
    seg = segment(clip)
    outs = [set_loud_murmur(clip, seg, base.with_(grade=g), seed=0) for g in range(1, 7)]
    levels = [L.murmur_level_db(a, "low", seg.rows, phase="systolic") for a, _ in outs]
    assert stats.spearmanr(range(1, 7), levels).statistic >= 0.9 and levels[-1] - levels[0] >= 8.0
    assert [r["margin_db"] for _, r in outs][:3] == [6.0] * 3 and outs[-1][1]["margin_db"] < 6.0
    kept = set_murmur(clip, seg, base.with_(grade=6), seed=0)[0]  # the editor's limit: grade VI no louder than III
    assert levels[-1] - L.murmur_level_db(kept, "low", seg.rows, phase="systolic") >= 3.0
    for a, _ in outs:
        assert abs(L.heart_rate(a) - L.heart_rate(clip)) < 2 and onset_shift_ms(outs[0][0], a) <= 20.0
