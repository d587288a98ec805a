"""The app's figures and its pure helpers: shapes, marks, and refusals of malformed input."""
import numpy as np
import pytest

from hldm import app_views
from hldm.audio.features import FEAT_OFFSET, FEAT_SCALE, FRAMES_PER_SECOND


def _features(t=250, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.3, size=(129, t)).astype(np.float32)


def _is_image(img):
    return img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.std() > 0


def test_features_db_is_20log10_of_the_magnitude():
    # A feature value f encodes ln|X| = f * FEAT_SCALE - FEAT_OFFSET.
    mag = np.full((129, 3), 0.1, dtype=np.float32)
    feat = (np.log(mag) + FEAT_OFFSET) / FEAT_SCALE
    assert np.allclose(app_views.features_db(feat), -20.0, atol=1e-3)


def test_spectrogram_marks_intervals_in_their_colours():
    feat = np.full((129, 250), -1.0, dtype=np.float32)  # uniform background: only marks add colour
    plain = app_views.spectrogram_image(feat, [], title="x")
    marked = app_views.spectrogram_image(feat, [(0.1, 0.2, "S1"), (0.4, 0.5, "S2"), (0.6, 1.2, "murmur")],
                                         title="x")
    assert _is_image(marked) and plain.shape == marked.shape

    def has(img, hex_color):
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return (np.abs(img.astype(int) - rgb).sum(axis=2) < 12).sum()

    for label, color in app_views.INTERVAL_COLORS.items():
        assert has(marked, color) > has(plain, color) + 50, label


def test_what_if_image_accepts_unequal_lengths_and_shows_three_panels():
    img = app_views.what_if_image(_features(250), _features(240, seed=1), [(0.0, 0.1, "S1")], [])
    single = app_views.spectrogram_image(_features(250))
    assert _is_image(img) and img.shape[1] > single.shape[1]


def test_what_if_difference_is_blank_for_identical_clips():
    f = _features()
    same = app_views.what_if_image(f, f)
    other = app_views.what_if_image(f, _features(seed=3))
    right = slice(2 * same.shape[1] // 3 + 20, same.shape[1] - 80)  # the difference panel's plot area
    assert same[60:-60, right].std() < other[60:-60, right].std()


def test_weights_and_attention_and_fusion_images():
    assert _is_image(app_views.weights_image(np.random.default_rng(0).random((20, 4))))
    assert _is_image(app_views.attention_image(np.eye(40), layer=1, step=3))
    assert _is_image(app_views.fusion_image({"text": 0.7, "graph": 0.3}))


@pytest.mark.parametrize("call", [
    lambda: app_views.spectrogram_image(np.zeros((64, 10))),
    lambda: app_views.weights_image(np.zeros((10, 3))),
    lambda: app_views.attention_image(np.zeros((4, 5))),
])
def test_malformed_arrays_are_refused_with_the_expected_shape(call):
    with pytest.raises(ValueError, match="expected"):
        call()


def test_frames_per_second_matches_the_time_axis():
    # A 2 s clip is 250 frames; the x extent must end at 2 s so marks in seconds line up.
    assert app_views._extent(int(2 * FRAMES_PER_SECOND))[1] == pytest.approx(2.0)
