"""`python -m hldm <command> ...`: a thin dispatcher; each command lives with its concept."""
from __future__ import annotations

import importlib
import sys

# command -> "module:function"; the function takes the remaining argv and returns an exit code.
COMMANDS = {
    "generate": ("hldm.pipeline_cli:main", "synthesize a clip from findings"),
    "simulate": ("hldm.data.simulator:main", "physiological simulator clip + labels"),
    "data": ("hldm.data.summary:main", "CirCor loader summary and split"),
    "train": ("hldm.train.cli:main", "3-stage trainer"),
    "eval": ("hldm.eval.report:main", "metrics report"),
    "bench": ("hldm.bench:main", "latency / throughput benchmark"),
    "export": ("hldm.pipeline_cli:export_main", "batch export of clips + labels"),
    "ratings": ("hldm.ratings.cli:main", "expert rating sessions"),
    "segmenter": ("hldm.train.segmenter:main", "train and score the recording editor's S1/S2 segmenter"),
    "course": ("hldm.teaching.cli:main", "auscultation course: case acceptance per condition"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m hldm <command> [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:10s} {help_}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    target, _ = COMMANDS[argv[0]]
    module, func = target.split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
