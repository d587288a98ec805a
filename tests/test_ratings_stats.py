"""Rating statistics on hand-made answer sets with known results, the report, the CLI and the CSV."""
import csv
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from hldm.cli import main as hldm_main
from hldm.ratings.session import simulator_source, start_session
from hldm.ratings.stats import (Proportion, attribute_agreement, clinical_validity, cohen_kappa, detection_accuracy,
                                fleiss_kappa, inter_reader_kappa, make_report, report_markdown, wilson_interval,
                                write_csv)
from hldm.ratings.store import Answer, AnswerRow, RatingStore

MR = {"murmur": "present", "timing": "holosystolic", "grade": 3, "location": "MV", "condition": "mitral regurgitation"}
NORMAL = {"murmur": "absent", "timing": None, "grade": None, "location": "AV", "condition": "normal"}


def row(source="synthetic", plausibility=4, said_real=False, reader="a", clip="c0", truth=MR, murmur="present",
        timing="holosystolic", grade=3, location="MV", k=[0]):
    k[0] += 1
    return AnswerRow(k[0], 1, reader, clip, source, truth, said_real, plausibility, murmur, timing, grade, location,
                     "2026-01-01T00:00:00")


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Newcombe (1998), table I style check
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="k"):
        wilson_interval(11, 10)


def test_cohen_kappa_textbook_and_identical():
    # 50 items: both yes 20, a yes / b no 5, a no / b yes 10, both no 15 -> p_o 0.70, p_e 0.50, kappa 0.40
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    assert math.isnan(cohen_kappa(["x"] * 4, ["x"] * 4))  # one category only: undefined
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    y[:120] = x[:120]
    assert cohen_kappa(list(x), list(y)) == pytest.approx(cohen_kappa_score(x, y))


def test_fleiss_kappa_textbook_and_identical():
    # Fleiss (1971) worked example as given on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[3, 0], [1, 1]]))


def test_fleiss_equals_cohen_scale_on_two_raters_perfect_disagreement():
    # two raters who always disagree on a balanced binary item set: both kappas are -1
    a, b = ["r", "s"] * 5, ["s", "r"] * 5
    assert cohen_kappa(a, b) == pytest.approx(-1.0)
    assert fleiss_kappa(np.array([[1, 1]] * 10)) == pytest.approx(-1.0)


def test_clinical_validity_share_and_ci():
    rows = [row(plausibility=p) for p in (5, 4, 4, 3, 2, 5, 4, 1, 4, 4)] + [row("real", plausibility=1)] * 3
    cv = clinical_validity(rows)
    assert (cv.k, cv.n) == (7, 10)  # real clips do not count
    assert cv.ci == pytest.approx(wilson_interval(7, 10))
    assert str(cv).startswith("70.0 % [39.7, 89.2] (7/10)")


def test_detection_accuracy():
    rows = ([row("real", said_real=True)] * 6 + [row("real", said_real=False)] * 4
            + [row("synthetic", said_real=False)] * 3 + [row("synthetic", said_real=True)] * 7)
    acc = detection_accuracy(rows)
    assert (acc.k, acc.n) == (9, 20)
    assert detection_accuracy([row("synthetic")] * 5) is None  # no real clips: no detection task


def test_attribute_agreement():
    rows = [row(),  # all right
            row(timing="mid-systolic", grade=4, location="TV"),  # timing wrong, grade within 1, location wrong
            row(murmur="absent", timing=None, grade=None),  # missed the murmur: timing and grade count as wrong
            row(truth=NORMAL, murmur="absent", timing=None, grade=None, location="AV"),  # normal, heard right
            row(truth=NORMAL, murmur="present", timing="holosystolic", grade=2, location=None)]  # false murmur
    ag = attribute_agreement(rows)
    assert (ag["murmur"].k, ag["murmur"].n) == (3, 5)
    assert (ag["timing"].k, ag["timing"].n) == (1, 3)  # only clips whose truth has a murmur
    assert (ag["grade"].k, ag["grade"].n) == (1, 3)
    assert (ag["grade ±1"].k, ag["grade ±1"].n) == (2, 3)
    assert (ag["location"].k, ag["location"].n) == (3, 5)  # TV and "not sure" (None) are misses


def test_inter_reader_kappa_cohen_for_two_fleiss_for_three():
    said = {"a": [1, 1, 0, 0, 1, 0], "b": [1, 0, 0, 0, 1, 1], "c": [1, 1, 0, 1, 1, 0]}
    two = [row(reader=r, clip=f"c{i}", said_real=bool(v)) for r in "ab" for i, v in enumerate(said[r])]
    k2 = inter_reader_kappa(two, lambda r: r.said_real)
    assert k2.method == "Cohen" and k2.n_clips == 6 and k2.n_readers == 2
    assert k2.value == pytest.approx(cohen_kappa(said["a"], said["b"]))
    three = two + [row(reader="c", clip=f"c{i}", said_real=bool(v)) for i, v in enumerate(said["c"])]
    k3 = inter_reader_kappa(three, lambda r: r.said_real)
    counts = np.array([[sum(said[r][i] == c for r in "abc") for c in (0, 1)] for i in range(6)])
    assert k3.method == "Fleiss" and k3.n_readers == 3 and k3.value == pytest.approx(fleiss_kappa(counts))
    same = [row(reader=r, clip=f"c{i}", said_real=bool(v)) for r in "ab" for i, v in enumerate(said["a"])]
    assert inter_reader_kappa(same, lambda r: r.said_real).value == pytest.approx(1.0)
    assert inter_reader_kappa(two[:6], lambda r: r.said_real) is None  # one reader only


def test_report_markdown_and_csv(tmp_path):
    rows = [row(plausibility=5, reader="a"), row(plausibility=2, reader="b"), row("real", said_real=True),
            row(truth=NORMAL, murmur="absent", timing=None, grade=None, location="AV")]
    rep = make_report(rows)
    md = report_markdown(rep)
    assert "| Clinical validity (synthetic rated plausible >= 4) | 66.7 % [20.8, 93.9] (2/3) |" in md
    assert "| Real-vs-synthetic detection accuracy (50 % = indistinguishable) | 100.0 %" in md
    assert "### Per reader" in md
    assert "No answers stored yet" in report_markdown(make_report([]))
    out = write_csv(rows, tmp_path / "a.csv")
    with open(out) as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == 4 and got[2]["source"] == "real" and got[2]["source_correct"] == "1"
    assert got[3]["truth_murmur"] == "absent" and got[0]["truth_grade"] == "3"


def test_proportion_formatting():
    assert str(Proportion(0, 0)) == "n/a (0 answers)"
    assert Proportion(1, 4).p == 0.25


def test_cli_report_and_list(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    with RatingStore(db) as s:
        s.add_reader("alice")
        session = start_session(s, "alice", 4, simulator_source(), seed=1)
        for p, c in zip((5, 4, 2, 4), s.clips(session.id)):
            s.record_answer(session.id, c.id, Answer(False, p, "absent"))
    assert hldm_main(["ratings", "report", "--db", str(db), "--csv", str(tmp_path / "out.csv")]) == 0
    out = capsys.readouterr().out
    assert "75.0 % [30.1, 95.4] (3/4)" in out and "n/a (needs real and synthetic clips)" in out
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 5
    assert hldm_main(["ratings", "list", "--db", str(db)]) == 0
    assert "| 1 | alice | 1 | 4 | 4 |" in capsys.readouterr().out
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 100)
    assert hldm_main(["ratings", "report", "--db", str(bad)]) == 1
    assert "not an SQLite database" in capsys.readouterr().err
    assert bad.read_bytes() == b"garbage" * 100
