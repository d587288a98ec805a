"""Augmentation experiment (the paper's +11.3 %): do generated clips of rare classes help a classifier?

For each seed, two evaluators are trained from scratch with the same steps and
seed: one on real training-split windows only, one on the same windows plus
H-LDM clips generated (through HLDMPipeline) for the rare classes. Both are
scored on held-out real patients: overall accuracy and rare-class accuracy
(over test clips whose true class is rare) of each studied head. CirCor gives
no diagnosis per patient, so the heads studied are murmur attributes it does
label (timing and grade by default); the condition head has no real test labels.

Rare classes: classes of a head holding under `rare_share` of its labelled
training clips (and present among the test clips); when none is that rare,
the two least frequent present classes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

from hldm.clinical.vocabulary import Findings
from hldm.eval.harness import ClipSet, concat, generate_clips, read, requested_values
from hldm.models.evaluator import EvaluatorConfig

HEADS = ("timing", "grade")


def class_values(findings: Sequence[Findings], head: str) -> list:
    return requested_values(findings, (head,))[head]


def rare_classes(train: Sequence[Findings], test: Sequence[Findings], head: str, rare_share: float = 0.05) -> list:
    counts = Counter(v for v in class_values(train, head) if v is not None)
    in_test = {v for v in class_values(test, head) if v is not None}
    total = sum(counts.values())
    present = [v for v in in_test if counts.get(v, 0) < rare_share * total]
    if present:
        return sorted(present, key=str)
    return sorted(in_test, key=lambda v: (counts.get(v, 0), str(v)))[:2]


def templates_for(train: Sequence[Findings], head: str, value) -> list[Findings]:
    """Training findings of a rare class, the requests for its synthetic clips (a murmur-attribute
    value never seen in training is asked for on top of a training murmur)."""
    own = [f for f, v in zip(train, class_values(train, head)) if v == value]
    if own:
        return own
    from hldm.clinical.validation import validate

    out = []
    for f in train:
        if f.murmur == "present":
            try:
                out.append(validate(f.with_(**{head: value})))
            except ValueError:
                continue
    return out


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (0 for one value)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def _accuracy(evaluator, test: ClipSet, head: str, rare: list) -> tuple[float, float]:
    truth = class_values(test.findings, head)
    pred = read(evaluator, test).values[head]
    hits = [(t == p, t in rare) for t, p in zip(truth, pred) if t is not None]
    overall = float(np.mean([h for h, _ in hits])) if hits else float("nan")
    rare_hits = [h for h, r in hits if r]
    return overall, float(np.mean(rare_hits)) if rare_hits else float("nan")


def run(pipe, train: ClipSet, test: ClipSet, seeds: Sequence[int] = (0, 1, 2), steps: int = 600,
        per_class: int = 16, heads: Sequence[str] = HEADS, seconds: float = 4.0,
        cfg: EvaluatorConfig | None = None, rare_share: float = 0.05, batch_size: int = 32) -> dict:
    """The experiment; returns per head the rare classes, per-seed accuracies and mean +/- 95 % CI."""
    from hldm.eval.evaluator_training import train_evaluator

    rare = {h: rare_classes(train.findings, test.findings, h, rare_share) for h in heads}
    requests = []
    for h in heads:
        for value in rare[h]:
            pool = templates_for(train.findings, h, value)
            requests += [pool[k % len(pool)] for k in range(per_class)] if pool else []
    synthetic = generate_clips(pipe, requests, "synthetic-rare", seed=10_000, seconds=seconds) if requests else None
    results = {h: {"baseline": {"overall": [], "rare": []}, "augmented": {"overall": [], "rare": []}} for h in heads}
    for seed in seeds:
        for arm in ("baseline", "augmented"):
            data = concat([train, synthetic], "augmented") if arm == "augmented" and synthetic else train
            model = train_evaluator(data.audio, data.findings, steps=steps, seed=seed, cfg=cfg, progress=False,
                                    batch_size=batch_size)
            for h in heads:
                overall, rare_acc = _accuracy(model, test, h, rare[h])
                results[h][arm]["overall"].append(overall)
                results[h][arm]["rare"].append(rare_acc)
    summary = {}
    for h in heads:
        summary[h] = {"rare_classes": [str(v) for v in rare[h]],
                      "n_test_rare": sum(v in rare[h] for v in class_values(test.findings, h)),
                      **{arm: {k: {"per_seed": vals,
                                   "mean_ci": mean_ci([x for x in vals if np.isfinite(x)] or [np.nan])}
                               for k, vals in results[h][arm].items()} for arm in ("baseline", "augmented")}}
    return {"heads": summary, "seeds": list(seeds), "steps": steps, "n_train": len(train),
            "n_synthetic": len(synthetic) if synthetic else 0, "n_test": len(test), "source": train.source}
