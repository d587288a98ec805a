"""Validation: normalisation of real-world spellings and every refusal rule, field named."""
import pytest

from hldm.clinical import vocabulary as V
from hldm.clinical.knowledge_graph import AGE_DEFAULTS, CONDITION_PROFILES, default_graph
from hldm.clinical.validation import SHAPES_BY_TIMING, FindingsError, validate, validate_dict

MR = V.Findings(murmur="present", timing="holosystolic", shape="plateau", grade=3, pitch="high",
                quality="blowing", location="MV", radiation="axilla")


def refuses(field: str, findings=None, **changes) -> FindingsError:
    with pytest.raises(FindingsError) as info:
        validate((findings or MR).with_(**changes))
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}:")
    return info.value


def test_valid_findings_pass_unchanged():
    assert validate(MR) == MR
    assert validate(V.Findings()) == V.Findings()


def test_circor_spellings_are_normalised():
    raw = MR.with_(timing="Holosystolic", shape="Plateau", grade="III/VI", pitch="High", quality="Blowing",
                   murmur="Present", age_group="Young Adult", sex="Female", extra_sounds=["s3"])
    f = validate(raw)
    assert (f.timing, f.shape, f.grade, f.pitch, f.quality, f.murmur, f.age_group, f.sex, f.extra_sounds) == (
        "holosystolic", "plateau", 3, "high", "blowing", "present", "young adult", "female", ("S3",))


@pytest.mark.parametrize("written, expected", [
    (dict(timing="pansystolic"), ("timing", "holosystolic")),
    (dict(shape="crescendo-decrescendo"), ("shape", "diamond")),
    (dict(location="apex"), ("location", "MV")),
    (dict(location="left upper sternal border", radiation="none", shape="plateau"), ("location", "PV")),
    (dict(grade="3/6"), ("grade", 3)),
    (dict(grade="III"), ("grade", 3)),
    (dict(condition="MR"), ("condition", "mitral regurgitation")),
    (dict(condition="Tetralogy of fallot", timing="mid-systolic", shape="diamond"), ("condition", "tetralogy of Fallot")),
])
def test_aliases(written, expected):
    field, value = expected
    assert getattr(validate(MR.with_(**written)), field) == value


def test_extra_sounds_deduplicated_in_vocabulary_order():
    f = validate(V.Findings(extra_sounds=("S4", "midsystolic click", "s4")))
    assert f.extra_sounds == ("midsystolic click", "S4")


@pytest.mark.parametrize("field, value", [
    ("timing", "sometimes"), ("shape", "triangle"), ("pitch", "ultrasonic"), ("quality", "squeaky"),
    ("location", "knee"), ("radiation", "toes"), ("extra_sounds", ("gallop rhythm",)),
    ("condition", "broken heart"), ("age_group", "ancient"), ("sex", "robot"), ("murmur", "unknown"),
])
def test_unknown_values_name_field_and_allowed(field, value):
    err = refuses(field, **{field: value})
    assert err.allowed, "allowed values must be listed"
    assert "allowed:" in str(err)


@pytest.mark.parametrize("grade", [0, 7, -1, "VII/VI", "2/5", True, "loud"])
def test_grade_outside_levine_scale(grade):
    refuses("grade", grade=grade)


def test_diastolic_grade_above_iv_refused():
    ar = MR.with_(timing="early-diastolic", shape="decrescendo", grade=4, location="AV", radiation="left sternal border")
    assert validate(ar).grade == 4
    err = refuses("grade", ar, grade=5)
    assert "1..4" in str(err)
    refuses("grade", ar, grade="II/VI")  # written on the systolic scale


@pytest.mark.parametrize("field, value", [
    ("grade", 2), ("timing", "holosystolic"), ("shape", "plateau"), ("pitch", "low"), ("quality", "harsh"),
    ("radiation", "axilla"),
])
def test_murmur_fields_with_no_murmur_refused(field, value):
    refuses(field, V.Findings(), **{field: value})


def test_present_murmur_needs_timing_and_grade():
    refuses("timing", timing=None)
    refuses("grade", grade=None)


def test_shape_must_fit_timing_table():
    for timing, shapes in SHAPES_BY_TIMING.items():
        grade = 2
        for shape in V.SHAPES:
            f = MR.with_(timing=timing, shape=shape, grade=grade, condition=None)
            if shape in shapes:
                validate(f)
            else:
                err = refuses("shape", f)
                assert set(err.allowed) == set(shapes)
    assert set(SHAPES_BY_TIMING) == set(V.TIMINGS)


def test_every_timing_shape_pair_annotated_in_circor_is_accepted():
    # all combinations present in CirCor's expert annotations (training set headers)
    seen = [("early-systolic", "decrescendo"), ("early-systolic", "plateau"), ("holosystolic", "crescendo"),
            ("holosystolic", "decrescendo"), ("holosystolic", "diamond"), ("holosystolic", "plateau"),
            ("late-systolic", "diamond"), ("mid-systolic", "diamond"), ("mid-systolic", "plateau"),
            ("early-diastolic", "decrescendo")]
    for timing, shape in seen:
        validate(MR.with_(timing=timing, shape=shape, grade=1))


def test_condition_must_produce_the_timing():
    err = refuses("condition", condition="aortic stenosis", timing="early-diastolic", shape="decrescendo", grade=2)
    assert "aortic regurgitation" in err.allowed
    refuses("condition", condition="normal")  # a murmur with "normal"
    refuses("condition", condition="innocent murmur", timing="holodiastolic", shape="decrescendo", grade=2)


