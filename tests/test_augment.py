"""Augmented real windows (hldm.data.augment): re-timing, murmur placement, grade levels, labels."""
from __future__ import annotations

import numpy as np
import pytest
from fixtures_circor import make_circor
from scipy.signal import butter, sosfiltfilt

from hldm.clinical.vocabulary import SAMPLE_RATE, Findings
from hldm.data.augment import (AugmentedWindows, place_findings, qs2_ms, retime_anchors, source_cycles, vocode,
                               window_rate)
from hldm.data.circor import load_circor
from hldm.data.windows import CirCorWindows


def _cycles(n: int = 6, rr: float = 0.6, s1: float = 0.1, systole: float = 0.25, s2: float = 0.08) -> np.ndarray:
    starts = np.arange(n) * rr
    return np.stack([starts, starts + s1, starts + systole, starts + systole + s2, starts + rr], axis=1)


@pytest.mark.parametrize("rate", [40.0, 60.0, 120.0, 150.0, 180.0])
def test_retime_reaches_the_asked_rate_keeps_heart_sounds_and_moves_diastole_most(rate):
    src = _cycles()  # 100 bpm
    out = retime_anchors(src, rate)
    assert out[0, 0] == 0.0 and np.all(np.diff(out.reshape(-1)) >= 0)
    assert window_rate(out, 100.0) == pytest.approx(rate, abs=0.5)
    np.testing.assert_allclose(out[:, 1] - out[:, 0], src[:, 1] - src[:, 0])  # S1 length kept
    np.testing.assert_allclose(out[:, 3] - out[:, 2], src[:, 3] - src[:, 2])  # S2 length kept
    d_systole = abs((out[0, 2] - out[0, 0]) - (src[0, 2] - src[0, 0]))
    d_diastole = abs((out[0, 4] - out[0, 3]) - (src[0, 4] - src[0, 3]))
    assert d_diastole > d_systole  # diastole takes most of a rate change, as in a heart
    assert qs2_ms(rate) < qs2_ms(rate - 10)  # systole shortens as the rate rises


def test_retime_keeps_beat_to_beat_variation():
    src = _cycles()
    src[3:] += 0.06  # one long RR in the middle
    src[2, 4] += 0.06
    out = retime_anchors(src, 60.0)
    rr_src, rr_out = src[:, 4] - src[:, 0], out[:, 4] - out[:, 0]
    np.testing.assert_allclose(rr_out / rr_out.mean(), rr_src / rr_src.mean(), rtol=1e-6)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spec)])


