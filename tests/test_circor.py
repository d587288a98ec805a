"""CirCor loader, patient-level split and `python -m hldm data`: on a generated fixture, and on
the real copy when ../shared/data is there."""
import json
import math

import pytest

from fixtures_circor import make_circor
from hldm.data.circor import (MURMUR_STATUSES, CirCorIndex, Patient, load_circor, load_or_make_split,
                              manifest_path, split_patients)
from hldm.data.summary import main as data_main
from hldm.paths import REPO, cache_dir


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return make_circor(tmp_path_factory.mktemp("circor"), with_csv=True)


@pytest.fixture(scope="module")
def index(fixture_root):
    return load_circor(fixture_root)


def _rec(index, stem):
    return next(r for r in index.recordings if r.stem == stem)


def test_counts_and_every_quirk_reported_without_crashing(index):
    assert sorted(index.patients) == ["1001", "1002", "1003", "1004", "1005"]
    assert len(index.recordings) == 14
    problems = {(p.kind, p.path) for p in index.problems}
    assert problems == {
        ("unknown_file", "README.txt"), ("unknown_file", "notes.docx"), ("unknown_file", "9999_AV.tsv"),
        ("missing_tsv", "1003_AV"), ("empty_tsv", "1003_PV.tsv"), ("unmapped_location", "1004_Phc"),
        ("bad_value", "1005.txt"), ("csv_mismatch", "1002.txt"), ("csv_only_patient", "training_data.csv"),
    }


def test_murmur_is_placed_only_at_the_listed_locations(index):
    mv = _rec(index, "1001_MV").findings
    assert (mv.murmur, mv.timing, mv.shape, mv.grade, mv.pitch, mv.quality, mv.location) == \
        ("present", "holosystolic", "plateau", 2, "high", "blowing", "MV")
    av = _rec(index, "1001_AV")
    assert av.findings.murmur == "absent" and av.findings.grade is None
    assert av.murmur_status == "absent" and "murmur_elsewhere" in av.flags
    assert "most_audible" in _rec(index, "1001_MV").flags and "most_audible" not in _rec(index, "1001_TV").flags


def test_diastolic_murmur_used_when_no_systolic_and_dropped_flag_when_both(index):
    ad = _rec(index, "1004_AV").findings
    assert (ad.timing, ad.shape, ad.grade, ad.pitch) == ("early-diastolic", "decrescendo", 1, "low")
    both = _rec(index, "1005_PV")
    assert both.findings.timing == "mid-systolic" and both.findings.grade == 3
    assert "diastolic_dropped" in both.flags


def test_missing_and_unknown_values_become_none_and_are_listed(index):
    r = _rec(index, "1002_MV_2")
    assert (r.findings.age_group, r.findings.height_cm, r.findings.weight_kg) == (None, None, None)
    assert set(r.missing) == {"age_group", "height_cm", "weight_kg"}
    assert {"Age", "Height", "Weight"} <= set(index.patients["1002"].missing)
    squeaky = _rec(index, "1005_PV")  # "Squeaky" is not a quality: None, listed, reported
    assert squeaky.findings.quality is None and "quality" in squeaky.missing
    assert _rec(index, "1005_MV").findings.pregnant is True


def test_unknown_murmur_kept_and_flagged(index):
    recs = [r for r in index.recordings if r.patient_id == "1003"]
    assert len(recs) == 3
    assert all(r.murmur_status == "unknown" and "murmur_unknown" in r.flags for r in recs)
    assert index.patients["1003"].murmur_status == "unknown"


def test_phc_recording_kept_with_location_none(index):
    phc = _rec(index, "1004_Phc")
    assert phc.location is None and phc.findings.location is None and phc.raw_location == "Phc"
    assert "location_unmapped" in phc.flags and phc.audio_path is not None
    assert phc.murmur_status == "present"  # Phc is among this patient's murmur locations


def test_heart_rate_and_segmentation_from_tsv(index):
    assert _rec(index, "1001_TV").heart_rate == pytest.approx(75.0, abs=0.1)
    assert _rec(index, "1002_AV").heart_rate == pytest.approx(100.0, abs=0.1)
    assert _rec(index, "1002_AV").findings.heart_rate == pytest.approx(100.0, abs=0.1)
    for stem in ("1003_AV", "1003_PV"):
        r = _rec(index, stem)
        assert r.segmentation is None and r.heart_rate is None and math.isnan(r.findings.heart_rate)
        assert {"no_segmentation", "heart_rate_unknown"} <= set(r.flags)
    assert _rec(index, "1003_AV").tsv_path is None
    seg = _rec(index, "1005_PV").segmentation
    assert seg.shape[1] == 3 and set(seg[:, 2].astype(int)) == {0, 1, 2, 3, 4}


