"""Condition encoders: shapes, what trains and what stays frozen, prompt caches, CFG null, configs."""
import copy

import pytest
import torch
import torch.nn.functional as F

from hldm.clinical.prompts import build_prompts
from hldm.clinical.vocabulary import Findings
from hldm.models.checkpoint import load_into, load_state, save_checkpoint
from hldm.models.condition import (
    ClinicalConditioner,
    ConditionConfig,
    LabelConditioner,
    build_conditioner,
)
from hldm.models.text_encoder import MiniLMTextEncoder, _pristine_minilm

FINDINGS = [
    Findings(),
    Findings(murmur="present", timing="holosystolic", shape="plateau", grade=3, pitch="high",
             quality="blowing", location="MV", radiation="axilla", condition="mitral regurgitation",
             heart_rate=72.0, age_group="adult", sex="male"),
    Findings(murmur="present", timing="mid-systolic", shape="diamond", grade=2, pitch="medium",
             quality="harsh", location="AV", radiation="carotids", condition="aortic stenosis",
             heart_rate=110.0),
    Findings(murmur="present", timing="holodiastolic", shape="decrescendo", grade=1, pitch="high",
             quality="blowing", location="AV", condition="aortic regurgitation", heart_rate=64.0),
]
PROMPTS = [build_prompts(f) for f in FINDINGS]
DIM = 32


@pytest.fixture(scope="module")
def clinical():
    """One MiniLM load for the whole module; tests that train work on their own copy."""
    torch.manual_seed(0)
    return ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16)).eval()


def test_forward_shapes_and_heart_rate(clinical):
    c, hr = clinical(FINDINGS, PROMPTS)
    assert c.shape == (4, DIM) and c.dtype == torch.float32 and torch.isfinite(c).all()
    assert torch.equal(hr, torch.tensor([80.0, 72.0, 110.0, 64.0]))
    assert torch.cdist(c, c).fill_diagonal_(1.0).min() > 1e-3  # different findings, different c
    c_default, _ = clinical(FINDINGS)  # prompts default to build_prompts(findings)
    assert torch.equal(c_default, c)


def test_gradients_reach_trainable_parts_only(clinical):
    cond = ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16), clinical.graph).train()
    c, _ = cond(FINDINGS, PROMPTS)
    (c * torch.randn_like(c)).sum().backward()
    trainable = dict(cond.named_parameters())
    for name in ("lambda_text", "lambda_graph", "lambda_attributes", "attributes.embeddings.grade.weight",
                 "text_proj.weight", "graph_encoder.conv1.lin_l.weight",
                 "graph_encoder.conv2.lin_r.weight", "text.top.0.output.dense.weight"):
        assert trainable[name].grad is not None and trainable[name].grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in cond.text.frozen.parameters())
    assert cond.null_embedding.grad is None  # nothing dropped, the null row is unused


def test_state_dict_holds_only_trainable_text_layers(clinical):
    keys = clinical.state_dict().keys()
    assert not any(".frozen." in f".{k}" for k in keys)
    assert any(k.startswith("text.top.0.") for k in keys)
    frozen = sum(p.numel() for p in clinical.text.frozen.parameters())
    stored = sum(v.numel() for v in clinical.state_dict().values())
    assert frozen > 2 * stored  # the ~20 M-parameter base never goes into a checkpoint


def test_text_encoder_matches_sentence_embedding_at_init(clinical):
    """The split frozen-bottom / trainable-top path reproduces MiniLM mean pooling, padding included."""
    tokenizer, model = _pristine_minilm()
    texts = [PROMPTS[1].l2, "Normal.", PROMPTS[2].l3]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        reference = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        assert torch.allclose(MiniLMTextEncoder(trainable_layers=1)(texts), reference, atol=1e-5)


def test_repeated_prompts_hit_the_cache_with_identical_output(clinical):
    text = clinical.text
    c1, _ = clinical(FINDINGS, PROMPTS)
    misses = text.hidden_cache.misses
    hits = text.hidden_cache.hits
    c2, _ = clinical(FINDINGS, PROMPTS)
    assert text.hidden_cache.misses == misses and text.hidden_cache.hits > hits
    assert torch.equal(c1, c2)

    with torch.inference_mode():
        c3, _ = clinical(FINDINGS, PROMPTS)
        embed_hits = text.embed_cache.hits
        c4, _ = clinical(FINDINGS, PROMPTS)
    assert text.embed_cache.hits == embed_hits + 3 * len(FINDINGS)
    assert torch.equal(c3, c4) and torch.allclose(c3, c1, atol=1e-6)


def test_inference_cache_follows_weight_updates(clinical):
    """Caches filled under inference_mode neither break training nor go stale after a step."""
    cond = ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16), clinical.graph).eval()
    with torch.inference_mode():
        before, _ = cond(FINDINGS, PROMPTS)
    cond.train()
    c, _ = cond(FINDINGS, PROMPTS)  # reuses the cached frozen states in autograd
    c.pow(2).sum().backward()
    torch.optim.SGD(cond.text.top.parameters(), lr=1.0).step()
    cond.eval()
    with torch.inference_mode():
        after, _ = cond(FINDINGS, PROMPTS)
    assert not torch.allclose(before, after)


def test_drop_mask_gives_the_null_embedding_and_keeps_heart_rate(clinical):
    c, hr = clinical(FINDINGS, PROMPTS)
    drop = torch.tensor([True, False, True, False])
    c_drop, hr_drop = clinical(FINDINGS, PROMPTS, drop_mask=drop)
    null = clinical.null(4)
    assert null.shape == (4, DIM)
    assert torch.equal(c_drop[drop], null[drop]) and torch.equal(c_drop[~drop], c[~drop])
    assert torch.equal(hr_drop, hr)
    with pytest.raises(ValueError, match="drop_mask"):
        clinical(FINDINGS, PROMPTS, drop_mask=torch.tensor([True]))


