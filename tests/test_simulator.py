"""Physiological simulator: properties measured on its output (issue 4 item 6)."""
import json
import time

import numpy as np
import pytest

from hldm.audio.io import load_audio
from hldm.clinical.validation import validate
from hldm.clinical.vocabulary import CONDITIONS, DIASTOLIC_TIMINGS, SYSTOLIC_TIMINGS, TIMINGS, Findings
from hldm.data.simulator import main, sample_findings, simulate

SR = 4000


def _murmur(timing="holosystolic", shape="plateau", grade=3, pitch="medium", quality="blowing", **kw):
    return Findings(murmur="present", timing=timing, shape=shape, grade=grade, pitch=pitch,
                    quality=quality, **kw)


def _onsets(seg, state):
    """Start times of the rows of a state that begin inside the clip (not cut by its start)."""
    return seg[(seg[:, 2] == state) & (seg[:, 0] > 0), 0]


def _phase_mask(seg, n, states):
    mask = np.zeros(n, bool)
    for start, end, state in seg:
        if state in states:
            mask[int(start * SR): int(end * SR)] = True
    return mask


def _frame_rms(x, frame=0.02, hop=0.005):
    f, h = int(frame * SR), int(hop * SR)
    idx = np.arange(0, len(x) - f, h)
    return np.sqrt(np.array([np.mean(x[i:i + f] ** 2) for i in idx])), idx + f // 2


def _templates(u):
    return {"crescendo": u, "decrescendo": 1 - u, "diamond": 1 - np.abs(2 * u - 1), "plateau": np.ones_like(u)}


def _measured_envelope(sim, pad=0.25, points=60):
    """Murmur envelope per beat on a time axis normalised to its active span (plus `pad` on each side),
    averaged over the beats fully inside the clip."""
    rms, centres = _frame_rms(sim.components["murmur"].astype(np.float64))
    s1 = _onsets(sim.segmentation, 1)
    curves = []
    for a, b in zip(s1[:-1], s1[1:]):
        sel = (centres >= a * SR) & (centres < b * SR)
        r, c = rms[sel], centres[sel]
        on = np.flatnonzero(r > 0.05 * r.max())
        lo, hi = c[on[0]], c[on[-1]]
        grid = np.linspace(lo - pad * (hi - lo), hi + pad * (hi - lo), points)
        curves.append(np.interp(grid, centres, rms, left=0, right=0))
    return np.mean(curves, axis=0)


def _padded_template(shape, pad=0.25, points=60):
    x = np.linspace(-pad, 1 + pad, points)
    inside = (x >= 0) & (x <= 1)
    return np.where(inside, _templates(np.clip(x, 0, 1))[shape], 0.0)


def _centroid(x):
    p = np.abs(np.fft.rfft(x)) ** 2
    return float(np.sum(np.fft.rfftfreq(len(x), 1 / SR) * p) / np.sum(p))


@pytest.mark.parametrize("timing", TIMINGS)
def test_murmur_energy_sits_in_the_requested_phase(timing):
    shape = {"continuous": "diamond", "early-diastolic": "decrescendo",
             "holodiastolic": "decrescendo", "mid-diastolic": "decrescendo"}.get(timing, "plateau")
    grade = 3
    sim = simulate(_murmur(timing, shape, grade), seconds=6.0, seed=1)
    m = sim.components["murmur"].astype(np.float64) ** 2
    systole = _phase_mask(sim.segmentation, len(m), (1, 2))  # S1 onset .. S2 onset
    diastole = _phase_mask(sim.segmentation, len(m), (3, 4))  # S2 onset .. next S1 onset
    in_sys = m[systole].sum() / m.sum()
    in_dia = m[diastole].sum() / m.sum()
    if timing in SYSTOLIC_TIMINGS:
        assert in_sys > 0.9
    elif timing in DIASTOLIC_TIMINGS:
        assert in_dia > 0.9
    else:  # continuous: through S2, both phases
        assert in_sys > 0.2 and in_dia > 0.4


@pytest.mark.parametrize("timing,shape,quality", [
    ("late-systolic", "crescendo", "blowing"), ("early-diastolic", "decrescendo", "blowing"),
    ("mid-systolic", "diamond", "harsh"), ("holosystolic", "plateau", "blowing"),
    ("mid-diastolic", "crescendo", "rumbling"), ("early-systolic", "decrescendo", "musical"),
])
def test_envelope_follows_the_requested_shape(timing, shape, quality):
    pitch = "low" if quality == "rumbling" else "high"
    sim = simulate(_murmur(timing, shape, 4, pitch, quality, heart_rate=70), seconds=8.0, seed=2,
                   noise_level=0.0)
    env = _measured_envelope(sim)
    r = {name: np.corrcoef(env, _padded_template(name))[0, 1] for name in _templates(np.zeros(1))}
    assert r[shape] > 0.7, r
    assert max(r, key=r.get) == shape, r


