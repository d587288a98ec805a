"""hldm.audio.features: STFT feature shapes, Griffin-Lim inversion quality and determinism."""
import numpy as np
import pytest
import torch

from hldm.audio.features import (FRAMES_PER_SECOND, HOP, N_BINS, TARGET_RMS, features_to_magnitude, invert,
                                 n_frames, n_samples, normalize_loudness, spectral_convergence,
                                 log_spectral_distance, to_features)


def _pcg_like(seconds=2.0, seed=0):
    """Damped 60-120 Hz bursts every 0.8 s over faint noise: heart-sound-like structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(4000 * seconds)) / 4000
    x = 0.01 * rng.standard_normal(t.size)
    for onset in np.arange(0.1, seconds, 0.8):
        for off, f in ((0.0, 60.0), (0.3, 110.0)):
            tt = t - onset - off
            x += np.where(tt >= 0, np.exp(-np.clip(tt, 0, None) / 0.02) * np.sin(2 * np.pi * f * tt), 0.0)
    return normalize_loudness(x.astype(np.float32))


def test_shapes_and_frame_rate():
    assert N_BINS == 129 and FRAMES_PER_SECOND == 125.0
    assert to_features(np.zeros(16000, np.float32) + 0.1).shape == (129, 500)
    batch = to_features(torch.randn(2, 3, 4000 + 17))
    assert batch.shape == (2, 3, 129, n_frames(4017)) and batch.dtype == torch.float32
    assert n_frames(4017) == 4017 // HOP and n_samples(n_frames(16000)) == 16000


def test_invert_length_and_batch():
    feat = to_features(np.stack([_pcg_like(1.0, 0), _pcg_like(1.0, 1)]))  # (2, 129, 125)
    audio = invert(feat, n_iter=4)
    assert audio.shape == (2, 4000) and audio.dtype == np.float32


def test_feature_scale_is_near_unit():
    feat = to_features(_pcg_like())
    assert -4.0 < float(feat.min()) and float(feat.max()) < 2.0
    assert abs(float(feat.mean())) < 2.0


def test_normalize_loudness_sets_rms_per_clip():
    x = np.stack([_pcg_like(1.0, 0) * 7, _pcg_like(1.0, 1) * 0.01])
    rms = np.sqrt(np.mean(normalize_loudness(x) ** 2, axis=-1))
    assert np.allclose(rms, TARGET_RMS, rtol=1e-4)


def test_griffin_lim_reconstruction_is_close_and_beats_few_iterations():
    x = _pcg_like()
    y32 = invert(to_features(x), n_iter=32)
    y2 = invert(to_features(x), n_iter=2)
    sc32, sc2 = spectral_convergence(x, y32), spectral_convergence(x, y2)
    assert sc32 < 0.2 and sc32 < sc2
    assert log_spectral_distance(x, y32) < 4.0
    assert spectral_convergence(x, x) == pytest.approx(0.0, abs=1e-6)
    assert log_spectral_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_inversion_is_deterministic_under_seed():
    feat = to_features(_pcg_like(1.0))
    a, b = invert(feat, n_iter=8, seed=3), invert(feat, n_iter=8, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, invert(feat, n_iter=8, seed=4))


def test_inversion_is_librosa_griffin_lim():
    import librosa

    feat = to_features(_pcg_like(1.0))
    mag = features_to_magnitude(feat)
    ref = librosa.griffinlim(np.concatenate([mag, mag[:, -1:]], axis=-1), n_iter=8, hop_length=HOP, n_fft=256,
                             window="hann", center=True, length=4000, random_state=np.random.RandomState(3))
    assert np.abs(invert(feat, n_iter=8, seed=3) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_batched_inversion_with_a_seed_per_clip_equals_single_calls():
    feat = to_features(np.stack([_pcg_like(1.0, 0), _pcg_like(1.0, 1)]))  # (2, 129, 125)
    both = invert(feat, n_iter=4, seed=[5, 6])
    assert both.shape == (2, 4000)
    for k, s in enumerate((5, 6)):
        assert np.allclose(both[k], invert(feat[k], n_iter=4, seed=s), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="seed"):
        invert(feat, n_iter=1, seed=[1, 2, 3])


def test_speckle_gives_a_smooth_spectrogram_the_texture_of_a_recorded_noise():
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(8000)).astype(np.float32)
    real = to_features(noise)
    smooth = real.mean(dim=-1, keepdim=True).expand_as(real).clone()  # what an L1 decoder tends to give
    plain = to_features(invert(smooth, seed=3))
    speckled = to_features(invert(smooth, seed=3, speckle=True))

    def spread(f):  # mean |frame-to-frame change| of the log-magnitude
        return float((f[..., 1:] - f[..., :-1]).abs().mean())

    def neighbour_correlation(f):  # of the log-magnitude's deviations, frame to next frame (overlapping windows)
        d = (f - f.mean(-1, keepdim=True))[2:-2, 4:-4]
        return float((d[:, 1:] * d[:, :-1]).sum() / (d * d).sum())

    assert spread(speckled) > 1.3 * spread(plain)
    assert spread(speckled) == pytest.approx(spread(real), rel=0.15)
    # independent factors per bin and frame gave 0.55 against a recorded noise's 0.66
    assert neighbour_correlation(speckled) == pytest.approx(neighbour_correlation(real), abs=0.05)
    np.testing.assert_array_equal(invert(smooth, seed=3, speckle=True), invert(smooth, seed=3, speckle=True))
    batch = invert(torch.stack([smooth, smooth]), seed=[3, 4], speckle=True)
    np.testing.assert_allclose(batch[0], invert(smooth, seed=3, speckle=True), atol=1e-5)
    assert not np.allclose(batch[0], batch[1])
