"""Cycle-aligned windows: crops, labels, feature cache, simulated windows, collate."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures_circor import make_circor
from hldm.audio.features import features_to_magnitude, normalize_loudness, to_features
from hldm.clinical.prompts import Prompts
from hldm.clinical.vocabulary import TIMINGS
from hldm.data.circor import load_circor
from hldm.data.windows import LABEL_KEYS, CirCorWindows, SimulatedWindows, collate
from hldm.paths import REPO, cache_dir

SR = 4000


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return load_circor(make_circor(tmp_path_factory.mktemp("circor")))


@pytest.fixture(scope="module")
def windows(index):
    return CirCorWindows(index.recordings, seconds=4.0)


def _items_of(ds, stem):
    return [i for i, (r, _) in enumerate(ds.windows) if ds.recordings[r].stem == stem]


def test_windows_start_at_s1_and_stay_inside_annotated_audio(windows):
    per_stem = {}
    for r, onset in windows.windows:
        rec = windows.recordings[r]
        per_stem[rec.stem] = per_stem.get(rec.stem, 0) + 1
        seg = rec.segmentation
        assert np.any((seg[:, 2] == 1) & np.isclose(seg[:, 0], onset))
        overlapping = seg[(seg[:, 1] > onset + 1e-6) & (seg[:, 0] < onset + 4.0 - 1e-6)]
        assert (overlapping[:, 2] > 0).all()
        assert round(onset * SR) + 4 * SR <= sf.info(str(rec.audio_path)).frames
    # 75 bpm x 8 cycles: 4 starts leave 4 s of annotation; 80 bpm: 3; the gap recording's
    # first block (3 cycles) is too short, its second gives 4.
    assert per_stem == {"1001_AV": 4, "1001_PV": 4, "1001_TV": 4, "1001_MV": 4, "1003_TV": 3,
                        "1004_AV": 4, "1005_PV": 4, "1005_MV": 4}
    assert windows.skipped == {"no segmentation": ["1003_AV", "1003_PV"], "unmapped location": ["1004_Phc"],
                               "findings refused (age_group)": ["1002_AV", "1002_MV_1", "1002_MV_2"]}


def test_features_are_the_normalised_crop_and_mask_is_aligned(windows):
    i = _items_of(windows, "1001_MV")[1]
    item = windows[i]
    assert item["features"].shape == (129, 500) and item["features"].dtype == torch.float32
    audio, _ = sf.read(str(windows.recordings[windows.windows[i][0]].audio_path), dtype="float32")
    start = round(item["meta"]["start_s"] * SR)
    expected = to_features(normalize_loudness(audio[start:start + 4 * SR]))
    assert torch.allclose(item["features"], expected, atol=1e-5)
    mask = item["labels"]["s1s2"]
    assert mask.shape == (500,) and 0.2 < mask.mean() < 0.5  # S1 + S2 = 0.22 s of each 0.8 s cycle
    # the fixture's S1/S2 bursts are below 100 Hz: their energy sits under the mask
    low = torch.from_numpy(features_to_magnitude(item["features"][:8])).square().mean(0)
    assert low[mask == 1].mean() > 3 * low[mask == 0].mean()


def test_labels_follow_findings(windows):
    mv = windows[_items_of(windows, "1001_MV")[0]]
    lab = mv["labels"]
    assert set(lab) == set(LABEL_KEYS)
    assert (lab["murmur"].item(), lab["grade"].item(), lab["timing"].item()) == \
        (1.0, 2, TIMINGS.index("holosystolic"))
    assert lab["heart_rate"].item() == pytest.approx(75.0, abs=0.5)
    assert math.isnan(lab["noise_level"].item())
    assert mv["findings"].heart_rate == pytest.approx(75.0, abs=0.5)
    assert isinstance(mv["prompts"], Prompts) and "holosystolic" in mv["prompts"].l2
    assert mv["source"] == "circor" and mv["meta"]["patient_id"] == "1001"
    av = windows[_items_of(windows, "1001_AV")[0]]["labels"]  # murmur heard elsewhere: 0 here
    assert (av["murmur"].item(), av["grade"].item(), av["timing"].item()) == (0.0, 0, -1)
    unknown = windows[_items_of(windows, "1003_TV")[0]]["labels"]
    assert math.isnan(unknown["murmur"].item()) and unknown["grade"].item() == -1
    assert windows[_items_of(windows, "1003_TV")[0]]["labels"]["heart_rate"].item() == pytest.approx(80, abs=0.5)


def test_findings_refused_by_validation_are_skipped_not_filled(index):
    # 1002's age is "nan": validate() refuses age_group None, so it yields no windows.
    ds = CirCorWindows([r for r in index.recordings if r.patient_id == "1002"])
    assert len(ds) == 0 and ds.skipped == {"findings refused (age_group)": ["1002_AV", "1002_MV_1", "1002_MV_2"]}


def test_cache_lives_outside_the_repo_and_gives_identical_features(index):
    recs = [r for r in index.recordings if r.stem == "1005_PV"]
    cached = CirCorWindows(recs)
    assert cached.warm_cache() == 1 and cached.warm_cache() == 0
    files = list((cache_dir() / "audio").glob("*.npy"))
    assert files and not any(f.resolve().is_relative_to(REPO) for f in files)
    fresh, uncached = CirCorWindows(recs), CirCorWindows(recs, cache=False)
    for i in range(len(cached)):
        assert torch.equal(cached[i]["features"], fresh[i]["features"])
        assert torch.equal(cached[i]["features"], uncached[i]["features"])


def test_min_spacing_gives_non_overlapping_windows(index):
    ds = CirCorWindows(index.recordings, min_spacing_s=4.0)
    for r in set(r for r, _ in ds.windows):
        starts = [s for rr, s in ds.windows if rr == r]
        assert all(b - a >= 4.0 for a, b in zip(starts, starts[1:]))
    assert 0 < len(ds) < len(CirCorWindows(index.recordings))


def test_other_lengths(index):
    ds = CirCorWindows(index.recordings, seconds=2.0)
    assert ds[0]["features"].shape == (129, 250) and ds[0]["labels"]["s1s2"].shape == (250,)
    with pytest.raises(ValueError, match="seconds"):
        CirCorWindows(index.recordings, seconds=0)


def test_simulated_windows_are_deterministic_with_components():
    ds = SimulatedWindows(3, seconds=2.0, seed=5)
    a, b = ds[1], SimulatedWindows(3, seconds=2.0, seed=5)[1]
    assert torch.equal(a["features"], b["features"]) and a["findings"] == b["findings"]
    assert not torch.equal(a["features"], SimulatedWindows(3, seconds=2.0, seed=6)[1]["features"])
    assert a["features"].shape == (129, 250) and a["source"] == "sim"
    assert set(a["components"]) == {"s1s2", "murmur", "noise"}
    assert all(c.shape == (129, 250) for c in a["components"].values())
    lab = a["labels"]
    assert math.isfinite(lab["noise_level"].item()) and math.isfinite(lab["heart_rate"].item())
    assert lab["s1s2"].sum() > 0 and lab["murmur"].item() in (0.0, 1.0)
    assert (lab["grade"].item() > 0) == (a["findings"].murmur == "present")
    with pytest.raises(IndexError):
        ds[3]


def test_collate_stacks_and_keeps_components_only_when_all_have_them(windows):
    real = collate([windows[0], windows[5]])
    assert real["features"].shape == (2, 129, 500)
    assert real["labels"]["s1s2"].shape == (2, 500) and real["labels"]["grade"].dtype == torch.int64
    assert len(real["findings"]) == len(real["prompts"]) == 2 and "components" not in real
    sim = SimulatedWindows(2, seconds=4.0, seed=0)
    both = collate([sim[0], sim[1]])
    assert both["components"]["murmur"].shape == (2, 129, 500)
    assert "components" not in collate([sim[0], windows[0]])


@pytest.mark.realdata
def test_real_windows_load(real_circor):
    ix = load_circor(real_circor)
    recs = [r for r in ix.recordings if r.patient_id == sorted(ix.patients)[0]]
    ds = CirCorWindows(recs)
    assert len(ds) > 0
    item = ds[len(ds) // 2]
    assert item["features"].shape == (129, 500) and torch.isfinite(item["features"]).all()
    assert 40 <= item["labels"]["heart_rate"].item() <= 200 and item["labels"]["s1s2"].sum() > 0
