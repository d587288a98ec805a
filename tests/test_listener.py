"""The listener (hldm.eval.listener) on simulator clips, whose answers are known: heart rate,
S1/S2, the phase and level of every condition's murmur, and the realism two-sample test."""
import numpy as np
import pytest
from scipy import stats

from hldm.clinical.knowledge_graph import default_graph
from hldm.clinical.vocabulary import CONDITIONS, Findings, timing_phase
from hldm.data.simulator import PITCH_BAND_HZ, sample_findings, simulate
from hldm.eval import listener as L
from hldm.eval.harness import simulated_clips

MR = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch="high",
              quality="blowing", location="MV", heart_rate=75.0)


def test_heart_rate_reads_the_simulator_within_2_bpm_from_40_to_180():
    rng = np.random.default_rng(0)
    for hr in (40, 50, 60, 80, 100, 120, 140, 160, 180):
        for seed in range(2):
            sim = simulate(sample_findings(rng).with_(heart_rate=float(hr)), seconds=8.0, seed=seed)
            assert L.heart_rate(sim.audio) == pytest.approx(sim.heart_rate, abs=2.0), (hr, sim.findings)


def test_onsets_match_the_simulator_ground_truth():
    sim = simulate(MR, seconds=4.0, seed=5, noise_level=0.02)
    seg = sim.segmentation
    truth = seg[np.isin(seg[:, 2], (1, 3)), 0]  # S1 and S2 onsets (s)
    found = L.heart_sound_onsets(sim.audio)
    assert all(np.min(np.abs(found - t)) < 0.04 for t in truth)


def evenly_spaced_beat(seconds: float = 8.0, gap: float = 1 / 3) -> tuple[np.ndarray, np.ndarray]:
    """S1 (45 Hz) and S2 (90 Hz, half as loud, as at the apex) every `gap` s: systole as long as diastole. Returns
    (audio (N,), S1 onsets (s))."""
    sr = 4000
    audio = np.random.default_rng(0).normal(0.0, 0.005, int(seconds * sr))
    t = np.arange(int(0.08 * sr)) / sr
    onsets = np.arange(0.05, seconds - 0.1, gap)
    for k, on in enumerate(onsets):
        freq, amp = (45.0, 1.0) if k % 2 == 0 else (90.0, 0.5)
        burst = amp * np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.015) * (1 - np.exp(-t / 0.003))
        i = int(on * sr)
        audio[i:i + len(burst)] += burst
    return audio, onsets[::2]


def test_evenly_spaced_heart_sounds_are_two_a_period_not_one():
    audio, s1 = evenly_spaced_beat()
    assert L.heart_rate(audio) == pytest.approx(90.0, abs=1.0)  # not 180: S1 and S2 differ
    seg = L.phases(audio)
    found = seg[seg[:, 2] == L.S1, 0]
    assert len(found) >= len(s1) - 1 and all(np.min(np.abs(s1 - t)) < 0.02 for t in found)  # the lower pitch


@pytest.mark.parametrize("findings", [Findings(heart_rate=50.0), MR, Findings(heart_rate=150.0, location="AV"),
                                      MR.with_(timing="early-diastolic", shape="decrescendo", grade=3,
                                               location="AV", heart_rate=100.0)])
def test_phases_put_s1_and_s2_where_the_simulator_did(findings):
    sim = simulate(findings, seconds=8.0, seed=1)
    seg = L.phases(sim.audio)
    truth = sim.segmentation
    for state, other in ((L.S1, L.S2), (L.S2, L.S1)):
        true_on = truth[truth[:, 2] == state, 0]
        true_on = true_on[(true_on > 0.05) & (true_on < 7.8)]
        same, swapped = seg[seg[:, 2] == state, 0], seg[seg[:, 2] == other, 0]
        hit = [np.min(np.abs(same - t)) < 0.04 for t in true_on]
        wrong = [np.min(np.abs(swapped - t)) < 0.04 for t in true_on]
        assert np.mean(hit) >= 0.9 and not any(wrong), (state, np.mean(hit), np.mean(wrong))
    assert np.all(np.diff(seg[:, 0]) > 0) and np.all(seg[:, 1] > seg[:, 0])
    assert set(np.unique(seg[:, 2])) == {1, 2, 3, 4}


