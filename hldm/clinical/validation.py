"""Validation of clinical findings: one place that refuses what a clinician could not mean.

`validate(findings)` returns a normalised copy (canonical spellings, int grade, float
numbers, sorted extra sounds) or raises `FindingsError` naming the field, the value and
the allowed values. Nothing is changed in place (`Findings` is frozen).
`validate_dict(d)` is the entry for partial findings (Python API, CLI, app, simulator): a
condition given with few or no other fields starts from its typical findings.

Rules, each from auscultation physiology:
- every categorical value must be in the vocabulary (aliases such as CirCor's
  "Holosystolic", "III/VI", "Low" are accepted and normalised);
- Levine grade 1..6 for systolic and continuous murmurs, 1..4 for diastolic ones; a
  written scale ("II/VI") must match the timing's scale;
- murmur "absent" carries no timing, shape, grade, pitch, quality or radiation;
  murmur "present" needs at least a timing and a grade;
- the shape must be possible for the timing (`SHAPES_BY_TIMING` below);
- a condition must have a murmur of the given phase (`ConditionProfile.phases`): e.g.
  aortic stenosis refuses a diastolic murmur, "continuous" is only accepted for the
  conditions that produce one (patent ductus arteriosus; coarctation collaterals),
  and "normal" refuses any murmur; a condition that always has a murmur refuses
  murmur "absent" (only those that may present with a click or a fixed split S2
  alone, `ConditionProfile.murmur_optional`, accept it);
- heart rate, height and weight in the product's ranges; pregnancy only for a female
  who is at least an adolescent.
"""
from __future__ import annotations

import math
from dataclasses import fields

from hldm.clinical import vocabulary as V
from hldm.clinical.knowledge_graph import AGE_DEFAULTS, CONDITION_PROFILES, default_graph

# Which envelope shapes each timing can take. Only shapes without a haemodynamic
# mechanism are refused; everything seen in CirCor's expert annotations is allowed.
SHAPES_BY_TIMING: dict[str, tuple[str, ...]] = {
    # Early systolic murmurs (acute MR, small muscular VSD, innocent) fade or stay flat; a
    # crescendo cut off in early systole has no mechanism.
    "early-systolic": ("decrescendo", "diamond", "plateau"),
    # Ejection murmurs rise and fall with the ejection flow (late-peaking when severe); a
    # murmur loudest at its mid-systolic onset and fading is not an ejection pattern.
    "mid-systolic": ("diamond", "plateau", "crescendo"),
    # Late systolic murmurs (MVP, papillary muscle dysfunction) grow into S2.
    "late-systolic": ("crescendo", "diamond", "plateau"),
    # Regurgitant holosystolic murmurs are usually plateau, but acute MR decrescendo, MVP
    # crescendo and diamond variants all occur (and all four are in CirCor).
    "holosystolic": ("plateau", "diamond", "decrescendo", "crescendo"),
    # Regurgitant early diastolic murmurs (AR, high-pressure PR) start at S2 and fade;
    # low-pressure PR starts after a delay and is crescendo-decrescendo.
    "early-diastolic": ("decrescendo", "diamond"),
    # Mid-diastolic rumbles follow the filling flow: decrescendo after early filling,
    # crescendo when atrial contraction accentuates it, diamond for flow rumbles.
    "mid-diastolic": ("decrescendo", "crescendo", "diamond"),
    # A murmur through all of diastole fades with the pressure gradient or stays level.
    "holodiastolic": ("decrescendo", "plateau"),
    # Continuous murmurs peak around S2 (machinery: diamond) or stay level (plateau); a
    # pure crescendo or decrescendo would end at the loudest point.
    "continuous": ("diamond", "plateau"),
}

# Ages at which pregnancy is possible (CirCor records it; the app offers it).
PREGNANCY_AGE_GROUPS = ("adolescent", "young adult", "adult", "older adult")

_MURMUR_FIELDS = ("timing", "shape", "grade", "pitch", "quality")
_CHOICES = {
    "murmur": V.MURMUR_STATUS, "timing": V.TIMINGS, "shape": V.SHAPES, "pitch": V.PITCHES,
    "quality": V.QUALITIES, "location": V.LOCATIONS, "radiation": V.RADIATIONS,
    "extra_sounds": V.EXTRA_SOUNDS, "age_group": V.AGE_GROUPS, "sex": V.SEXES,
    "condition": V.CONDITIONS,
}
_EMPTY = ("", "nan", "none", "null", "n/a", "-")  # how forms and CirCor headers write "not set"
_TRUE = ("true", "yes", "1", "y")
_FALSE = ("false", "no", "0", "n", "")


class FindingsError(ValueError):
    """A findings value that cannot be used: `.field` names it, `.allowed` lists what can."""

    def __init__(self, field: str, message: str, allowed=None):
        self.field = field
        self.allowed = allowed
        text = f"{field}: {message}"
        if allowed is not None:
            shown = ", ".join(map(str, allowed)) if isinstance(allowed, (tuple, list)) else str(allowed)
            text += f"; allowed: {shown}"
        super().__init__(text)


