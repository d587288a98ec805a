"""The three clinical prompts of H-LDM, and the parser back from an edited L2.

- L1, demographics: "Child, female, 120 cm, 25 kg, not pregnant, heart rate 88 bpm."
- L2, the auscultation finding: "Grade III/VI holosystolic plateau murmur, high-pitched,
  blowing, loudest at the mitral area, radiating to the axilla." or
  "No murmur; normal S1 and S2."
- L3, the differential read off the knowledge graph: "Consistent with mitral regurgitation
  or ventricular septal defect; echocardiography recommended."

All three are pure functions of validated findings (deterministic). `parse_l2` reads an
L2 written by `build_prompts` or edited by hand (any case, Roman or Arabic grades, bedside
synonyms); `findings_from_prompt` applies it to the rest of a patient's findings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from hldm.clinical import vocabulary as V
from hldm.clinical.knowledge_graph import default_graph
from hldm.clinical.validation import FindingsError, validate

# L3 names the runner-up too when it scores at least this fraction of the best match.
DIFFERENTIAL_RATIO = 0.7

_ARTICLE = {"ejection click": "an", "opening snap": "an", "S3": "an", "S4": "an"}
_PROSE_CONDITION = {"innocent murmur": "an innocent murmur"}
_MURMUR_FIELDS = ("timing", "shape", "grade", "pitch", "quality")


@dataclass(frozen=True)
class Prompts:
    """L1 demographics, L2 murmur description, L3 differential diagnosis (plain English)."""

    l1: str
    l2: str
    l3: str


def build_prompts(findings: V.Findings) -> Prompts:
    """L1/L2/L3 for findings (validated first: bad values raise FindingsError)."""
    f = validate(findings)
    return Prompts(l1=_l1(f), l2=_l2(f), l3=_l3(f))


def _number(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _l1(f: V.Findings) -> str:
    parts = [f.age_group.capitalize(), f.sex]
    if f.height_cm is not None:
        parts.append(f"{_number(f.height_cm)} cm")
    if f.weight_kg is not None:
        parts.append(f"{_number(f.weight_kg)} kg")
    if f.sex == "female":
        parts.append("pregnant" if f.pregnant else "not pregnant")
    parts.append(f"heart rate {f.heart_rate:.0f} bpm")
    return ", ".join(parts) + "."


def _l2(f: V.Findings) -> str:
    if f.murmur == "absent":
        return "No murmur; " + (_join(list(f.extra_sounds)) if f.extra_sounds else "normal S1 and S2") + "."
    head = " ".join(w for w in (f"Grade {V.grade_label(f.grade, f.timing)}", f.timing,
                                V.SHAPE_NAMES.get(f.shape, f.shape), "murmur") if w)
    parts = [head]
    if f.pitch:
        parts.append(f"{f.pitch}-pitched")
    if f.quality:
        parts.append(f.quality)
    parts.append(f"loudest at the {V.LOCATION_NAMES[f.location]}")
    parts.append("without radiation" if f.radiation == "none" else f"radiating to {V.RADIATION_NAMES[f.radiation]}")
    text = ", ".join(parts)
    if f.extra_sounds:
        text += "; with " + _join([f"{_ARTICLE.get(s, 'a')} {s}" for s in f.extra_sounds])
    return text + "."


def _l3(f: V.Findings) -> str:
    ranking = default_graph().rank_conditions(f)
    (best, best_score), (second, second_score) = ranking[0], ranking[1]
    names = [best]
    if second_score > 0 and second_score >= DIFFERENTIAL_RATIO * best_score:
        names.append(second)
    if f.condition is not None:  # the clinician's stated condition leads; the graph adds one alternative
        names = [f.condition] + [n for n in names if n != f.condition][:1]
    if len(names) > 1:
        names = [n for n in names if n != "normal"]
    if names == ["normal"]:
        return "Normal heart sounds; no structural disease suggested."
    if names == ["innocent murmur"]:
        return "Consistent with an innocent murmur; no structural disease suggested."
    return f"Consistent with {' or '.join(_PROSE_CONDITION.get(n, n) for n in names)}; echocardiography recommended."


# ---- parsing an edited L2 ---------------------------------------------------------------

_ABSENT = re.compile(r"\bno\s+(?:\w+\s+)?murmurs?\b|\bmurmurs?\s+(?:is\s+|are\s+)?absent\b"
                     r"|\bwithout\s+(?:a\s+|any\s+)?murmurs?\b|\bnormal\s+heart\s+sounds\b")
_NO_RADIATION = re.compile(r"\b(?:without|no)\s+radiation\b|\bnon[\s-]*radiating\b|\bnot\s+radiating\b"
                           r"|\bdoes\s+not\s+radiate\b|\blocali[sz]ed\b")
_RADIATION = re.compile(r"\bradiat\w*\s+(?:to|into|towards?)\s+(?P<where>[^,;.]*)")
_NUM = r"(?:[ivx]+|\d+)"
_GRADE = re.compile(rf"\bgrade\s*(?P<num>{_NUM})(?:\s*(?:/|out\s+of|of)\s*(?P<den>{_NUM}))?\b"
                    rf"|\b(?P<num2>{_NUM})\s*/\s*(?P<den2>vi|iv|6|4)\b")
_PITCH = re.compile(r"\b(?P<p>high|medium|mid|low)[\s-]*(?:pitched|pitch|frequency)\b"
                    r"|\bpitch\s*(?:is\s*|:\s*)?(?P<p2>high|medium|mid|low)\b")


def _phrase_pattern(phrases) -> re.Pattern:
    """Whole-word alternation of phrases, longest first; spaces/hyphens in a phrase are optional."""
    parts = []
    for phrase in sorted(set(phrases), key=lambda s: (-len(s), s)):
        words = [re.escape(w) for w in re.split(r"[\s\-]+", phrase.lower())]
        parts.append(r"[\s\-]*".join(words))
    return re.compile(r"(?<![\w'])(?:" + "|".join(parts) + r")(?![\w'])")


def _lexicon(field: str, values: tuple[str, ...]) -> tuple[re.Pattern, dict[str, str]]:
    lookup = {V.value_key(v): v for v in values}
    lookup.update({V.value_key(a): c for a, c in V.ALIASES.get(field, {}).items()})
    phrases = list(values) + list(V.ALIASES.get(field, {}))
    return _phrase_pattern(phrases), lookup


_LEXICONS = {field: _lexicon(field, values) for field, values in (
    ("timing", V.TIMINGS), ("shape", V.SHAPES), ("quality", V.QUALITIES), ("location", V.LOCATIONS),
    ("radiation", V.RADIATIONS), ("extra_sounds", V.EXTRA_SOUNDS))}


def _find(field: str, text: str) -> tuple[list[str], str]:
    """Canonical values of `field` mentioned in text (in order) and the text with them blanked."""
    pattern, lookup = _LEXICONS[field]
    found = [lookup[V.value_key(m.group(0))] for m in pattern.finditer(text)]
    return found, pattern.sub(" ", text)


def _single(field: str, values: list, allowed) -> object:
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        raise FindingsError(field, f"contradictory values {distinct} in the text; give one", allowed)
    return distinct[0] if distinct else None


def _grade_value(text: str) -> int:
    return int(text) if text.isdigit() else (V.ROMAN.index(text.upper()) + 1 if text.upper() in V.ROMAN else -1)


def parse_l2(text: str) -> dict:
    """Findings fields named in an L2 text: murmur, timing, shape, grade, pitch, quality,
    location, radiation, extra_sounds (always given: the L2 lists every extra sound).

    Tolerates case, "grade 4/6" or "IV/VI", and bedside synonyms ("pansystolic",
    "crescendo-decrescendo", "ejection", "apex", "left upper sternal border", ...). Raises
    FindingsError for text with no finding in it, or with two values for one field.
    """
    if not isinstance(text, str) or not text.strip():
        raise FindingsError("l2", f"expected a murmur description, got {text!r}",
                            ("e.g. 'Grade II/VI mid-systolic murmur at the pulmonic area'", "'No murmur'"))
    t = re.sub(r"[\u2010-\u2015]", "-", text.lower())
    t = re.sub(r"\s+", " ", t)
    extras, t = _find("extra_sounds", t)  # first, so "midsystolic click" is not read as a timing
    found: dict = {}
    absent = bool(_ABSENT.search(t))
    t = _ABSENT.sub(" ", t)

    radiations = []
    if _NO_RADIATION.search(t):
        radiations.append("none")
        t = _NO_RADIATION.sub(" ", t)
    for m in _RADIATION.finditer(t):
        values, _ = _find("radiation", m.group("where"))
        if not values:
            raise FindingsError("radiation", f"cannot read where {m.group(0)!r} radiates", V.RADIATIONS)
        radiations += values
    t = _RADIATION.sub(" ", t)  # "apex" after "radiating to" is a radiation, not the location
    found["radiation"] = _single("radiation", radiations, V.RADIATIONS)

    for field, allowed in (("timing", V.TIMINGS), ("shape", V.SHAPES), ("quality", V.QUALITIES),
                           ("location", V.LOCATIONS)):
        values, _ = _find(field, t)  # not blanked: "systolic ejection" names a timing and a shape
        found[field] = _single(field, values, allowed)
    pitches = [V.ALIASES["pitch"].get(p, p) for m in _PITCH.finditer(t) for p in (m.group("p") or m.group("p2"),)]
    found["pitch"] = _single("pitch", pitches, V.PITCHES)

    grades, scales = [], []
    for m in _GRADE.finditer(t):
        grades.append(_grade_value(m.group("num") or m.group("num2")))
        if m.group("den") or m.group("den2"):
            scales.append(_grade_value(m.group("den") or m.group("den2")))
    grade_allowed = "I-VI systolic, I-IV diastolic (e.g. 'grade III/VI', 'grade 2/4')"
    found["grade"] = _single("grade", grades, grade_allowed)
    if found["grade"] == -1:
        raise FindingsError("grade", "cannot read the Levine grade", grade_allowed)
    scale = _single("grade", scales, grade_allowed)
    if scale is not None and scale not in (V.MAX_GRADE_SYSTOLIC, V.MAX_GRADE_DIASTOLIC):
        raise FindingsError("grade", f"grade written out of {scale}", grade_allowed)
    if scale is not None and found["timing"] and scale != V.max_grade(found["timing"]):
        raise FindingsError("grade", f"a {found['timing']} murmur is graded out of "
                            f"{V.ROMAN[V.max_grade(found['timing']) - 1]}, not {V.ROMAN[scale - 1]}", grade_allowed)

    result = {k: v for k, v in found.items() if v is not None}
    murmur_fields = [k for k in _MURMUR_FIELDS if k in result]
    if absent:
        if murmur_fields or result.get("radiation", "none") != "none":
            field = (murmur_fields or ["radiation"])[0]
            raise FindingsError(field, f"{result[field]!r} given together with 'no murmur'", ("none",))
        result = {"murmur": "absent", "radiation": "none",  # "no murmur at the apex": where it was recorded
                  **({"location": result["location"]} if "location" in result else {})}
    elif murmur_fields or "location" in result or re.search(r"\bmurmurs?\b", t):
        result["murmur"] = "present"
    elif not extras:
        raise FindingsError("l2", f"no finding recognised in {text!r}",
                            ("a murmur description (grade, timing, shape, pitch, quality, location, "
                             "radiation)", "'No murmur'", *V.EXTRA_SOUNDS))
    result["extra_sounds"] = tuple(s for s in V.EXTRA_SOUNDS if s in extras)
    return result


def findings_from_prompt(l2_text: str, base: V.Findings) -> V.Findings:
    """`base` (demographics, condition, ...) with the murmur fields of an edited L2, validated.

    "No murmur" clears every murmur field; fields the text does not mention keep base's
    values. Raises FindingsError for unreadable or contradictory text, or findings that
    fail validation (e.g. a diastolic grade V, a condition that contradicts the timing).
    """
    changes = parse_l2(l2_text)
    if changes.get("murmur") == "absent":
        changes.update({name: None for name in _MURMUR_FIELDS})
    return validate(base.with_(**changes))
