"""Knowledge graph: the 17 condition profiles, the ranking, and the PyG export GraphSAGE consumes."""
import re

import pytest

from hldm.clinical import vocabulary as V
from hldm.clinical.knowledge_graph import (CONDITION_PROFILES, EDGE_TYPES, NODE_FEATURE_DIM, NODE_TYPES, NODES,
                                           PATIENT_FEATURES, RELATIONS, default_graph)
from hldm.clinical.validation import FindingsError, validate

G = default_graph()


def test_profiles_cover_the_17_conditions_with_vocabulary_values():
    assert tuple(CONDITION_PROFILES) == V.CONDITIONS and len(V.CONDITIONS) == 17
    for p in CONDITION_PROFILES.values():
        assert set(p.timings + p.secondary_timings) <= set(V.TIMINGS)
        assert set(p.shapes) <= set(V.SHAPES) and set(p.pitches) <= set(V.PITCHES)
        assert set(p.qualities) <= set(V.QUALITIES) and set(p.locations) <= set(V.LOCATIONS)
        assert set(p.radiations) <= set(V.RADIATIONS) and set(p.ages) <= set(V.AGE_GROUPS)
        assert set(p.hallmark_sounds) <= set(p.extra_sounds) <= set(V.EXTRA_SOUNDS)
        assert p.snomed_ct is None or re.fullmatch(r"[1-9]\d{5,17}", p.snomed_ct)
        if p.has_murmur:
            lo, hi = p.grades
            assert 1 <= lo <= p.typical_grade <= hi <= V.max_grade(p.timings[0])
    assert not CONDITION_PROFILES["normal"].has_murmur


@pytest.mark.parametrize("condition", V.CONDITIONS)
def test_typical_findings_are_valid_and_rank_their_condition_first(condition):
    f = G.typical_findings(condition)
    assert validate(f) == f and f.condition == condition
    ranking = G.rank_conditions(f.with_(condition=None))
    assert len(ranking) == 17 and {n for n, _ in ranking} == set(V.CONDITIONS)
    assert ranking[0][0] == condition, ranking[:3]


def test_ranking_is_sorted_and_deterministic():
    f = G.typical_findings("ventricular septal defect")
    ranking = G.rank_conditions(f)
    assert ranking == G.rank_conditions(f)
    scores = [s for _, s in ranking]
    assert scores == sorted(scores, reverse=True)


def test_normal_tops_no_murmur_and_is_last_with_a_murmur():
    assert G.rank_conditions(V.Findings())[0][0] == "normal"
    assert G.rank_conditions(V.Findings(age_group="adult", sex="male"))[0][0] == "normal"
    assert G.rank_conditions(G.typical_findings("mitral regurgitation"))[-1][0] == "normal"


def test_extra_sounds_without_murmur_point_to_their_conditions():
    assert G.rank_conditions(V.Findings(extra_sounds=("midsystolic click",), age_group="adult"))[0][0] == \
        "mitral valve prolapse"
    assert G.rank_conditions(V.Findings(extra_sounds=("fixed split S2",)))[0][0] == "atrial septal defect"


@pytest.mark.parametrize("location", ["PV", "TV"])
def test_soft_midsystolic_murmur_in_a_child_ranks_innocent_first(location):
    f = V.Findings(murmur="present", timing="mid-systolic", grade=2, location=location, age_group="child")
    assert G.rank_conditions(f)[0][0] == "innocent murmur"
    assert G.rank_conditions(f.with_(grade=4))[0][0] != "innocent murmur"


def test_diastolic_rumble_with_opening_snap_is_mitral_stenosis():
    f = V.Findings(murmur="present", timing="mid-diastolic", grade=2, pitch="low", quality="rumbling",
                   location="MV", extra_sounds=("opening snap",), age_group="adult")
    assert G.rank_conditions(f)[0][0] == "mitral stenosis"


def test_ranking_validates_its_input():
    with pytest.raises(FindingsError):
        G.rank_conditions(V.Findings(grade=3))
    assert G.rank_conditions(G.typical_findings("mitral regurgitation").with_(timing="Pansystolic"))[0][0] == \
        "mitral regurgitation"


def test_condition_lookup_accepts_aliases_and_refuses_unknown():
    assert G.condition_profile("VSD").name == "ventricular septal defect"
    with pytest.raises(FindingsError) as info:
        G.typical_findings("heartache")
    assert info.value.field == "condition"


def test_to_pyg_shapes_and_types():
    d = G.to_pyg()
    n = len(NODES)
    assert d.x.shape == (n, NODE_FEATURE_DIM) and d.num_nodes == n
    assert d.edge_index.shape[0] == 2 and d.edge_index.shape[1] == d.edge_type.shape[0] == d.edge_weight.shape[0]
    assert int(d.edge_index.max()) < n and d.node_type.shape == (n,)
    assert int(d.edge_type.max()) < len(EDGE_TYPES)
    # every forward edge has its reverse
    e = d.edge_index.shape[1] // 2
    assert (d.edge_index[:, :e].flip(0) == d.edge_index[:, e:]).all()
    assert (d.edge_type[e:] == d.edge_type[:e] + len(RELATIONS)).all()
    # each condition links to its typical timing
    c = NODES.index(("condition", "mitral regurgitation"))
    t = NODES.index(("timing", "holosystolic"))
    assert ((d.edge_index[0] == c) & (d.edge_index[1] == t)).any()


def test_patient_subgraph_links_patient_to_findings_and_reached_conditions():
    f = G.typical_findings("mitral valve prolapse")
    d = G.patient_subgraph(f)
    p = int(d.patient_index)
    assert d.node_type[p] == NODE_TYPES.index("patient") and d.node_id[p] == -1
    linked = {NODES[int(d.node_id[j])] for j in d.edge_index[1][d.edge_index[0] == p]}
    assert {("timing", "late-systolic"), ("extra_sound", "midsystolic click"), ("location", "MV"),
            ("grade_band", "soft"), ("age_group", "adolescent")} <= linked
    conditions = {NODES[int(i)][1] for i in d.node_id if i >= 0 and NODES[int(i)][0] == "condition"}
    assert "mitral valve prolapse" in conditions and "normal" not in conditions
    assert d.x.shape == (d.num_nodes, NODE_FEATURE_DIM) and d.x[p, -len(PATIENT_FEATURES):].abs().sum() > 0


def test_two_layer_graphsage_consumes_graph_and_batched_subgraphs():
    import torch
    from torch_geometric.data import Batch
    from torch_geometric.nn import SAGEConv

    torch.manual_seed(0)
    conv1, conv2 = SAGEConv(NODE_FEATURE_DIM, 32), SAGEConv(32, 16)

    def encode(x, edge_index):
        return conv2(conv1(x, edge_index).relu(), edge_index)  # (N, 16)

    full = G.to_pyg()
    assert encode(full.x, full.edge_index).shape == (full.num_nodes, 16)
    batch = Batch.from_data_list([G.patient_subgraph(G.typical_findings(c)) for c in ("normal", "aortic stenosis")])
    h = encode(batch.x, batch.edge_index)[batch.patient_index]  # (B, 16): one vector per patient
    assert h.shape == (2, 16) and torch.isfinite(h).all()
    assert not torch.allclose(h[0], h[1])
    assert (batch.node_type[batch.patient_index] == NODE_TYPES.index("patient")).all()