def canonical(field: str, value) -> str:
    """The canonical vocabulary value for `value` in a categorical `field`, or FindingsError."""
    choices = _CHOICES[field]
    if not isinstance(value, str):
        raise FindingsError(field, f"expected text, got {value!r}", choices)
    key = V.value_key(value)
    lookup = {V.value_key(c): c for c in choices}
    lookup.update({V.value_key(a): c for a, c in V.ALIASES.get(field, {}).items()})
    if key not in lookup:
        raise FindingsError(field, f"unknown value {value!r}", choices)
    return lookup[key]


def _optional(field: str, value):
    """None for unset values (None, "", "nan", ...); else the canonical value."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _EMPTY):
        return None
    return canonical(field, value)


def _parse_grade(value, timing: str | None) -> int | None:
    """Levine grade from 3, "3", "III", "III/VI" or "3/6"; the scale must match the timing."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _EMPTY):
        return None
    top = V.max_grade(timing) if timing else V.MAX_GRADE_SYSTOLIC
    allowed = f"1..{top} ({'I-IV diastolic' if top == V.MAX_GRADE_DIASTOLIC else 'I-VI'})"
    if isinstance(value, bool):
        raise FindingsError("grade", f"expected a Levine grade, got {value!r}", allowed)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        num, _, scale = value.strip().upper().replace(" ", "").partition("/")
        grade, scale_top = _grade_number(num, value, allowed), _grade_number(scale, value, allowed) if scale else None
        if scale_top not in (None, V.MAX_GRADE_SYSTOLIC, V.MAX_GRADE_DIASTOLIC):
            raise FindingsError("grade", f"{value!r}: Levine grades are out of VI (systolic) or IV (diastolic)",
                                allowed)
        if scale_top is not None and timing and scale_top != top:
            raise FindingsError("grade", f"{value!r} uses the /{V.ROMAN[scale_top - 1]} scale but a "
                                f"{V.timing_phase(timing)} murmur is graded out of {V.ROMAN[top - 1]}", allowed)
        value = grade
    if not isinstance(value, int):
        raise FindingsError("grade", f"expected a Levine grade, got {value!r}", allowed)
    if not 1 <= value <= top:
        phase = V.timing_phase(timing) if timing else "systolic"
        raise FindingsError("grade", f"{value} is outside the Levine scale for a {phase} murmur", allowed)
    return value


def _grade_number(text: str, original, allowed) -> int:
    if text.isdigit():
        return int(text)
    if text in V.ROMAN:
        return V.ROMAN.index(text) + 1
    raise FindingsError("grade", f"cannot read a Levine grade from {original!r}", allowed)


def _number(field: str, value, lo: float, hi: float, optional: bool) -> float | None:
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _EMPTY)):
        return None
    allowed = f"{lo:g}..{hi:g}"
    if isinstance(value, bool):
        raise FindingsError(field, f"expected a number, got {value!r}", allowed)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FindingsError(field, f"expected a number, got {value!r}", allowed) from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise FindingsError(field, f"{value!r} is out of range", allowed)
    return number


