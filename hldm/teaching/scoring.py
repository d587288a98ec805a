"""Scoring a case, MurmurQuiz style: four questions, each scored 0..1; pure functions, no model.

    1. category   normal / innocent / pathological
    2. findings   timing, shape, grade, location, pitch, quality, extra sounds (the share right)
    3. description  which written description (an L2 sentence among DESCRIPTION_CHOICES) fits
    4. diagnosis  one of the 17 conditions

`score_case(truth, answer)` gives a `Scored` (per question and per attribute, with the wrong
pairs as confusions); `confusions(...)` ranks what a learner mixes up over many answers.
Contrast drills (two clips, one finding apart) are scored by `score_drill`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from hldm.clinical import vocabulary as V
from hldm.clinical.prompts import build_prompts
from hldm.clinical.validation import FindingsError, validate_dict

QUESTIONS = ("category", "findings", "description", "diagnosis")
CATEGORIES = ("normal", "innocent", "pathological")
# The findings of question 2, in the order the page asks them.
FINDING_ATTRIBUTES = ("timing", "shape", "grade", "location", "pitch", "quality", "extra_sounds")
NONE = "none"  # the answer "no murmur" to a murmur attribute
DESCRIPTION_CHOICES = 4
# Which findings a wrong description changes, tried in this order (a murmur attribute when there is a
# murmur): each distractor differs from the truth in one or two findings a learner can hear.
DISTRACTOR_EDITS = ("timing", "grade", "shape", "pitch", "quality", "location", "murmur")


def category(findings: Mapping) -> str:
    """normal / innocent / pathological for a findings dict; without a condition, a murmur counts as
    pathological (a learner is taught to call a murmur innocent only when it has the innocent features)."""
    cond = findings.get("condition")
    if cond == "normal" or (cond is None and findings.get("murmur") != "present"):
        return "normal"
    return "innocent" if cond == "innocent murmur" else "pathological"


def truth_value(findings: Mapping, attribute: str):
    """The answer key of one finding: NONE for a murmur attribute without a murmur, extra sounds as a
    sorted tuple."""
    if attribute == "extra_sounds":
        return tuple(sorted(findings.get("extra_sounds") or ()))
    if attribute in ("timing", "shape", "grade", "pitch", "quality") and findings.get("murmur") != "present":
        return NONE
    value = findings.get(attribute)
    return int(value) if attribute == "grade" and value is not None else value


def given_value(answer: Mapping, attribute: str):
    """A learner's answer in the answer key's form (None: not answered)."""
    value = answer.get(attribute)
    if attribute == "extra_sounds":
        return tuple(sorted(value or ()))
    if value in (None, ""):
        return None
    if attribute == "grade" and value != NONE:
        return int(value)
    return value


def show(value, attribute: str = "") -> str:
    """How a finding reads in feedback and in the confusion list."""
    if value is None:
        return "no answer"
    if attribute == "extra_sounds":
        return ", ".join(value) if value else "no extra sounds"
    if attribute == "grade" and value != NONE:
        return f"grade {V.ROMAN[int(value) - 1]}"
    return str(value)


@dataclass(frozen=True)
class Scored:
    """One case's result: per question 0..1, per attribute right or wrong, and the wrong (truth, given) pairs."""

    questions: dict[str, float]
    attributes: dict[str, bool]
    confusions: list[tuple[str, str, str]] = field(default_factory=list)  # (attribute, truth, given) shown

    @property
    def total(self) -> float:
        """Mean over the questions asked, 0..1."""
        return float(np.mean(list(self.questions.values())))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Scored":
        return cls(dict(d["questions"]), dict(d["attributes"]), [tuple(c) for c in d.get("confusions", [])])


def description(findings: Mapping) -> str:
    """The L2 sentence of a findings dict: what question 3 offers."""
    return build_prompts(validate_dict(dict(findings))).l2


def description_choices(findings: Mapping, seed: int) -> list[str]:
    """DESCRIPTION_CHOICES distinct L2 sentences, the true one among them at a position fixed by `seed`;
    the others are the truth with one finding changed (DISTRACTOR_EDITS), so the right one must be heard."""
    rng = np.random.default_rng(seed)
    truth = description(findings)
    out = [truth]
    for attribute in DISTRACTOR_EDITS:
        if len(out) == DESCRIPTION_CHOICES:
            break
        for value in rng.permutation(_alternatives(findings, attribute)).tolist():
            try:
                text = description({**findings, **_edit(findings, attribute, value)})
            except FindingsError:
                continue  # e.g. grade V for a diastolic murmur: not a description anyone could hear
            if text not in out:
                out.append(text)
                break
    rng.shuffle(out)
    return out


def _alternatives(findings: Mapping, attribute: str) -> list:
    present = findings.get("murmur") == "present"
    if attribute == "murmur":
        return ["absent" if present else "present"]
    if not present and attribute != "location":
        return []
    options = {"timing": V.TIMINGS, "grade": range(1, 7), "shape": V.SHAPES, "pitch": V.PITCHES,
               "quality": V.QUALITIES, "location": V.LOCATIONS}[attribute]
    return [v for v in options if v != findings.get(attribute)]