def test_a_murmur_free_condition_is_refused_unless_it_may_present_without_one():
    err = refuses("condition", V.Findings(), condition="aortic stenosis")
    assert "always has a murmur" in str(err) and "murmur is 'absent'" in str(err)
    murmur_free = {c for c, p in CONDITION_PROFILES.items() if not p.has_murmur or p.murmur_optional}
    assert murmur_free == {"normal", "atrial septal defect", "mitral valve prolapse"} == set(err.allowed)
    for condition in V.CONDITIONS:
        if condition in murmur_free:  # a click or a fixed split S2 alone (the simulator draws these too)
            validate(V.Findings(condition=condition))
        else:
            refuses("condition", V.Findings(), condition=condition)
    assert "has no murmur" in str(refuses("condition", condition="normal"))


def test_a_condition_alone_gives_its_typical_findings():
    for condition in V.CONDITIONS:
        assert validate_dict({"condition": condition}) == default_graph().typical_findings(condition)
    assert validate_dict({"condition": "AS"}).timing == "mid-systolic"  # aliases as anywhere else


def test_fields_beside_a_condition_override_its_typical_findings():
    typical = default_graph().typical_findings("aortic stenosis")
    assert validate_dict({"condition": "aortic stenosis", "grade": 5}) == typical.with_(grade=5)
    child = validate_dict({"condition": "aortic stenosis", "age_group": "child", "heart_rate": 100})
    assert (child.heart_rate, child.height_cm, child.weight_kg) == (100.0, *AGE_DEFAULTS["child"][1:])
    # another timing takes the condition's first shape that fits it, not a typical one it cannot have
    rumble = validate_dict({"condition": "mitral regurgitation", "timing": "mid-diastolic"})
    assert (rumble.shape, rumble.grade, rumble.pitch) == ("decrescendo", 3, "high")
    click = validate_dict({"condition": "mitral valve prolapse", "murmur": "absent"})
    assert click.murmur == "absent" and click.timing is None and click.radiation == "none"
    assert click.extra_sounds == ("midsystolic click",)
    with pytest.raises(FindingsError) as info:
        validate_dict({"condition": "aortic stenosis", "murmur": "absent"})
    assert info.value.field == "condition" and "always has a murmur" in str(info.value)
    with pytest.raises(FindingsError) as info:
        validate_dict({"condition": "pulmonary stenosis", "timing": "early-diastolic"})
    assert info.value.field == "condition" and "early-diastolic" in str(info.value)
    with pytest.raises(FindingsError) as info:  # a given grade is checked against the typical timing's scale
        validate_dict({"condition": "aortic regurgitation", "grade": 5})
    assert info.value.field == "grade"


def test_continuous_only_with_conditions_that_have_it():
    cont = MR.with_(timing="continuous", shape="diamond", location="PV", radiation="back")
    allowed = {c for c in V.CONDITIONS if "continuous" in CONDITION_PROFILES[c].phases}
    assert allowed == {"patent ductus arteriosus", "coarctation of the aorta"}
    for condition in V.CONDITIONS:
        if condition in allowed:
            validate(cont.with_(condition=condition))
        else:
            err = refuses("condition", cont, condition=condition)
            assert set(err.allowed) == allowed


@pytest.mark.parametrize("field, value", [
    ("heart_rate", 20), ("heart_rate", 260), ("heart_rate", float("nan")), ("heart_rate", "fast"),
    ("height_cm", 5), ("height_cm", 400), ("weight_kg", 0.1), ("weight_kg", 900),
])
def test_numbers_out_of_range(field, value):
    err = refuses(field, **{field: value})
    assert ".." in str(err.allowed)


def test_pregnancy_rules():
    adult = MR.with_(age_group="adult", sex="female")
    assert validate(adult.with_(pregnant=True)).pregnant
    refuses("pregnant", adult, pregnant=True, sex="male")
    for age in ("neonate", "infant", "child"):
        refuses("pregnant", adult, pregnant=True, age_group=age)


def test_validate_dict_converts_form_strings():
    f = validate_dict({"murmur": "Present", "timing": "Holosystolic", "shape": "", "grade": "3",
                       "location": "MV", "radiation": "nan", "extra_sounds": "S3, S4",
                       "heart_rate": "88", "height_cm": "120.5", "weight_kg": "", "pregnant": "false",
                       "condition": "none"})
    assert (f.murmur, f.timing, f.shape, f.grade, f.radiation, f.extra_sounds) == (
        "present", "holosystolic", None, 3, "none", ("S3", "S4"))
    assert (f.heart_rate, f.height_cm, f.weight_kg, f.pregnant, f.condition) == (88.0, 120.5, None, False, None)


def test_validate_dict_refusals_name_the_field():
    for d, field in (({"colour": "red"}, "colour"), ({"heart_rate": "eighty"}, "heart_rate"),
                     ({"pregnant": "maybe"}, "pregnant"), ({"grade": "2"}, "grade")):
        with pytest.raises(FindingsError) as info:
            validate_dict(d)
        assert info.value.field == field


def test_validation_is_deterministic_and_leaves_input_untouched():
    raw = MR.with_(timing="Holosystolic", grade="III/VI")
    assert validate(raw) == validate(raw)
    assert raw.timing == "Holosystolic" and raw.grade == "III/VI"
