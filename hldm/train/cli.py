"""`python -m hldm train --stage vae|ldm|finetune|distill|all --config train/<preset>.toml [--resume] [--out DIR]`.

Multi-GPU: `torchrun --nproc_per_node N -m hldm train --stage all --config paper`
(one process per GPU, NCCL; on CPU the same command uses gloo). See train/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hldm.paths import REPO
from hldm.train.config import DATA_SOURCES, STAGES, ConfigError, load_config
from hldm.train.state import CheckpointError, ConfigMismatchError
from hldm.train.trainer import duration, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hldm train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Presets: tiny (tests, minutes on CPU), cpu (the shipped model, "
                                       "<= ~100 min on 2 cores), paper (GPU; the paper's epochs).")
    p.add_argument("--stage", required=True, choices=(*STAGES, "all"),
                   help="which stage to train; 'all' runs vae -> ldm -> finetune and exports")
    p.add_argument("--config", required=True, help="preset name (tiny, cpu, paper) or path to a TOML file")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<preset name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue each stage from its last checkpoint in --out (finished stages are skipped)")
    p.add_argument("--data", choices=DATA_SOURCES, default=None,
                   help="override the preset's data source: circor, sim or mix")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop a stage at this step (an interruption on purpose; --resume continues)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config)
        if args.data:
            cfg.data.source = args.data
        if args.stop_after is not None and args.stop_after < 1:
            raise ConfigError("--stop-after", f"must be >= 1, got {args.stop_after}")
        out = args.out or REPO / "runs" / cfg.name
        # "all" is the paper's three stages; distilling a few-step student is a choice made after them.
        stages = [s for s in STAGES if s != "distill"] if args.stage == "all" else [args.stage]
        results = run(stages, cfg, out, resume=args.resume, stop_after=args.stop_after, device=args.device)
    except (ConfigError, ConfigMismatchError, CheckpointError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":
        return 0 if results and results[-1].completed else 3
    for r in results:
        state = "done" if r.completed else "stopped"
        print(f"{r.stage}: {state} at step {r.step}/{r.total_steps} ({duration(r.wall_s)}) -> {r.dir}")
    return 0 if results and results[-1].completed else 3