def _edit(findings: Mapping, attribute: str, value) -> dict:
    if attribute != "murmur":
        return {attribute: int(value) if attribute == "grade" else value}
    if value == "absent":
        return {"murmur": "absent", "condition": None, **{k: None for k in ("timing", "shape", "grade", "pitch",
                                                                            "quality")}}
    return {"murmur": "present", "condition": None, "timing": "mid-systolic", "shape": "diamond", "grade": 2,
            "pitch": "medium", "quality": "blowing"}


def score_case(truth: Mapping, answer: Mapping) -> Scored:
    """Score a learner's `answer` (category, the FINDING_ATTRIBUTES, description, diagnosis; missing = not
    answered, wrong) against the `truth` findings dict."""
    attributes, wrong = {}, []
    for attribute in FINDING_ATTRIBUTES:
        right, given = truth_value(truth, attribute), given_value(answer, attribute)
        attributes[attribute] = given == right
        if given != right:
            wrong.append((attribute, show(right, attribute), show(given, attribute)))
    cat_right, cat_given = category(truth), answer.get("category") or None
    cond_right, cond_given = truth.get("condition"), answer.get("diagnosis") or None
    for name, right, given in (("category", cat_right, cat_given), ("diagnosis", cond_right, cond_given)):
        if given != right:
            wrong.insert(0, (name, show(right), show(given)))
    questions = {"category": float(cat_given == cat_right),
                 "findings": float(np.mean(list(attributes.values()))),
                 "description": float(answer.get("description") == description(truth)),
                 "diagnosis": float(cond_given == cond_right) if cond_right else 1.0}
    return Scored(questions, attributes, wrong)


def confusions(results: Iterable[Scored], top: int = 5) -> list[tuple[str, int]]:
    """The mix-ups to work on, most frequent first: ("timing: mid-systolic vs holosystolic", count),
    one entry per unordered pair so "A for B" and "B for A" count together."""
    counts: Counter = Counter()
    for r in results:
        for attribute, right, given in r.confusions:
            if given == "no answer":
                continue  # a skipped question is not a confusion
            a, b = sorted((right, given))
            counts[f"{attribute}: {a} vs {b}"] += 1
    return counts.most_common(top)


def summary(results: Iterable[Scored]) -> dict:
    """Accuracy per question and per attribute over the `results` that asked it (the four questions and
    FINDING_ATTRIBUTES always listed, NaN when never asked; drills' own after them), the mean total, n."""
    results = list(results)

    def means(part: str, first: tuple[str, ...]) -> dict[str, float]:
        names = list(first) + sorted({k for r in results for k in getattr(r, part)} - set(first))
        return {k: float(np.mean([getattr(r, part)[k] for r in results if k in getattr(r, part)]))
                if any(k in getattr(r, part) for r in results) else float("nan") for k in names}

    return {"n": len(results), "questions": means("questions", QUESTIONS),
            "attributes": means("attributes", FINDING_ATTRIBUTES),
            "total": float(np.mean([r.total for r in results])) if results else float("nan")}


# ----------------------------------------------------------------------------- contrast drills

@dataclass(frozen=True)
class Drill:
    """Two findings one finding apart (a and b, what-if pairs) and the question that tells them apart."""

    attribute: str
    a: dict
    b: dict
    question: str
    answer: str  # "A" or "B"


def drill_question(attribute: str, a: Mapping, b: Mapping) -> Drill:
    """The question a what-if pair (findings a, b differing in `attribute`) asks, and its answer."""
    if attribute == "grade":
        louder = "A" if a["grade"] > b["grade"] else "B"
        top = max(a["grade"], b["grade"])
        return Drill(attribute, dict(a), dict(b), f"Which of the two is grade {V.ROMAN[top - 1]}?", louder)
    if attribute == "timing":
        pa, pb = V.timing_phase(a["timing"]), V.timing_phase(b["timing"])
        if pa != pb and "diastolic" in (pa, pb):
            return Drill(attribute, dict(a), dict(b), "Which murmur is diastolic?", "A" if pa == "diastolic" else "B")
        return Drill(attribute, dict(a), dict(b), f"Which murmur is {a['timing']}?", "A")
    if attribute == "category":
        ca, cb = category(a), category(b)
        target = "innocent" if "innocent" in (ca, cb) else "pathological"
        return Drill(attribute, dict(a), dict(b), f"Which is {target}?", "A" if ca == target else "B")
    return Drill(attribute, dict(a), dict(b), f"Which has {attribute} {show(a[attribute], attribute)}?", "A")


def swapped(drill: Drill) -> Drill:
    """The same drill with the clips' order reversed (so the answer is not always A)."""
    return Drill(drill.attribute, drill.b, drill.a, drill.question, "B" if drill.answer == "A" else "A")


def score_drill(drill: Drill, given: str | None) -> Scored:
    """A drill scored like a case: one question ("contrast"), right or wrong, its attribute counted apart."""
    right = given == drill.answer
    confused = [] if right else [(f"contrast {drill.attribute}", drill.question, f"answered {show(given)}")]
    return Scored({"contrast": float(right)}, {f"contrast {drill.attribute}": right}, confused)
