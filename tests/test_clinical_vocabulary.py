"""The clinical vocabulary: Levine scales, phases, aliases, Findings serialisation."""
import subprocess
import sys

import pytest

from hldm.clinical import vocabulary as V


def test_levine_scales_by_phase():
    assert [V.max_grade(t) for t in V.SYSTOLIC_TIMINGS] == [6] * 4
    assert [V.max_grade(t) for t in V.DIASTOLIC_TIMINGS] == [4] * 3
    assert V.max_grade("continuous") == 6
    assert V.grade_label(3, "holosystolic") == "III/VI"
    assert V.grade_label(2, "early-diastolic") == "II/IV"


def test_timing_phase_refuses_unknown_timing_naming_allowed_values():
    with pytest.raises(ValueError, match="timing.*allowed: early-systolic"):
        V.timing_phase("sometimes")


def test_grade_bands_cover_every_grade_once():
    assert [V.grade_band(g) for g in range(1, 7)] == ["soft", "soft", "moderate", "loud", "loud", "loud"]


def test_every_alias_points_at_a_vocabulary_value():
    choices = {"murmur": V.MURMUR_STATUS, "timing": V.TIMINGS, "shape": V.SHAPES, "pitch": V.PITCHES,
               "quality": V.QUALITIES, "location": V.LOCATIONS, "radiation": V.RADIATIONS,
               "extra_sounds": V.EXTRA_SOUNDS, "age_group": V.AGE_GROUPS, "sex": V.SEXES,
               "condition": V.CONDITIONS}
    for field, aliases in V.ALIASES.items():
        for alias, value in aliases.items():
            assert value in choices[field], (field, alias, value)


def test_value_key_ignores_case_spaces_and_hyphens():
    assert V.value_key("Early-systolic") == V.value_key("early systolic") == V.value_key("EARLY_SYSTOLIC")


def test_findings_dict_round_trip_and_unknown_field():
    f = V.Findings(murmur="present", timing="holosystolic", grade=3, extra_sounds=("S3",), condition="normal")
    assert V.Findings.from_dict(f.to_dict()) == f
    with pytest.raises(ValueError, match="colour"):
        V.Findings.from_dict({"colour": "red"})


def test_clinical_package_imports_without_torch():
    code = "import sys, hldm.clinical; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("changed, held", [
    (("grade",), ("rhythm", "s1s2")),
    (("timing", "shape"), ("rhythm", "s1s2")),
    (("location",), ("rhythm",)),
    (("grade", "extra_sounds"), ("rhythm",)),
    (("heart_rate",), ()),  # a new rate moves every sound in time
    (("grade", "age_group"), ()),
    ((), V.SUBSPACES),
])
def test_a_what_if_holds_the_subspaces_its_edit_cannot_move(changed, held):
    assert V.held_subspaces(changed) == held