def test_vocoder_stretches_time_and_keeps_pitch():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE  # 1 s of a 150 Hz tone
    x = np.sin(2 * np.pi * 150.0 * t).astype(np.float32)
    y = vocode(x, np.array([0.0, 1.0]), np.array([0.0, 2.0]), 2 * SAMPLE_RATE, np.random.default_rng(0))
    assert y.shape == (2 * SAMPLE_RATE,) and np.isfinite(y).all()
    assert _peak_hz(y[1000:7000]) == pytest.approx(150.0, abs=3.0)
    assert np.sqrt(np.mean(y[1000:7000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.25)


def test_vocoder_copies_audio_where_the_map_is_the_identity():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SAMPLE_RATE).astype(np.float32)
    y = vocode(x, np.array([0.0, 1.0]), np.array([0.0, 1.0]), SAMPLE_RATE)
    assert np.max(np.abs(y[300:-300] - x[300:-300])) < 1e-3


def _band_db(x: np.ndarray, lo: float, hi: float, mask: np.ndarray) -> float:
    y = sosfiltfilt(butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos"), x)
    return 10 * np.log10(np.mean(y[mask] ** 2) + 1e-20)


def _canvas(anchors: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Quiet noise with 60 Hz S1 and 90 Hz S2 bursts at the anchors: a murmur-free recording."""
    rng = np.random.default_rng(seed)
    x = 0.002 * rng.standard_normal(n)
    t = np.arange(n) / SAMPLE_RATE
    for c in anchors:
        for on, f0 in ((c[0], 60.0), (c[2], 90.0)):
            a = int(on * SAMPLE_RATE)
            tt = t[a:a + 400] - on
            x[a:a + 400] += 0.5 * np.sin(2 * np.pi * f0 * tt) * np.exp(-tt / 0.02)
    return x.astype(np.float32)


def _phase_mask(anchors: np.ndarray, n: int, phase: str) -> np.ndarray:
    """Samples in the middle 60 % of each systole (S1 off -> S2 on) or diastole (S2 off -> next S1)."""
    mask = np.zeros(n, bool)
    for c in anchors:
        a, b = (c[1], c[2]) if phase == "systole" else (c[3], c[4])
        lo, hi = a + 0.2 * (b - a), b - 0.2 * (b - a)
        mask[int(lo * SAMPLE_RATE):int(hi * SAMPLE_RATE)] = True
    return mask


MR = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=3, pitch="high", quality="blowing",
              condition="mitral regurgitation", location="MV", heart_rate=60.0, age_group="adult")
AR = Findings(murmur="present", timing="early-diastolic", shape="decrescendo", grade=3, pitch="high",
              quality="blowing", condition="aortic regurgitation", location="AV", heart_rate=60.0, age_group="adult")


@pytest.mark.parametrize("findings, loud, quiet", [(MR, "systole", "diastole"), (AR, "diastole", "systole")])
def test_placed_murmur_sits_in_its_phase(findings, loud, quiet):
    anchors = retime_anchors(_cycles(8), 60.0)
    n = int(anchors[-1, 4] * SAMPLE_RATE)
    audio = place_findings(_canvas(anchors, n), anchors, findings, seed=3)
    ratio = (_band_db(audio, 200, 600, _phase_mask(anchors, n, loud))
             - _band_db(audio, 200, 600, _phase_mask(anchors, n, quiet)))
    assert ratio > 10.0


def test_placed_murmur_level_follows_the_grade_relative_to_the_heart_sounds():
    anchors = retime_anchors(_cycles(8), 70.0)
    n = int(anchors[-1, 4] * SAMPLE_RATE)
    systole = _phase_mask(anchors, n, "systole")
    levels = []
    for scale in (1.0, 4.0):  # the same finding on a louder recording keeps its level re S1/S2
        canvas = _canvas(anchors, n) * scale
        levels.append([_band_db(place_findings(canvas, anchors, MR.with_(grade=g), seed=3), 200, 600, systole)
                       - 20 * np.log10(scale) for g in range(1, 7)])
    steps = np.diff(levels[0])
    assert np.all(steps > 4.0) and np.all(steps < 8.0)  # 6 dB per Levine grade
    np.testing.assert_allclose(levels[0], levels[1], atol=0.5)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> CirCorWindows:
    root = make_circor(tmp_path_factory.mktemp("circor"))
    index = load_circor(root)
    return CirCorWindows(index.recordings, seconds=2.0, cache=False)


def test_augmented_windows_are_deterministic_labelled_and_in_range(base):
    aug = AugmentedWindows(base, 12, seed=5)
    again = AugmentedWindows(base, 12, seed=5)
    rates = []
    for i in range(len(aug)):
        item = aug[i]
        assert item["source"] == "augmented" and item["features"].shape == (129, 250)
        assert bool(np.isfinite(item["features"].numpy()).all())
        f = item["findings"]
        assert 40.0 <= f.heart_rate <= 200.0
        assert abs(f.heart_rate - float(item["labels"]["heart_rate"])) <= 1.0
        assert item["labels"]["s1s2"].sum() > 0  # re-timed heart sounds are labelled
        rates.append(f.heart_rate)
        np.testing.assert_array_equal(item["features"].numpy(), again[i]["features"].numpy())
        assert again[i]["findings"] == f
    assert max(rates) - min(rates) > 30  # rates spread over the range, not the fixture's 75-100 bpm
    with pytest.raises(IndexError):
        aug[12]


def test_source_cycles_stop_at_an_unannotated_gap():
    seg = np.array([(0.0, 0.1, 1), (0.1, 0.3, 2), (0.3, 0.4, 3), (0.4, 0.8, 4),
                    (0.8, 0.9, 1), (0.9, 1.1, 2), (1.1, 1.2, 3), (1.2, 1.6, 4),
                    (1.6, 2.6, 0), (2.6, 2.7, 1), (2.7, 2.9, 2), (2.9, 3.0, 3), (3.0, 3.4, 4)])
    cycles = source_cycles(seg, 0.0)
    assert cycles.shape == (2, 5)
    np.testing.assert_allclose(cycles[1], (0.8, 0.9, 1.1, 1.2, 1.6))