def test_every_conditions_murmur_reads_in_its_phase():
    kg = default_graph()
    for condition in CONDITIONS[1:]:
        f = kg.typical_findings(condition)
        band = PITCH_BAND_HZ[f.pitch]
        clips = [simulate(f, seconds=8.0, seed=seed).audio for seed in range(2)]
        ratio = np.mean([L.systole_diastole_ratio(a, band) for a in clips])
        spans = np.mean([L.spans_s2(a, band) for a in clips])
        phase = timing_phase(f.timing)
        if phase == "systolic":
            assert ratio >= 0.3 and spans < 0.3, (condition, ratio, spans)
        elif phase == "diastolic":
            assert ratio <= -0.3 and spans < 0.3, (condition, ratio, spans)
        else:
            assert spans >= 0.3, (condition, ratio, spans)


@pytest.mark.parametrize("pitch", ["low", "medium", "high"])
def test_murmur_level_rises_with_the_grade_relative_to_the_heart_sounds(pitch):
    base = MR.with_(pitch=pitch)
    seg = L.phases(simulate(base, seconds=8.0, seed=2).audio)  # the what-if holds the rhythm: one segmentation
    clips = [simulate(base.with_(grade=g), seconds=8.0, seed=2).audio for g in range(1, 7)]
    level = [L.murmur_level_db(a, pitch, seg, phase="systolic") for a in clips]
    assert level[-1] - level[0] >= 8.0 and stats.spearmanr(range(6), level).statistic == 1.0, level
    # Loudness-free: the grade is a level against S1/S2, so the clip's gain does not move it.
    assert L.murmur_level_db(4.0 * clips[2], pitch, phase="systolic") == pytest.approx(
        L.murmur_level_db(clips[2], pitch, phase="systolic"), abs=1e-6)


def test_realism_auc_is_chance_for_one_distribution_and_one_for_another():
    a = simulated_clips(24, 4.0, seed=11, normal_share=0.5)
    b = simulated_clips(24, 4.0, seed=12, normal_share=0.5)
    same = L.realism_auc(a.audio, b.audio, a.groups, b.groups)
    assert abs(same - 0.5) < 0.2, same
    assert L.realism_auc(a.audio, b.audio, a.groups, b.groups) == same  # deterministic
    rng = np.random.default_rng(0)
    hissy = [c + 0.3 * np.std(c) * rng.standard_normal(len(c)) for c in b.audio]
    assert L.realism_auc(a.audio, hissy, a.groups, b.groups) > 0.9
    floor = L.realism_floor(a.audio, a.groups)
    assert abs(floor - 0.5) < 0.25, floor


def test_folds_hold_whole_patients():
    groups = [f"p{i // 3}" for i in range(30)]
    fold = L._folds(groups, 5, np.random.default_rng(0))
    for g in set(groups):
        assert len({fold[i] for i, h in enumerate(groups) if h == g}) == 1
    assert set(fold) == set(range(5))


def test_roc_auc_known_values():
    assert L.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert L.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert L.roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == 0.5


@pytest.mark.parametrize("audio, message", [(np.zeros(0), "samples"), (np.full(8000, np.nan), "NaN"),
                                            (np.zeros((2, 8000)), "shape")])
def test_bad_audio_is_refused_with_a_clear_error(audio, message):
    for measure in (L.heart_rate, L.phases, lambda a: L.systole_diastole_ratio(a, (100.0, 300.0)),
                    lambda a: L.murmur_level_db(a, "high"), L.clip_features):
        with pytest.raises(ValueError, match=message):
            measure(audio)
    with pytest.raises(ValueError, match="2 clips"):
        L.realism_auc([np.zeros(8000)], [np.zeros(8000)] * 3)


def test_silence_has_no_beat():
    assert np.isnan(L.heart_rate(np.zeros(8000)))
    assert L.phases(np.zeros(8000)).shape == (0, 3)
    assert np.isnan(L.systole_diastole_ratio(np.zeros(8000), (100.0, 300.0)))