@pytest.mark.parametrize("quality", ["blowing", "harsh", "rumbling", "musical"])
def test_spectral_centroid_rises_with_pitch(quality):
    cents = [_centroid(simulate(_murmur(pitch=p, quality=quality), seed=3).components["murmur"])
             for p in ("low", "medium", "high")]
    assert cents[0] < cents[1] < cents[2], cents
    audio = [_centroid(simulate(_murmur(pitch=p, quality=quality, grade=5), seed=3, noise_level=0.001).audio)
             for p in ("low", "high")]
    assert audio[0] < audio[1]


@pytest.mark.parametrize("timing,top", [("holosystolic", 6), ("early-diastolic", 4), ("continuous", 6)])
def test_loudness_rises_with_grade_and_heart_sounds_stay_identical(timing, top):
    shape = "diamond" if timing == "continuous" else "decrescendo" if timing == "early-diastolic" else "plateau"
    sims = [simulate(_murmur(timing, shape, g), seed=4) for g in range(1, top + 1)]
    murmur_db = [20 * np.log10(np.sqrt(np.mean(s.components["murmur"] ** 2))) for s in sims]
    assert all(b - a > 3.0 for a, b in zip(murmur_db, murmur_db[1:])), murmur_db
    # Relative to the heart sounds, in the mixture: murmur-phase energy of the audio rises too.
    phase_states = (1, 2) if timing == "holosystolic" else (3, 4) if timing == "early-diastolic" else (1, 2, 3, 4)
    rel = []
    for s in sims:
        mask = _phase_mask(s.segmentation, len(s.audio), phase_states)
        rel.append(np.mean(s.audio[mask] ** 2) / np.max(np.abs(s.components["s1s2"])) ** 2)
    assert all(b > a for a, b in zip(rel, rel[1:])), rel
    assert all(s.factors["murmur_rms_db"] is not None for s in sims)
    assert np.all(np.diff([s.factors["murmur_rms_db"] for s in sims]) > 3.0)
    for s in sims[1:]:
        assert np.array_equal(s.components["s1s2"], sims[0].components["s1s2"])
        assert np.array_equal(s.components["noise"], sims[0].components["noise"])
        assert np.array_equal(s.segmentation, sims[0].segmentation)


@pytest.mark.parametrize("hr", [40.0, 55.0, 80.0, 120.0, 160.0, 200.0])
def test_heart_rate_is_realised_within_2_bpm(hr):
    for seed in range(3):
        sim = simulate(Findings(heart_rate=hr), seconds=4.0, seed=seed)
        onsets = _onsets(sim.segmentation, 1)
        measured = 60.0 / np.mean(np.diff(onsets))
        assert abs(measured - hr) < 2.0 and abs(sim.heart_rate - hr) < 2.0, (measured, sim.heart_rate)
        rr = np.diff(onsets)
        if len(rr) > 2:
            assert np.std(rr) > 0  # RR variability is there, not a metronome


def test_components_sum_to_audio_and_segmentation_tiles_the_clip():
    sim = simulate(_murmur(extra_sounds=("S3",)), seconds=5.0, seed=5)
    assert sim.audio.dtype == np.float32 and sim.audio.shape == (20000,)
    assert set(sim.components) == {"s1s2", "murmur", "noise"}
    assert np.array_equal(sim.audio, sim.components["s1s2"] + sim.components["murmur"] + sim.components["noise"])
    seg = sim.segmentation
    assert seg.shape[1] == 3 and seg[0, 0] == 0.0 and seg[-1, 1] == pytest.approx(5.0)
    assert np.allclose(seg[1:, 0], seg[:-1, 1]) and np.all(seg[:, 1] > seg[:, 0])
    states = seg[:, 2].astype(int)
    assert np.all((states[1:] - states[:-1]) % 4 == 1)  # 1 S1 -> 2 systole -> 3 S2 -> 4 diastole -> 1
    json.dumps(sim.labels())  # every factor is serialisable


def test_deterministic_under_seed():
    f = _murmur(quality="harsh", extra_sounds=("ejection click",))
    a, b, c = simulate(f, seed=7), simulate(f, seed=7), simulate(f, seed=8)
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.segmentation, b.segmentation)
    assert a.factors == b.factors
    assert not np.array_equal(a.audio, c.audio)


