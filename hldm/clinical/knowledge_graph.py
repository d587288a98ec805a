"""The clinical knowledge graph: 17 conditions linked to the auscultation findings they produce.

The table `CONDITION_PROFILES` is the clinical content (textbook auscultation, e.g. Constant,
"Bedside Cardiology"; AHA/ACC valve guidelines); everything else is derived from it:

- typed nodes: condition, timing, shape, pitch, quality, location, radiation, extra_sound,
  grade_band, age_group and murmur_status (one node per vocabulary value), plus a "patient"
  node in patient subgraphs;
- typed edges condition -> finding ("has_timing", "has_shape", ...; edge_weight 1.0 for a
  typical finding, 0.5 for a secondary one), and their reverses ("rev_has_timing", ...);
- `rank_conditions(findings)`: a deterministic profile-match score per condition, read by
  the L3 prompt (the differential diagnosis);
- `to_pyg()` / `patient_subgraph(findings)`: `torch_geometric.data.Data` for the GraphSAGE
  condition encoder (torch is imported only there, so this module stays torch-free).

SNOMED CT ids are public concept ids checked against published value sets; None where no
single concept fits with confidence (normal, innocent murmur).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hldm.clinical import vocabulary as V

ALL_AGES = V.AGE_GROUPS
PAEDIATRIC = ("neonate", "infant", "child", "adolescent")
ADULT = ("young adult", "adult", "older adult")


def _all_ages(typical: str) -> tuple[str, ...]:
    """Every age group, the typical one first."""
    return (typical,) + tuple(a for a in ALL_AGES if a != typical)


@dataclass(frozen=True)
class ConditionProfile:
    """How one condition sounds. The first value of each tuple (ages included) is the most typical.

    `secondary_timings` are other murmurs the condition can produce (e.g. the mid-diastolic
    flow rumble of a large ASD): they make a timing possible (validation) and score half.
    `hallmark_sounds` are the extra sounds expected with it; their absence lowers the score.
    """

    name: str
    snomed_ct: str | None
    timings: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()
    grades: tuple[int, int] = (0, 0)  # usual Levine range (lo, hi)
    typical_grade: int | None = None
    pitches: tuple[str, ...] = ()
    qualities: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    radiations: tuple[str, ...] = ("none",)
    extra_sounds: tuple[str, ...] = ()
    hallmark_sounds: tuple[str, ...] = ()
    ages: tuple[str, ...] = ALL_AGES
    secondary_timings: tuple[str, ...] = ()
    murmur_optional: bool = False  # may present with extra sounds alone (click, fixed split S2)
    prior: float = 0.0  # score head start for common presentations (innocent murmurs in children)
    note: str = ""

    @property
    def has_murmur(self) -> bool:
        return bool(self.timings)

    @property
    def phases(self) -> tuple[str, ...]:
        """Cardiac phases ('systolic', 'diastolic', 'continuous') of the murmurs it can produce."""
        found = {V.timing_phase(t) for t in self.timings + self.secondary_timings}
        return tuple(p for p in ("systolic", "diastolic", "continuous") if p in found)


_PROFILES = (
    ConditionProfile(
        "normal", None, extra_sounds=("S3",), ages=_all_ages("child"),
        note="Physiological S3 is normal in the young."),
    ConditionProfile(
        "innocent murmur", None, timings=("mid-systolic", "early-systolic"), shapes=("diamond", "plateau"),
        grades=(1, 2), typical_grade=2, pitches=("low", "medium"), qualities=("musical", "blowing"),
        locations=("TV", "PV", "MV"), ages=("child", "infant", "adolescent"), prior=1.0,
        note="Still's vibratory murmur (LLSB/apex) or pulmonary flow murmur (LUSB); soft, no thrill."),
    ConditionProfile(
        "aortic stenosis", "60573004", timings=("mid-systolic",), shapes=("diamond", "crescendo"),
        grades=(2, 6), typical_grade=3, pitches=("medium", "high"), qualities=("harsh",),
        locations=("AV",), radiations=("carotids", "apex"), extra_sounds=("ejection click", "S4"),
        ages=_all_ages("older adult"), secondary_timings=("late-systolic",),
        note="Ejection murmur at RUSB to the carotids; click with a bicuspid valve; late peak when severe."),
    ConditionProfile(
        "pulmonary stenosis", "56786000", timings=("mid-systolic",), shapes=("diamond", "crescendo"),
        grades=(2, 5), typical_grade=3, pitches=("medium", "high"), qualities=("harsh",),
        locations=("PV",), radiations=("back", "left sternal border"), extra_sounds=("ejection click",),
        ages=PAEDIATRIC + ("young adult",),
        note="Ejection murmur at LUSB to the back; pulmonic click that softens on inspiration."),
    ConditionProfile(
        "mitral regurgitation", "48724000", timings=("holosystolic",), shapes=("plateau", "decrescendo"),
        grades=(1, 6), typical_grade=3, pitches=("high",), qualities=("blowing",), locations=("MV",),
        radiations=("axilla",), extra_sounds=("S3",), ages=("child", "adolescent") + ADULT,
        secondary_timings=("late-systolic", "early-systolic", "mid-diastolic"),
        note="Apical holosystolic murmur to the axilla; S3 and mitral flow rumble when severe."),
    ConditionProfile(
        "tricuspid regurgitation", "111287006", timings=("holosystolic",), shapes=("plateau",),
        grades=(1, 4), typical_grade=2, pitches=("high", "medium"), qualities=("blowing",),
        locations=("TV",), radiations=("none",), extra_sounds=("S3",), ages=_all_ages("adult"),
        secondary_timings=("early-systolic", "mid-diastolic"),
        note="LLSB holosystolic murmur louder on inspiration (Carvallo); right-sided S3."),
    ConditionProfile(
        "ventricular septal defect", "30288003", timings=("holosystolic", "early-systolic"),
        shapes=("plateau", "decrescendo"), grades=(2, 6), typical_grade=4, pitches=("high",),
        qualities=("harsh",), locations=("TV",), radiations=("none", "left sternal border"),
        ages=("neonate", "infant", "child", "adolescent"), secondary_timings=("mid-diastolic",),
        note="Harsh LLSB holosystolic murmur, often with a thrill; small muscular VSDs are early systolic."),
    ConditionProfile(
        "atrial septal defect", "70142008", timings=("mid-systolic",), shapes=("diamond",),
        grades=(1, 3), typical_grade=2, pitches=("medium",), qualities=("blowing",), locations=("PV",),
        radiations=("none",), extra_sounds=("fixed split S2",), hallmark_sounds=("fixed split S2",),
        ages=("child", "adolescent", "young adult", "adult"), secondary_timings=("mid-diastolic",),
        murmur_optional=True,
        note="Pulmonary flow murmur at LUSB with fixed split S2; tricuspid flow rumble when large."),
    ConditionProfile(
        "patent ductus arteriosus", "83330001", timings=("continuous",), shapes=("diamond", "plateau"),
        grades=(2, 4), typical_grade=3, pitches=("medium",), qualities=("harsh",), locations=("PV",),
        radiations=("back", "none"), ages=("neonate", "infant", "child"),
        secondary_timings=("holosystolic", "late-systolic"),
        note="Machinery murmur peaking at S2, left infraclavicular; systolic only when PVR is high."),
    ConditionProfile(
        "mitral valve prolapse", "409712001", timings=("late-systolic",), shapes=("crescendo", "plateau"),
        grades=(1, 3), typical_grade=2, pitches=("high",), qualities=("blowing", "musical"),
        locations=("MV",), radiations=("axilla", "none"), extra_sounds=("midsystolic click",),
        hallmark_sounds=("midsystolic click",), ages=("adolescent",) + ADULT,
        secondary_timings=("holosystolic",), murmur_optional=True,
        note="Mid-systolic click then late systolic murmur at the apex; click alone is common."),
    ConditionProfile(
        "hypertrophic obstructive cardiomyopathy", "45227007", timings=("mid-systolic",),
        shapes=("diamond", "crescendo"), grades=(2, 4), typical_grade=3, pitches=("medium",),
        qualities=("harsh",), locations=("TV", "MV"), radiations=("none",), extra_sounds=("S4",),
        hallmark_sounds=("S4",), ages=("adolescent", "young adult", "adult"),
        secondary_timings=("holosystolic",),
        note="LLSB/apex ejection-type murmur without carotid radiation, louder on Valsalva; S4."),
    ConditionProfile(
        "aortic regurgitation", "60234000", timings=("early-diastolic", "holodiastolic"),
        shapes=("decrescendo",), grades=(1, 4), typical_grade=2, pitches=("high",), qualities=("blowing",),
        locations=("AV",), radiations=("left sternal border", "apex"), extra_sounds=("S3", "ejection click"),
        ages=("adolescent",) + ADULT, secondary_timings=("mid-diastolic", "mid-systolic"),
        note="High-pitched decrescendo after S2 down the LSB; Austin Flint rumble and flow murmur."),
    ConditionProfile(
        "pulmonary regurgitation", "91434003", timings=("early-diastolic",), shapes=("decrescendo", "diamond"),
        grades=(1, 3), typical_grade=2, pitches=("high", "low"), qualities=("blowing",), locations=("PV",),
        radiations=("left sternal border",), ages=("child", "adolescent") + ADULT,
        secondary_timings=("holodiastolic",),
        note="Graham Steell (high-pitched) with pulmonary hypertension; low-pitched after ToF repair."),
    ConditionProfile(
        "mitral stenosis", "79619009", timings=("mid-diastolic", "holodiastolic"),
        shapes=("decrescendo", "crescendo"), grades=(1, 4), typical_grade=2, pitches=("low",),
        qualities=("rumbling",), locations=("MV",), radiations=("none",), extra_sounds=("opening snap",),
        hallmark_sounds=("opening snap",), ages=("adolescent",) + ADULT,
        note="Low apical rumble after an opening snap, presystolic accentuation in sinus rhythm."),
    ConditionProfile(
        "tricuspid stenosis", "49915006", timings=("mid-diastolic",), shapes=("crescendo", "decrescendo"),
        grades=(1, 3), typical_grade=2, pitches=("low",), qualities=("rumbling",), locations=("TV",),
        radiations=("none",), extra_sounds=("opening snap",), ages=ADULT,
        note="LLSB rumble louder on inspiration; rare, usually rheumatic with mitral stenosis."),
    ConditionProfile(
        "coarctation of the aorta", "7305005", timings=("mid-systolic", "late-systolic"),
        shapes=("crescendo", "diamond"), grades=(2, 3), typical_grade=2, pitches=("medium",),
        qualities=("harsh", "blowing"), locations=("AV", "PV"), radiations=("back",),
        extra_sounds=("ejection click",), ages=("neonate", "infant", "child", "adolescent", "young adult"),
        secondary_timings=("continuous",),
        note="Systolic murmur heard best between the scapulae; collateral continuous murmurs; "
             "bicuspid aortic valve click."),
    ConditionProfile(
        "tetralogy of Fallot", "86299006", timings=("mid-systolic",), shapes=("diamond",),
        grades=(3, 5), typical_grade=3, pitches=("medium",), qualities=("harsh",), locations=("PV", "TV"),
        radiations=("none", "back"), ages=("neonate", "infant", "child"),
        note="Harsh RVOT ejection murmur at the left mid/upper sternal border with a single S2; "
             "softer during hypercyanotic spells."),
)
CONDITION_PROFILES: dict[str, ConditionProfile] = {p.name: p for p in _PROFILES}
assert tuple(CONDITION_PROFILES) == V.CONDITIONS, "profiles must follow vocabulary.CONDITIONS"

# Typical demographics per age group for pre-filled findings: (heart rate bpm, height cm, weight kg).
AGE_DEFAULTS = {
    "neonate": (140.0, 50.0, 3.5), "infant": (120.0, 70.0, 8.0), "child": (90.0, 120.0, 25.0),
    "adolescent": (75.0, 160.0, 50.0), "young adult": (70.0, 170.0, 65.0),
    "adult": (72.0, 170.0, 75.0), "older adult": (70.0, 168.0, 75.0),
}

# Score weights of `rank_conditions`: timing and location discriminate most at the bedside.
WEIGHTS = {"timing": 3.0, "location": 2.0, "shape": 1.5, "quality": 1.5, "pitch": 1.0,
           "radiation": 1.0, "grade": 1.0, "extra_sound": 3.0, "age": 0.5}
MISMATCH = 0.5  # fraction of a weight lost when a given finding contradicts the profile
ALTERNATIVE = 0.75  # fraction of a weight earned by a profile value other than the most typical one
NO_MURMUR = 4.0  # murmur presence disagrees with the profile (or, for "normal", agrees)

# Node and edge types. A node type is also the vocabulary it enumerates; "has_<type>" edges
# go from a condition (or the patient) to a finding node.
NODE_VALUES: dict[str, tuple[str, ...]] = {
    "condition": V.CONDITIONS, "timing": V.TIMINGS, "shape": V.SHAPES, "pitch": V.PITCHES,
    "quality": V.QUALITIES, "location": V.LOCATIONS, "radiation": V.RADIATIONS,
    "extra_sound": V.EXTRA_SOUNDS, "grade_band": tuple(V.GRADE_BANDS), "age_group": V.AGE_GROUPS,
    "murmur_status": V.MURMUR_STATUS,
}
NODE_TYPES = tuple(NODE_VALUES) + ("patient",)
RELATIONS = tuple(f"has_{t}" for t in NODE_VALUES if t != "condition")
EDGE_TYPES = RELATIONS + tuple(f"rev_{r}" for r in RELATIONS)  # edge_type r + len(RELATIONS) = reverse
NODES: tuple[tuple[str, str], ...] = tuple((t, v) for t, values in NODE_VALUES.items() for v in values)
NODE_INDEX = {node: i for i, node in enumerate(NODES)}
PATIENT_FEATURES = ("heart_rate", "height", "weight", "pregnant", "grade", "female", "male")
# x = [one-hot node type | one-hot node identity | patient numeric features (patient node only)]
NODE_FEATURE_DIM = len(NODE_TYPES) + len(NODES) + len(PATIENT_FEATURES)


class KnowledgeGraph:
    """Conditions, findings and their links; see the module docstring."""

    def __init__(self, profiles: dict[str, ConditionProfile] = CONDITION_PROFILES):
        self.profiles = profiles
        self.edges = tuple(self._condition_edges())  # (src node, dst node, relation, weight)

    def _condition_edges(self):
        for p in self.profiles.values():
            src = ("condition", p.name)
            links = [("murmur_status", "present" if p.has_murmur else "absent", 1.0)]
            links += [("timing", t, 1.0) for t in p.timings] + [("timing", t, 0.5) for t in p.secondary_timings]
            links += [("shape", v, 1.0) for v in p.shapes] + [("pitch", v, 1.0) for v in p.pitches]
            links += [("quality", v, 1.0) for v in p.qualities] + [("location", v, 1.0) for v in p.locations]
            if p.has_murmur:
                links += [("radiation", v, 1.0) for v in p.radiations]
                links += [("grade_band", band, 1.0) for band, (lo, hi) in V.GRADE_BANDS.items()
                          if lo <= p.grades[1] and hi >= p.grades[0]]
            links += [("extra_sound", v, 1.0) for v in p.extra_sounds]
            links += [("age_group", v, 1.0) for v in p.ages]
            for node_type, value, weight in links:
                yield src, (node_type, value), f"has_{node_type}", weight

    def condition_profile(self, name: str) -> ConditionProfile:
        from hldm.clinical.validation import canonical  # validation reads CONDITION_PROFILES

        return self.profiles[canonical("condition", name)]

    def typical_findings(self, name: str) -> V.Findings:
        """The textbook presentation of a condition, as valid Findings (app pre-fill)."""
        p = self.condition_profile(name)
        age = p.ages[0]
        heart_rate, height, weight = AGE_DEFAULTS[age]
        murmur = {}
        if p.has_murmur:
            murmur = dict(murmur="present", timing=p.timings[0], shape=p.shapes[0], grade=p.typical_grade,
                          pitch=p.pitches[0], quality=p.qualities[0], radiation=p.radiations[0])
        location = p.locations[0] if p.locations else "MV"
        return V.Findings(location=location, extra_sounds=p.hallmark_sounds, condition=p.name,
                          heart_rate=heart_rate, age_group=age, height_cm=height, weight_kg=weight, **murmur)

    def rank_conditions(self, findings: V.Findings) -> list[tuple[str, float]]:
        """All conditions with their profile-match score, best first (ties in CONDITIONS order).

        The score adds each given finding's weight when the profile has it (ALTERNATIVE x
        weight for a less typical value, half for a secondary timing or a timing of the right
        phase), subtracts MISMATCH x weight when it contradicts it, counts NO_MURMUR for
        murmur presence and adds the profile's prior; "normal" scores last whenever a murmur
        or a pathological extra sound is heard. `findings.condition` is ignored: the
        ranking reads only what is heard.
        """
        from hldm.clinical.validation import validate  # validation reads CONDITION_PROFILES

        f = validate(findings)
        scores = [(p.name, round(_score(p, f), 6)) for p in self.profiles.values()]
        order = {name: i for i, name in enumerate(self.profiles)}
        return sorted(scores, key=lambda item: (-item[1], order[item[0]]))

    def finding_nodes(self, findings: V.Findings) -> list[tuple[str, str]]:
        """The finding nodes a patient with these (validated) findings links to."""
        f = findings
        nodes = [("murmur_status", f.murmur), ("age_group", f.age_group)]
        if f.murmur == "present":
            nodes += [("timing", f.timing), ("grade_band", V.grade_band(f.grade)), ("location", f.location),
                      ("radiation", f.radiation)]
            nodes += [(t, v) for t, v in (("shape", f.shape), ("pitch", f.pitch), ("quality", f.quality)) if v]
        nodes += [("extra_sound", s) for s in f.extra_sounds]
        return nodes

    def to_pyg(self):
        """The whole graph as torch_geometric Data: x (N, NODE_FEATURE_DIM), edge_index (2, E)
        in both directions, edge_type (E,), edge_weight (E,), node_type (N,)."""
        return _to_data(list(NODES), list(self.edges), patient=None)

    def patient_subgraph(self, findings: V.Findings):
        """Data for one patient: its finding nodes, the condition nodes linked to what is heard
        (any finding but the age group), their edges to the finding nodes, and a 'patient' node
        (index `patient_index`, the last) with has_* edges to its findings.

        Also carries `node_id` (N,): index into NODES, -1 for the patient node.
        """
        from hldm.clinical.validation import validate  # validation reads CONDITION_PROFILES

        f = validate(findings)
        found = set(self.finding_nodes(f))
        # age alone reaches nearly every condition, so conditions come in through what is heard
        reached = {src for src, dst, _, _ in self.edges if dst in found and dst[0] != "age_group"}
        edges = [e for e in self.edges if e[0] in reached and e[1] in found]
        nodes = sorted(found | reached, key=NODE_INDEX.__getitem__)
        patient = ("patient", "patient")
        edges += [(patient, node, f"has_{node[0]}", 1.0) for node in sorted(found, key=NODE_INDEX.__getitem__)]
        return _to_data(nodes + [patient], edges, patient=f)


def _score(p: ConditionProfile, f: V.Findings) -> float:
    W = WEIGHTS
    if not p.has_murmur and (f.murmur == "present" or set(f.extra_sounds) - set(p.extra_sounds)):
        return -4 * NO_MURMUR  # "normal" cannot explain a murmur or a pathological sound: always last
    if f.murmur == "absent":
        # a murmur-free presentation is typical of some conditions (isolated click, fixed split S2)
        # and for the rest a murmur may simply have been missed, so absence is not a veto
        score = NO_MURMUR if not p.has_murmur else (0.0 if p.murmur_optional else -NO_MURMUR / 2)
    else:
        score = 0.0
        if f.timing in p.timings:
            score += W["timing"]
        elif f.timing in p.secondary_timings or V.timing_phase(f.timing) in {
                V.timing_phase(t) for t in p.timings}:
            score += W["timing"] / 2
        else:
            score -= W["timing"] * 2 * MISMATCH  # a murmur in the wrong phase is strong evidence against
        for field, values in (("shape", p.shapes), ("quality", p.qualities), ("pitch", p.pitches),
                              ("radiation", p.radiations), ("location", p.locations)):
            value = getattr(f, field)
            if value is not None and value in values:
                score += W[field] * (1.0 if value == values[0] else ALTERNATIVE)
            elif value is not None:
                score -= W[field] * MISMATCH
        lo, hi = p.grades
        distance = max(lo - f.grade, f.grade - hi, 0)
        score += W["grade"] if distance == 0 else -W["grade"] * MISMATCH * distance
    for sound in f.extra_sounds:
        score += W["extra_sound"] if sound in p.extra_sounds else -W["extra_sound"] * MISMATCH
    score -= W["extra_sound"] * MISMATCH * sum(s not in f.extra_sounds for s in p.hallmark_sounds) / 2
    if f.age_group in p.ages:
        score += W["age"]
    return score + p.prior


def _to_data(nodes: list, edges: list, patient: V.Findings | None):
    import torch
    from torch_geometric.data import Data

    index = {node: i for i, node in enumerate(nodes)}
    n_types, n_nodes = len(NODE_TYPES), len(NODES)
    x = torch.zeros(len(nodes), NODE_FEATURE_DIM)  # (N, F)
    node_type = torch.tensor([NODE_TYPES.index(t) for t, _ in nodes], dtype=torch.long)
    x[torch.arange(len(nodes)), node_type] = 1.0
    node_id = torch.tensor([NODE_INDEX.get(node, -1) for node in nodes], dtype=torch.long)
    known = node_id >= 0
    x[torch.arange(len(nodes))[known], n_types + node_id[known]] = 1.0
    data_extra = {}
    if patient is not None:
        x[index[("patient", "patient")], n_types + n_nodes:] = torch.tensor(_patient_features(patient))
        # a tensor named *index*, so PyG batching offsets it like edge_index: (1,) -> (B,)
        data_extra["patient_index"] = torch.tensor([index[("patient", "patient")]])
    src = [index[s] for s, _, _, _ in edges]
    dst = [index[d] for _, d, _, _ in edges]
    rel = [RELATIONS.index(r) for _, _, r, _ in edges]
    weight = [w for _, _, _, w in edges]
    edge_index = torch.tensor([src + dst, dst + src], dtype=torch.long).reshape(2, -1)  # (2, 2E)
    edge_type = torch.tensor(rel + [r + len(RELATIONS) for r in rel], dtype=torch.long)  # (2E,)
    edge_weight = torch.tensor(weight + weight, dtype=torch.float32)  # (2E,)
    return Data(x=x, edge_index=edge_index, edge_type=edge_type, edge_weight=edge_weight,
                node_type=node_type, node_id=node_id, num_nodes=len(nodes), **data_extra)


def _patient_features(f: V.Findings) -> list[float]:
    """PATIENT_FEATURES scaled to about 0..1 (missing height/weight -> 0)."""
    return [f.heart_rate / V.HEART_RATE_RANGE[1], (f.height_cm or 0.0) / V.HEIGHT_RANGE_CM[1],
            (f.weight_kg or 0.0) / V.WEIGHT_RANGE_KG[1], float(f.pregnant),
            (f.grade or 0) / V.MAX_GRADE_SYSTOLIC, float(f.sex == "female"), float(f.sex == "male")]


@lru_cache(maxsize=1)
def default_graph() -> KnowledgeGraph:
    """The shared graph built from CONDITION_PROFILES."""
    return KnowledgeGraph()