def test_fusion_weights_are_the_learned_scalars(clinical):
    assert clinical.fusion_weights() == {"text": 1.0, "graph": 0.5, "attributes": 1.0}
    paper = ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16, attributes_init=None), clinical.graph)
    assert paper.fusion_weights() == {"text": 1.0, "graph": 0.5}
    assert not any(k.startswith("attributes.") for k in paper.state_dict())


def test_the_attribute_source_separates_grades_that_text_and_graph_barely_tell_apart(clinical):
    def grade_distance(cond) -> float:
        f = [FINDINGS[1].with_(grade=1), FINDINGS[1].with_(grade=6)]
        c, _ = cond.eval()(f)
        return float(torch.cosine_similarity(c[0], c[1], dim=0))

    torch.manual_seed(0)
    paper = ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16, attributes_init=None), clinical.graph)
    torch.manual_seed(0)
    ours = ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16), clinical.graph)
    assert grade_distance(paper) > 0.98  # the grade is one token of a long sentence and one node feature
    assert 1 - grade_distance(ours) > 2 * (1 - grade_distance(paper))  # grades at least twice as far apart


def test_bad_batches_are_refused(clinical):
    with pytest.raises(ValueError, match="prompts"):
        clinical(FINDINGS, PROMPTS[:2])
    with pytest.raises(ValueError, match="findings"):
        clinical([], [])


def test_frozen_text_encoder_caches_final_embeddings(clinical):
    cond = ClinicalConditioner(ConditionConfig(dim=DIM, graph_hidden=16, text_trainable_layers=0),
                               clinical.graph).train()
    assert not any(k.startswith("text.") for k in cond.state_dict())
    c1, _ = cond(FINDINGS, PROMPTS)
    misses = cond.text.embed_cache.misses
    c2, _ = cond(FINDINGS, PROMPTS)
    assert cond.text.embed_cache.misses == misses and torch.equal(c1, c2)
    c2.sum().backward()
    assert cond.lambda_text.grad is not None and cond.text_proj.weight.grad is not None


def test_clinical_checkpoint_round_trip(tmp_path, clinical):
    cfg = ConditionConfig(dim=DIM, graph_hidden=16)
    torch.manual_seed(1)
    trained = ClinicalConditioner(cfg, clinical.graph).eval()
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(tmp_path / "cond", {"cond": trained}, {"cond": cfg.to_dict()})
    config, state = load_state(tmp_path / "cond")
    torch.manual_seed(2)
    fresh = build_conditioner(ConditionConfig.from_dict(config["cond"]), clinical.graph).eval()
    load_into({"cond": fresh}, state)
    assert torch.equal(fresh(FINDINGS, PROMPTS)[0], trained(FINDINGS, PROMPTS)[0])


def test_label_conditioner_shapes_gradients_and_dropout():
    torch.manual_seed(0)
    cond = build_conditioner(ConditionConfig(kind="label", dim=DIM))
    assert isinstance(cond, LabelConditioner)
    c, hr = cond(FINDINGS, PROMPTS)
    assert c.shape == (4, DIM) and torch.equal(hr, torch.tensor([80.0, 72.0, 110.0, 64.0]))
    assert torch.cdist(c, c).fill_diagonal_(1.0).min() > 1e-3
    assert torch.equal(cond(FINDINGS)[0], c)  # labels only: prompts are not needed
    c.sum().backward()
    assert cond.attributes.embeddings["grade"].weight.grad.abs().sum() > 0
    drop = torch.tensor([False, True, False, False])
    c_drop, _ = cond(FINDINGS, drop_mask=drop)
    assert torch.equal(c_drop[1], cond.null(1)[0]) and torch.equal(c_drop[0], c[0])
    assert cond.fusion_weights() == {}


def test_label_conditioner_names_unknown_values():
    cond = LabelConditioner(ConditionConfig(kind="label", dim=DIM))
    with pytest.raises(ValueError, match=r"timing: unknown value 'sometimes'; allowed: early-systolic"):
        cond([Findings(murmur="present", timing="sometimes")])


def test_config_validation_and_round_trip():
    cfg = ConditionConfig(kind="label", dim=64, fusion_init=[0.8, 0.2])
    assert ConditionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"kind: unknown value 'text'; allowed: clinical, label"):
        ConditionConfig(kind="text")
    with pytest.raises(ValueError, match=r"unknown condition config field\(s\) \['width'\]"):
        ConditionConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="text_trainable_layers: 7 not allowed; allowed: 0..6"):
        build_conditioner(ConditionConfig(text_trainable_layers=7), graph=object())


def test_deepcopy_gives_an_equal_model_with_fresh_caches(clinical):
    """The trainer and the what-if view copy models; caches (and their locks) are not shared."""
    clinical(FINDINGS, PROMPTS)
    twin = copy.deepcopy(clinical)
    assert len(twin.text.hidden_cache) == 0 and len(twin.subgraphs) == 0
    assert torch.equal(twin(FINDINGS, PROMPTS)[0], clinical(FINDINGS, PROMPTS)[0])


def test_concurrent_requests_share_one_model(clinical):
    """The app answers requests from threads: shared tokenizer and caches must not break."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [[f"Heart rate {60 + 7 * i + j} bpm, request {i}." for j in range(3)] for i in range(6)]

    def encode(batch):
        with torch.inference_mode():
            return clinical.text(batch)

    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(encode, texts))
    for batch, out in zip(texts, parallel):
        assert torch.allclose(out, encode(batch), atol=1e-6)