def test_location_away_from_the_typical_site_is_quieter():
    f = _murmur(condition="mitral regurgitation", timing="holosystolic", location="MV")
    at_site = simulate(f, seed=9).components["murmur"]
    away = simulate(f.with_(location="AV"), seed=9).components["murmur"]
    drop_db = 20 * np.log10(np.std(away) / np.std(at_site))
    assert drop_db < -9.0


def test_split_is_fixed_for_asd_and_breathes_otherwise():
    base = Findings(heart_rate=70, age_group="adult")
    phys = simulate(base, seed=6, seconds=8.0).factors
    fixed = simulate(base.with_(extra_sounds=("fixed split S2",)), seed=6, seconds=8.0).factors
    assert np.ptp(phys["split_ms_per_beat"]) > 15.0  # widens with inspiration, closes in expiration
    assert np.ptp(fixed["split_ms_per_beat"]) == 0.0 and 40.0 <= fixed["split_ms"] <= 60.0


@pytest.mark.parametrize("sound,states", [("ejection click", (1, 2)), ("midsystolic click", (2,)),
                                          ("opening snap", (3, 4)), ("S3", (4,)), ("S4", (4,))])
def test_extra_sounds_add_energy_in_their_phase(sound, states):
    plain = simulate(Findings(), seed=10).components["s1s2"].astype(np.float64)
    sim = simulate(Findings(extra_sounds=(sound,)), seed=10)
    added = sim.components["s1s2"].astype(np.float64) - plain
    mask = _phase_mask(sim.segmentation, len(added), states)
    assert np.sum(added[mask] ** 2) > 0.5 * np.sum(added ** 2)


def test_noise_level_controls_the_noise_component():
    levels = [0.0, 0.005, 0.02, 0.1]
    sims = [simulate(Findings(), seed=11, noise_level=x) for x in levels]
    rel = [np.std(s.components["noise"]) / np.max(np.abs(s.components["s1s2"])) for s in sims]
    assert rel[0] == 0.0 and rel[1] < rel[2] < rel[3]
    assert rel[2] == pytest.approx(0.02, rel=0.5)  # noise_level is noise RMS relative to the S1 peak


def test_sample_findings_is_coherent_and_covers_the_vocabulary():
    rng = np.random.default_rng(0)
    draws = [sample_findings(rng) for _ in range(600)]
    assert {d.condition for d in draws} == set(CONDITIONS)
    assert {d.timing for d in draws if d.murmur == "present"} == set(TIMINGS)
    assert {d.grade for d in draws if d.murmur == "present"} == set(range(1, 7))
    for d in draws:
        assert validate(d) == d
        if d.timing in DIASTOLIC_TIMINGS:
            assert d.grade <= 4
    assert all(sample_findings(np.random.default_rng(1), c).condition == c for c in CONDITIONS)
    again = [sample_findings(np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == draws[0]


def test_bad_input_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="timing"):
        simulate({"murmur": "present", "timing": "sometimes", "grade": 2})
    with pytest.raises(ValueError, match="seconds"):
        simulate(Findings(), seconds=0)
    with pytest.raises(ValueError, match="noise_level"):
        simulate(Findings(), noise_level=2.0)
    with pytest.raises(ValueError, match="condition"):
        sample_findings(np.random.default_rng(0), condition="flu")


def test_fast_enough_for_on_the_fly_data():
    f = _murmur(quality="musical", extra_sounds=("S3",))
    simulate(f, seed=0)
    times = []
    for seed in range(5):
        t = time.perf_counter()
        simulate(f, seconds=4.0, seed=seed)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 0.05


def test_cli_writes_wav_and_labels(tmp_path, capsys):
    out = tmp_path / "x.wav"
    rc = main(["--findings", json.dumps({"murmur": "present", "timing": "holosystolic", "grade": "IV",
                                         "pitch": "high", "quality": "blowing"}),
               "--seconds", "3", "--seed", "0", "--out", str(out)])
    assert rc == 0
    assert len(load_audio(out)) == 12000
    labels = json.loads(out.with_suffix(".json").read_text())
    assert labels["findings"]["grade"] == 4 and labels["findings"]["shape"] == "plateau"
    assert np.array(labels["segmentation"]).shape[1] == 3
    assert {"noise_level", "split_ms", "rr_std", "murmur_rms_db"} <= set(labels["factors"])
    assert main(["--condition", "mitral stenosis", "--out", str(tmp_path / "ms.wav")]) == 0
    assert json.loads((tmp_path / "ms.json").read_text())["findings"]["condition"] == "mitral stenosis"
    assert main(["--findings", '{"murmur": "maybe"}', "--out", str(tmp_path / "bad.wav")]) == 2
    assert "murmur" in capsys.readouterr().err and not (tmp_path / "bad.wav").exists()
