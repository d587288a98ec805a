"""`python -m hldm eval train-evaluator --out checkpoints/evaluator`: fit, score and save the evaluator.

Trains hldm.models.evaluator.PCGEvaluator on real training-split CirCor windows
plus simulator clips (the only source of condition labels and of grades IV-VI),
then saves it as a safetensors checkpoint dir (hldm.models.checkpoint) with its
config and its validation-split accuracy per attribute. Without the real data it
trains on simulator clips only and says so in the saved config.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from torch.utils.data import ConcatDataset, Subset

from hldm.models.checkpoint import CheckpointError, load_into, load_state, save_checkpoint
from hldm.models.evaluator import EvaluatorConfig, PCGEvaluator

MODEL_TYPE = "pcg-evaluator"
MAX_BYTES = 3 * 1024 * 1024


def save_evaluator(directory: str | Path, model: PCGEvaluator, info: dict) -> Path:
    config = {"model_type": MODEL_TYPE, "config": model.cfg.to_dict(), **info}
    card = ("# In-domain PCG evaluator\n\nThe FAD/IS/CF listener of the H-LDM evaluation harness "
            "(hldm.eval). Trained on: " + info.get("trained_on", "?") + ".\n")
    path = save_checkpoint(directory, {"evaluator": model}, config, card)
    size = (path / "model.safetensors").stat().st_size
    if size > MAX_BYTES:
        raise CheckpointError(f"{path}: evaluator weights are {size / 2**20:.1f} MB; keep it under 3 MB")
    return path


def load_evaluator(directory: str | Path) -> PCGEvaluator:
    """Rebuild a saved evaluator (eval mode, CPU); CheckpointError if the directory is not one."""
    raw, state = load_state(directory)
    if raw.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{directory}: model_type {raw.get('model_type')!r}, expected {MODEL_TYPE!r}")
    model = PCGEvaluator(EvaluatorConfig.from_dict(raw["config"]))
    load_into({"evaluator": model}, state)
    return model.eval()


def training_data(seconds: float, n_sim: int, max_real: int, seed: int = 0):
    """(dataset, description): real train-split windows (at most max_real, random) + simulator clips."""
    import numpy as np

    from hldm.data.windows import SimulatedWindows
    from hldm.eval.harness import circor_available

    parts, desc = [SimulatedWindows(n_sim, seconds=seconds, seed=seed)], [f"{n_sim} simulator clips"]
    if circor_available():
        from hldm.data.circor import load_circor, load_or_make_split
        from hldm.data.windows import CirCorWindows
        from hldm.paths import circor_dir

        index = load_circor(circor_dir())
        recs = [r for r in index.recordings_of(load_or_make_split(index)["train"]) if r.murmur_status != "unknown"]
        real = CirCorWindows(recs, seconds=seconds)
        if len(real) > max_real:
            real = Subset(real, np.random.default_rng(seed).choice(len(real), max_real, replace=False).tolist())
        parts.insert(0, real)
        desc.insert(0, f"{len(real)} real CirCor train-split windows")
    else:
        desc.append("NO REAL DATA (CirCor absent): simulator only")
    return ConcatDataset(parts), " + ".join(desc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hldm eval train-evaluator", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--sim", type=int, default=4000, help="simulator clips in the training set")
    p.add_argument("--max-real", type=int, default=30000, help="cap on real training windows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="a small evaluator (tests, quick checks)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 1 or args.sim < 0 or not args.seconds > 0:
        print(f"error: --steps must be >= 1, --sim >= 0, --seconds > 0 (got {args.steps}, {args.sim}, "
              f"{args.seconds})", file=sys.stderr)
        return 2
    from hldm.eval.evaluator_training import attribute_accuracy, train_evaluator
    from hldm.eval.harness import ClipDataset, real_clips

    start = time.perf_counter()
    data, desc = training_data(args.seconds, args.sim, args.max_real, args.seed)
    print(f"training the evaluator on {desc}")
    cfg = EvaluatorConfig(channels=(16, 32), emb_dim=32) if args.small else EvaluatorConfig()
    model = train_evaluator(data, steps=args.steps, batch_size=args.batch_size, seed=args.seed, cfg=cfg)
    val = real_clips("val", n=256, seconds=args.seconds, seed=args.seed)
    acc = attribute_accuracy(model, ClipDataset(val))
    info = {"trained_on": desc, "steps": args.steps, "seconds": args.seconds, "seed": args.seed,
            "val_accuracy": {k: round(v, 4) for k, v in acc.items()}, "val_source": val.source,
            "train_minutes": round((time.perf_counter() - start) / 60, 2)}
    path = save_evaluator(args.out, model, info)
    print(json.dumps(info, indent=1))
    print(f"saved {path}")
    return 0