def test_audio_found_as_wav_or_flac(index):
    assert _rec(index, "1001_AV").audio_path.suffix == ".wav"
    assert _rec(index, "1002_MV_1").audio_path.suffix == ".flac"


def test_training_data_csv_fills_but_never_overrides(index):
    assert index.patients["1001"].fields["Outcome"] == "Abnormal"
    assert index.patients["1002"].murmur_status == "absent"  # header says Absent, csv Present


def test_bad_tsv_row_and_missing_audio_reported(tmp_path):
    root = make_circor(tmp_path / "c")
    (root / "1001_MV.tsv").write_text("0.0\t0.5\t0\n0.5\tsoon\t1\n")
    (root / "1002_AV.flac").unlink()
    ix = load_circor(root)
    kinds = {(p.kind, p.path) for p in ix.problems}
    assert ("bad_tsv", "1001_MV.tsv") in kinds and ("missing_audio", "1002_AV") in kinds
    assert _rec(ix, "1001_MV").segmentation is None and _rec(ix, "1002_AV").audio_path is None


def test_not_a_circor_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_circor(tmp_path / "nope")
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no patient headers"):
        load_circor(tmp_path)


# ---- split ----------------------------------------------------------------------------------

def _synthetic_index(n_absent=140, n_present=40, n_unknown=20) -> CirCorIndex:
    patients = {}
    for status, n in zip(MURMUR_STATUSES, (n_present, n_absent, n_unknown)):
        for i in range(n):
            pid = f"{status[0]}{i:04d}"
            patients[pid] = Patient(pid, status, (), None, (), {})
    return CirCorIndex(patients, [], [])


def test_split_is_disjoint_complete_stratified_and_deterministic():
    ix = _synthetic_index()
    split = split_patients(ix, seed=0)
    sets = [set(split[s]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(ix.patients)
    for status in MURMUR_STATUSES:
        n = sum(p.murmur_status == status for p in ix.patients.values())
        counts = [sum(ix.patients[p].murmur_status == status for p in s) for s in sets]
        for c, frac in zip(counts, (0.70, 0.15, 0.15)):
            assert abs(c - frac * n) <= 1
    assert split_patients(ix, seed=0) == split
    assert split_patients(ix, seed=1) != split


def test_split_manifest_saved_in_cache_and_reused(tmp_path):
    ix = _synthetic_index()
    split = load_or_make_split(ix, seed=3)
    path = manifest_path(ix, seed=3)
    assert path.is_file() and path.is_relative_to(cache_dir()) and not path.is_relative_to(REPO)
    doc = json.loads(path.read_text())
    assert doc["train"] == split["train"] and len(doc["split_sha256"]) == 64
    assert load_or_make_split(ix, seed=3) == split
    path.write_text(path.read_text().replace(split["val"][0], "intruder"))  # tampered: hash fails
    assert load_or_make_split(ix, seed=3) == split
    assert "intruder" not in path.read_text()


# ---- CLI ------------------------------------------------------------------------------------

def test_data_summary_and_split_commands(fixture_root, capsys):
    assert data_main(["summary", "--root", str(fixture_root)]) == 0
    out = capsys.readouterr().out
    assert "patients: 5" in out and "recordings: 14" in out
    assert "missing_tsv" in out and "1003_AV" in out and "holosystolic" in out
    assert data_main(["split", "--root", str(fixture_root), "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert manifest_path(load_circor(fixture_root), seed=7).is_file() and "train" in out
    assert data_main(["summary", "--root", str(fixture_root / "absent")]) == 2
    assert data_main(["frobnicate"]) == 2


# ---- real data (skips without ../shared/data) -------------------------------------------------

@pytest.mark.realdata
def test_real_circor_counts_and_split(real_circor):
    ix = load_circor(real_circor)
    assert len(ix.patients) == 847
    assert len(ix.recordings) == 2845
    assert all(r.audio_path is not None for r in ix.recordings)
    assert not [p for p in ix.problems if p.kind in ("bad_header", "bad_value", "unknown_file", "bad_tsv")]
    split = split_patients(ix)
    sets = [set(v) for v in split.values()]
    assert sum(map(len, sets)) == len(set().union(*sets)) == 847
    assert abs(len(split["train"]) / 847 - 0.70) < 0.01
