"""The recording editor's S1/S2 segmenter: a valid cycle from any posterior, the shipped one finds the
simulator's heart sounds over the product's heart-rate range, training and its checkpoint round-trip."""
import numpy as np
import pytest

from hldm.clinical.vocabulary import Findings
from hldm.data.simulator import simulate
from hldm.models.checkpoint import CheckpointError
from hldm.models.segmenter import MIN_FRAMES, SegmenterConfig, cycle_viterbi, state_rows
from hldm.train import segmenter as S

CYCLE = {1: 2, 2: 3, 3: 4, 4: 1}


def test_viterbi_follows_the_cycle_and_the_minimum_durations_whatever_the_frames_say():
    rng = np.random.default_rng(0)
    log_p = np.log(rng.dirichlet(np.ones(4), size=600))  # (T, 4) posteriors of noise
    path = cycle_viterbi(log_p)
    rows = state_rows(path)
    assert set(np.unique(path)) <= {1, 2, 3, 4}
    for (_, _, a), (_, _, b) in zip(rows, rows[1:]):
        assert CYCLE[int(a)] == int(b)
    for a, b, s in rows[1:-1]:  # the first and last run may be cut by the clip's ends
        assert round((b - a) * 125) >= MIN_FRAMES[int(s)]


def test_viterbi_keeps_a_clear_segmentation():
    truth = np.repeat(np.tile([1, 2, 3, 4], 5), [10, 30, 9, 50] * 5)
    log_p = np.log(np.full((len(truth), 4), 0.1))
    log_p[np.arange(len(truth)), truth - 1] = np.log(0.7)
    assert np.array_equal(cycle_viterbi(log_p), truth)
    rows = state_rows(truth)
    assert rows.shape == (20, 3) and rows[1, 0] == pytest.approx(9.5 / 125) and rows[-1, 1] == len(truth) / 125


@pytest.mark.parametrize("rate, findings", [
    (50.0, Findings(age_group="adult")),
    (80.0, Findings(murmur="present", timing="early-diastolic", shape="decrescendo", grade=3, pitch="high",
                    quality="blowing", location="AV")),
    (140.0, Findings(murmur="present", timing="holosystolic", shape="plateau", grade=4, pitch="low",
                     quality="harsh", location="MV")),
])
def test_the_shipped_segmenter_finds_the_simulators_s1_and_s2(rate, findings):
    model = S.load_segmenter()
    sims = [simulate(findings.with_(heart_rate=rate), seconds=10.0, seed=k, noise_level=0.03) for k in range(3)]
    clips = [S.Annotated(s.audio, np.asarray(s.segmentation, np.float64), f"sim{k}") for k, s in enumerate(sims)]
    a = S.agreement(S.segmenter_rows(model), clips)
    assert a["clips"] == 3 and a["right"] == 1.0 and a["swapped"] == 0.0
    assert min(a["s1_recall"], a["s2_recall"]) >= 0.85


def test_agreement_tells_right_from_swapped():
    sim = simulate(Findings(heart_rate=70.0), seconds=10.0, seed=1, noise_level=0.02)
    clip = S.Annotated(sim.audio, np.asarray(sim.segmentation, np.float64), "p")
    right = S.agreement(lambda x: _shift(clip.rows), [clip])
    assert right["right"] == 1.0 and right["swapped"] == 0.0 and right["s1_recall"] == 1.0
    swapped = S.agreement(lambda x: S._relabel(_shift(clip.rows)), [clip])
    assert swapped["right"] == 0.0 and swapped["swapped"] == 1.0


def _shift(rows):
    """The annotation as `agreement` reads it: from the first S1 on."""
    start = rows[rows[:, 2] == 1][0, 0]
    return rows - np.asarray([start, start, 0.0])


def test_training_saves_a_checkpoint_that_rebuilds_its_model(tmp_path):
    clips = S.simulated_recordings(4, 6.0, seed=0)
    cfg = SegmenterConfig(channels=16, dilations=(1, 2))
    model = S.train_segmenter(clips, steps=3, batch_size=2, seconds=2.0, cfg=cfg, progress=False)
    info = {"trained_on": "4 simulator clips", "steps": 3, "batch_size": 2, "seconds": 2.0, "seed": 0,
            "train_minutes": 0.0, "device": "CPU", "scored_on": "the same clips",
            "agreement": {"this segmenter": S.agreement(S.segmenter_rows(model), clips)}}
    path = S.save_segmenter(tmp_path / "seg", model, info)
    again = S.load_segmenter(path)
    assert again.cfg == cfg
    feat = S.crop_batch(clips, 1, 8000, np.random.default_rng(0))[0]
    assert np.allclose(again(feat).detach().numpy(), model(feat).detach().numpy())
    assert "Heart-cycle segmenter" in (path / "README.md").read_text()
    with pytest.raises(CheckpointError, match="model_type"):
        S.load_segmenter(S.REPO / "checkpoints" / "evaluator")
