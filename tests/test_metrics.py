"""Metrics on cases with known answers."""
import numpy as np
import pytest

from hldm.eval import metrics as M


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


def test_fad_zero_on_identical_sets_and_grows_with_noise():
    x = _gauss(400, 8, 0)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(1)
    values = [M.frechet_distance(x, x + rng.normal(0, s, x.shape)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_fad_matches_closed_form_for_shifted_gaussians():
    a, b = _gauss(20000, 2, 0), _gauss(20000, 2, 1, shift=3.0)
    # Same covariance, mean shift 3 in each of 2 dims -> ||mu_a - mu_b||^2 = 18.
    assert M.frechet_distance(a, b) == pytest.approx(18.0, rel=0.03)


def test_fad_refuses_bad_shapes():
    with pytest.raises(ValueError):
        M.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_inception_score_bounds():
    k = 5
    confident_diverse = np.eye(k)[np.arange(100) % k]
    assert M.inception_score(confident_diverse) == pytest.approx(k, rel=1e-3)
    uniform = np.full((100, k), 1 / k)
    assert M.inception_score(uniform) == pytest.approx(1.0, rel=1e-6)
    one_class = np.eye(k)[np.zeros(100, int)]
    assert M.inception_score(one_class) == pytest.approx(1.0, rel=1e-3)


def test_cmmd_near_zero_for_same_distribution_and_larger_for_shift():
    a, b = _gauss(300, 4, 0), _gauss(300, 4, 1)
    c = _gauss(300, 4, 2, shift=2.0)
    assert abs(M.cmmd(a, b)) < M.cmmd(a, c) / 20


def test_mutual_information_independent_vs_dependent():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20000), rng.normal(size=20000)
    assert M.mutual_information(x, y) < 0.01
    assert M.mutual_information(x, x) == pytest.approx(M.entropy(x), rel=1e-6)
    assert M.mutual_information(x, x + 0.1 * y) > 1.0


def test_pds_one_when_each_factor_in_its_own_subspace_zero_when_shared():
    rng = np.random.default_rng(0)
    f1, f2 = rng.integers(0, 4, 5000), rng.integers(0, 4, 5000)
    separate = {"a": f1[:, None].astype(float), "b": f2[:, None].astype(float)}
    assert M.subspace_disentanglement(separate, {"f1": f1, "f2": f2})["mean"] == pytest.approx(1.0, abs=0.01)
    shared = {"a": f1[:, None].astype(float), "b": f1[:, None].astype(float)}
    assert M.subspace_disentanglement(shared, {"f1": f1})["f1"] == pytest.approx(0.0, abs=1e-9)


def test_cf_ad_snpa_on_hand_made_sets():
    req = {"grade": [1, 2, 3, None], "timing": ["a", "b", "a", "b"]}
    pred = {"grade": [1, 2, 4, 5], "timing": ["a", "b", "b", "b"]}
    cf = M.clinical_fidelity(req, pred)
    assert cf["grade"] == pytest.approx(2 / 3) and cf["timing"] == pytest.approx(3 / 4)
    before = {"grade": [1, 1], "timing": ["a", "a"]}
    after = {"grade": [2, 1], "timing": ["a", "b"]}
    assert M.attribute_disentanglement(before, after, ["grade", "grade"]) == pytest.approx(0.5)
    w = np.array([[0.25, 0.25, 0.4, 0.1], [0.3, 0.3, 0.1, 0.3], [0.2, 0.2, 0.5, 0.1]])
    assert M.structured_noise_accuracy(w, np.array([1, 0, 1])) == 1.0
    assert M.structured_noise_accuracy(w, np.array([0, 1, 0])) == 0.0


def test_audio_quality_metrics_behave():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 4000
    clean = np.sin(2 * np.pi * 100 * t) * (np.sin(2 * np.pi * 1.2 * t) > 0.9)
    noisy = clean + rng.normal(0, 0.3, clean.shape)
    assert M.mel_spectral_distance(clean, clean) == pytest.approx(0.0, abs=1e-9)
    assert M.mel_spectral_distance(clean, noisy) > 1.0
    assert M.snr_db(clean + rng.normal(0, 1e-3, clean.shape)) > M.snr_db(noisy)
    assert M.spectral_correlation([clean, clean], [clean]) == pytest.approx(1.0)
    assert M.spectral_correlation([clean], [rng.normal(size=16000)]) < 0.9
