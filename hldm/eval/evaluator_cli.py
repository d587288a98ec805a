"""`python -m hldm eval train-evaluator --out checkpoints/evaluator`: fit, score and save the evaluator.

Trains hldm.models.evaluator.PCGEvaluator on real training-split CirCor windows
plus simulator clips (the only source of condition labels and of grades IV-VI),
then saves it as a safetensors checkpoint dir (hldm.models.checkpoint) whose
config.json and model card state the data, the split, the steps and the held-out
accuracy per attribute: on every non-overlapping window of the validation-split
patients (never seen in training; the report's test split stays untouched) and on
held-out simulator clips, each beside its majority-class rate. Without the real
data it trains and scores on simulator clips only and says so.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from hldm.models.checkpoint import CheckpointError, load_single, save_checkpoint
from hldm.models.evaluator import EvaluatorConfig, PCGEvaluator

MODEL_TYPE = "pcg-evaluator"
MAX_BYTES = 3 * 1024 * 1024
MURMUR_ATTRIBUTES = ("grade", "timing", "shape", "pitch", "quality")


def save_evaluator(directory: str | Path, model: PCGEvaluator, info: dict) -> Path:
    """Checkpoint dir with `info` (data, steps, accuracies) in config.json and on the model card."""
    config = {"model_type": MODEL_TYPE, "config": model.cfg.to_dict(), **info}
    path = save_checkpoint(directory, {"evaluator": model}, config, model_card(info))
    size = (path / "model.safetensors").stat().st_size
    if size > MAX_BYTES:
        raise CheckpointError(f"{path}: evaluator weights are {size / 2**20:.1f} MB; keep it under 3 MB")
    return path


def model_card(info: dict) -> str:
    lines = ["# In-domain PCG evaluator", "",
             "The FAD/IS/CF listener of the H-LDM evaluation harness (hldm.eval): a 1-D CNN over the "
             "generator's log-STFT features (4 kHz, n_fft 256, hop 32) with one head per attribute; its "
             "embedding is the FAD feature space. VGGish is not used: it was trained on 16 kHz everyday "
             "sound and downloads its weights.", "",
             f"- trained on: {info.get('trained_on', '?')}",
             f"- split: {info.get('split', '?')}",
             f"- steps: {info.get('steps', '?')} (batch {info.get('batch_size', '?')}, seed {info.get('seed', '?')}, "
             f"{info.get('seconds', '?')} s clips), {info.get('train_minutes', '?')} min wall time, data loading "
             f"included, on {info.get('device', 'CPU')}", ""]
    for key, title in (("val_accuracy", "Held-out real accuracy"), ("sim_accuracy", "Held-out simulator accuracy")):
        acc = info.get(key)
        if not acc:
            continue
        lines += [f"## {title} ({info.get(key.replace('accuracy', 'desc'), '')})", "",
                  "| attribute | accuracy | majority-class rate | labelled clips | accuracy on murmur-present clips |",
                  "|---|---|---|---|---|"]
        for head, row in acc.items():
            present = row.get("accuracy_murmur_present")
            lines.append(f"| {head} | {row['accuracy']:.3f} | {row['majority']:.3f} | {row['n']} | "
                         f"{'-' if present is None else f'{present:.3f}'} |")
        lines.append("")
    lines += ["Attributes missing from a table have no labels there: CirCor gives no diagnosis, so the "
              "condition head learns and is scored on simulator clips only; CirCor has no grade above "
              "III (systolic) / II (diastolic).", ""]
    return "\n".join(lines)


def load_evaluator(directory: str | Path) -> PCGEvaluator:
    """Rebuild a saved evaluator (eval mode, CPU); CheckpointError if the directory is not one."""
    return load_single(directory, MODEL_TYPE, "evaluator", lambda c: PCGEvaluator(EvaluatorConfig.from_dict(c)))


def training_data(seconds: float, n_sim: int, max_real: int, seed: int = 0, spacing_s: float = 1.0):
    """(clips, description): real train-split windows (S1-aligned starts >= spacing_s apart, at most
    max_real, spread over patients) + `n_sim` simulator clips."""
    from hldm.eval.harness import circor_available, concat, real_clips, simulated_clips

    sets, desc = [], []
    if circor_available():
        real = real_clips("train", n=max_real, seconds=seconds, seed=seed, max_per_patient=max_real,
                          spacing_s=spacing_s)
        sets.append(real)
        desc.append(f"{len(real)} real CirCor windows of {len(set(real.groups))} train-split patients")
    if n_sim:
        sets.append(simulated_clips(n_sim, seconds, seed=seed))
        desc.append(f"{n_sim} simulator clips")
    if not circor_available():
        desc.append("NO REAL DATA (CirCor absent): simulator only")
    return concat(sets, "evaluator-train"), " + ".join(desc)


def scored(model: PCGEvaluator, clips) -> dict[str, dict]:
    """Per head: accuracy, the majority-class rate of the same clips, how many are labelled, and for
    the murmur-attribute heads the accuracy over murmur-present clips only (where "none" is wrong)."""
    from hldm.eval.evaluator_training import attribute_accuracy, batch_targets
    from hldm.models.evaluator import IGNORE

    acc = attribute_accuracy(model, clips.audio, clips.findings)
    present = [i for i, f in enumerate(clips.findings) if f.murmur == "present"]
    acc_present = attribute_accuracy(model, [clips.audio[i] for i in present],
                                     [clips.findings[i] for i in present]) if present else {}
    targets = batch_targets(clips.findings)
    out = {}
    for head, a in acc.items():
        labels = [int(t) for t in targets[head] if t != IGNORE]
        out[head] = {"accuracy": round(a, 4), "majority": round(Counter(labels).most_common(1)[0][1] / len(labels), 4),
                     "n": len(labels)}
        if head in MURMUR_ATTRIBUTES and head in acc_present:
            out[head]["accuracy_murmur_present"] = round(acc_present[head], 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hldm eval train-evaluator", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--sim", type=int, default=2000, help="simulator clips in the training set")
    p.add_argument("--max-real", type=int, default=8000, help="cap on real training windows")
    p.add_argument("--spacing", type=float, default=2.0, help="min seconds between real training window starts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--small", action="store_true", help="a small evaluator (tests, quick checks)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 1 or args.sim < 0 or not args.seconds > 0 or args.max_real < 0:
        print(f"error: --steps must be >= 1, --sim and --max-real >= 0, --seconds > 0 (got {args.steps}, "
              f"{args.sim}, {args.max_real}, {args.seconds})", file=sys.stderr)
        return 2
    import torch

    from hldm.eval.evaluator_training import train_evaluator
    from hldm.eval.harness import circor_available, real_clips, simulated_clips

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data, desc = training_data(args.seconds, args.sim, args.max_real, args.seed, args.spacing)
    if not len(data):
        print("error: no training clips (no real data and --sim 0)", file=sys.stderr)
        return 2
    print(f"training the evaluator on {desc} ({(time.perf_counter() - start) / 60:.1f} min to load)")
    cfg = EvaluatorConfig(channels=(16, 32), emb_dim=32) if args.small else EvaluatorConfig()
    model = train_evaluator(data.audio, data.findings, steps=args.steps, batch_size=args.batch_size,
                            seed=args.seed, cfg=cfg)
    train_minutes = (time.perf_counter() - start) / 60
    # Every non-overlapping window of the validation patients; simulator clips on their own seed.
    real = circor_available()
    val = real_clips("val", n=10**6, seconds=args.seconds, seed=args.seed, max_per_patient=10**6) if real else None
    sim = simulated_clips(max(64, min(1000, args.sim // 3)), args.seconds, seed=args.seed + 1)
    info = {"trained_on": desc, "steps": args.steps, "batch_size": args.batch_size, "seconds": args.seconds,
            "seed": args.seed, "device": f"CPU ({torch.get_num_threads()} torch threads)",
            "split": ("CirCor patients split 70/15/15 by hldm.data.circor (seeded, stratified by murmur "
                      "status); trained on train, scored on val" if real else
                      "simulator only: trained and scored on disjoint simulator seeds"),
            "val_accuracy": scored(model, val) if real else {},
            "val_desc": f"{len(val)} non-overlapping windows of {len(set(val.groups))} val-split patients"
                        if real else "no real data",
            "sim_accuracy": scored(model, sim), "sim_desc": f"{len(sim)} simulator clips, unseen seed",
            "train_minutes": round(train_minutes, 1)}
    path = save_evaluator(args.out, model, info)
    print(json.dumps({k: info[k] for k in ("val_accuracy", "sim_accuracy", "train_minutes")}, indent=1))
    print(f"saved {path}")
    return 0