def _bool(field: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if value in (0, 1):
        return bool(value)
    raise FindingsError(field, f"expected true or false, got {value!r}", ("true", "false"))


def _extra_sounds(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # "S3, S4" / "S3+S4" from a form or a CirCor-style header
        value = [] if value.strip().lower() in _EMPTY else value.replace("+", ",").split(",")
    sounds = {canonical("extra_sounds", s.strip() if isinstance(s, str) else s) for s in value}
    return tuple(s for s in V.EXTRA_SOUNDS if s in sounds)


def validate(findings: V.Findings) -> V.Findings:
    """Normalised copy of `findings`, or FindingsError naming the first bad field."""
    f = findings
    murmur = canonical("murmur", f.murmur)
    timing = _optional("timing", f.timing)
    shape = _optional("shape", f.shape)
    grade = _parse_grade(f.grade, timing)
    pitch = _optional("pitch", f.pitch)
    quality = _optional("quality", f.quality)
    location = canonical("location", f.location)
    radiation = _optional("radiation", f.radiation) or "none"
    extra_sounds = _extra_sounds(f.extra_sounds)
    condition = _optional("condition", f.condition)
    age_group = canonical("age_group", f.age_group)
    sex = canonical("sex", f.sex)
    heart_rate = _number("heart_rate", f.heart_rate, *V.HEART_RATE_RANGE, optional=False)
    height = _number("height_cm", f.height_cm, *V.HEIGHT_RANGE_CM, optional=True)
    weight = _number("weight_kg", f.weight_kg, *V.WEIGHT_RANGE_KG, optional=True)
    pregnant = _bool("pregnant", f.pregnant)

    values = dict(timing=timing, shape=shape, grade=grade, pitch=pitch, quality=quality)
    if condition is not None:  # first: "aortic stenosis, no murmur" is about the condition, not the timing
        _check_condition(condition, murmur, timing)
    if murmur == "absent":
        for name in _MURMUR_FIELDS:
            if values[name] is not None:
                raise FindingsError(name, f"{values[name]!r} given but murmur is 'absent'; "
                                    "set murmur to 'present' or leave it empty", ("none",))
        if radiation != "none":
            raise FindingsError("radiation", f"{radiation!r} given but murmur is 'absent'", ("none",))
    else:
        if timing is None:
            raise FindingsError("timing", "a murmur that is 'present' needs a timing", V.TIMINGS)
        if grade is None:
            raise FindingsError("grade", "a murmur that is 'present' needs a Levine grade",
                                f"1..{V.max_grade(timing)}")
        if shape is not None and shape not in SHAPES_BY_TIMING[timing]:
            raise FindingsError("shape", f"{shape!r} is not a possible envelope for a {timing} murmur",
                                SHAPES_BY_TIMING[timing])
    if pregnant and sex != "female":
        raise FindingsError("pregnant", f"pregnancy given for sex {sex!r}", ("false",))
    if pregnant and age_group not in PREGNANCY_AGE_GROUPS:
        raise FindingsError("pregnant", f"pregnancy given for age group {age_group!r}; "
                            f"pregnancy is possible for {', '.join(PREGNANCY_AGE_GROUPS)}", ("false",))
    return V.Findings(murmur=murmur, timing=timing, shape=shape, grade=grade, pitch=pitch,
                      quality=quality, location=location, radiation=radiation,
                      extra_sounds=extra_sounds, condition=condition, heart_rate=heart_rate,
                      age_group=age_group, sex=sex, height_cm=height, weight_kg=weight,
                      pregnant=pregnant)


def _check_condition(condition: str, murmur: str, timing: str | None) -> None:
    profile = CONDITION_PROFILES[condition]
    if murmur == "absent" and profile.has_murmur and not profile.murmur_optional:
        fitting = tuple(c for c, p in CONDITION_PROFILES.items() if not p.has_murmur or p.murmur_optional)
        raise FindingsError("condition", f"{condition!r} always has a murmur, but murmur is 'absent'; set murmur "
                            "to 'present' or change the condition", fitting)
    phase = V.timing_phase(timing) if timing else None
    # a present murmur without a timing is refused for the missing timing, after this check
    if murmur == "absent" or (profile.phases and phase in (None, *profile.phases)):
        return
    fitting = tuple(c for c, p in CONDITION_PROFILES.items() if (phase in p.phases if phase else p.phases))
    article = "an" if str(timing)[:1] in "aeiou" else "a"
    reason = ("has no murmur, but murmur is 'present'" if not profile.phases else
              f"does not produce {article} {timing} murmur (its murmurs are {' or '.join(profile.phases)})")
    raise FindingsError("condition", f"{condition!r} {reason}", fitting)


def validate_dict(d: dict) -> V.Findings:
    """Findings from a dict of strings (app form, CLI flags, API calls): numbers and booleans converted.

    Unknown keys are refused. Missing keys take the `Findings` defaults, or, when a condition
    is given, its typical findings (`_over_typical`): {"condition": "aortic stenosis"} is the
    textbook aortic stenosis murmur, {"condition": "aortic stenosis", "grade": 5} the same at V/VI.
    """
    known = tuple(f.name for f in fields(V.Findings))
    for key in d:
        if key not in known:
            raise FindingsError(str(key), "unknown findings field", known)
    condition = _optional("condition", d.get("condition"))
    # validate itself reads strings: "3", "III/VI", "true", "S3, S4"
    return validate(V.Findings(**(_over_typical(condition, d) if condition else d)))


def _over_typical(condition: str, d: dict) -> dict:
    """The fields of `d` over `condition`'s typical findings (knowledge graph).

    Typical values give way to the given ones they would contradict: with murmur "absent"
    the typical murmur is dropped, with another timing the shape becomes the profile's
    first that fits it (else none), and with another age group the heart rate, height
    and weight become that age's typical ones.
    """
    typical = default_graph().typical_findings(condition).to_dict()
    timing, age = _optional("timing", d.get("timing")), _optional("age_group", d.get("age_group"))
    if "murmur" in d and canonical("murmur", d["murmur"]) == "absent":
        typical.update(dict.fromkeys(_MURMUR_FIELDS), radiation="none")
    elif timing is not None and "shape" not in d:
        fits = SHAPES_BY_TIMING[timing]
        typical["shape"] = next((s for s in CONDITION_PROFILES[condition].shapes if s in fits), None)
    if age is not None:
        typical.update(zip(("heart_rate", "height_cm", "weight_kg"), AGE_DEFAULTS[age]))
    return {**typical, **d}
