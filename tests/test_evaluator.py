"""The in-domain evaluator: targets, shapes, masked loss."""
import torch

from hldm.clinical.vocabulary import Findings
from hldm.models.evaluator import (HEAD_CLASSES, IGNORE, EvaluatorConfig, PCGEvaluator,
                                   decode_predictions, finding_targets)

SMALL = EvaluatorConfig(channels=(16, 16), emb_dim=32)


def test_targets_mark_absent_murmur_as_class_and_unknown_as_ignore():
    absent = finding_targets(Findings())
    assert absent["murmur"] == 0 and absent["grade"] == 0 and absent["timing"] == 0
    assert absent["condition"] == IGNORE
    mr = finding_targets(Findings(murmur="present", timing="holosystolic", shape="plateau", grade=3,
                                  pitch="high", quality="blowing", location="MV",
                                  condition="mitral regurgitation"))
    assert HEAD_CLASSES["grade"][mr["grade"]] == 3
    assert HEAD_CLASSES["timing"][mr["timing"]] == "holosystolic"
    unknown_shape = finding_targets(Findings(murmur="present", timing="holosystolic", grade=2))
    assert unknown_shape["shape"] == IGNORE


def test_shapes_and_decode():
    model = PCGEvaluator(SMALL)
    emb, logits = model(torch.randn(3, 129, 500))
    assert emb.shape == (3, 32)
    assert {k: v.shape[-1] for k, v in logits.items()} == {k: len(v) for k, v in HEAD_CLASSES.items()}
    decoded = decode_predictions(logits)
    assert all(len(v) == 3 for v in decoded.values())
    assert decoded["murmur"][0] in ("absent", "present")


def test_loss_ignores_unknown_labels_and_reaches_every_head():
    torch.manual_seed(0)
    model = PCGEvaluator(SMALL)
    feat = torch.randn(4, 129, 200)
    targets = {h: torch.zeros(4, dtype=torch.long) for h in HEAD_CLASSES}
    targets["condition"] = torch.full((4,), IGNORE)
    loss, parts = model.loss(feat, targets)
    assert "condition" not in parts and torch.isfinite(loss)
    loss.backward()
    assert model.heads["condition"].weight.grad is None or model.heads["condition"].weight.grad.abs().sum() == 0
    assert model.heads["grade"].weight.grad.abs().sum() > 0
