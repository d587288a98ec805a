"""`python -m hldm course acceptance`: how often the model's clips pass the course's verification gate,
per condition (a quality figure for the model card).

    python -m hldm course acceptance [--checkpoint checkpoints/default] [--evaluator checkpoints/evaluator]
                                     [--seeds 3] [--out reports/course-acceptance]

Each condition gets `--seeds` cases (its profile's findings, `set_specs`), each rendered through the
gate exactly as the app renders a case; acceptance.json and README.md (a table) land in --out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hldm.clinical.vocabulary import CONDITIONS
from hldm.paths import DEFAULT_CHECKPOINT, REPO
from hldm.teaching.cases import CASE_SECONDS, MAX_TRIES, EvaluatorVerifier, acceptance, model_id, render_case, set_specs

DEFAULT_EVALUATOR = REPO / "checkpoints" / "evaluator"


def acceptance_table(rows: dict[str, dict]) -> str:
    lines = ["| condition | cases | model draws | accepted | draws accepted | cases on first draw | "
             "cases from the model |", "|---|---|---|---|---|---|---|"]
    for cond, r in rows.items():
        lines.append(f"| {cond} | {r['cases']} | {r['draws']} | {r['accepted']} | {r['draw_rate']:.0%} | "
                     f"{r['first_try_rate']:.0%} | {r['model_rate']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hldm course", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("acceptance", help="verification-gate acceptance rate per condition")
    acc.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    acc.add_argument("--evaluator", type=Path, default=DEFAULT_EVALUATOR)
    acc.add_argument("--seeds", type=int, default=3, help="cases per condition (default %(default)s)")
    acc.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    acc.add_argument("--out", type=Path, default=REPO / "reports" / "course-acceptance")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds: {args.seeds}; at least 1")
    from hldm.eval.evaluator_cli import load_evaluator
    from hldm.pipeline import HLDMPipeline

    pipe = HLDMPipeline.from_pretrained(args.checkpoint)
    verifier = EvaluatorVerifier(load_evaluator(args.evaluator))
    mid = model_id(pipe)
    cases, t0 = [], time.perf_counter()
    for cond in CONDITIONS:
        for spec in set_specs([cond] * args.seeds, seed=0):
            cases.append(render_case(pipe, spec, verifier, steps=args.steps, mid=mid))
            print(f"{cond}: {cases[-1].source} after {len(cases[-1].tries)} draw(s) "
                  f"{[t['problems'] for t in cases[-1].tries]}", flush=True)
    rows = acceptance(cases)
    draws, accepted = sum(r["draws"] for r in rows.values()), sum(r["accepted"] for r in rows.values())
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"model": mid, "checkpoint": str(args.checkpoint), "evaluator": str(args.evaluator),
              "seeds_per_condition": args.seeds, "max_tries": MAX_TRIES, "seconds": CASE_SECONDS,
              "steps": args.steps, "wall_s": round(time.perf_counter() - t0, 1), "per_condition": rows,
              "overall": {"draws": draws, "accepted": accepted, "cases": len(cases)}}
    (args.out / "acceptance.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / "README.md").write_text(
        f"# Course cases: verification-gate acceptance per condition\n\n"
        f"Model `{mid}` ({args.checkpoint.name}), evaluator `{args.evaluator.name}`; {args.seeds} case(s) per "
        f"condition, {CASE_SECONDS:g} s clips, up to {MAX_TRIES} draws a case; `python -m hldm course acceptance "
        f"--seeds {args.seeds}`. Overall {accepted} of {draws} draws accepted; {accepted} of {len(cases)} cases "
        f"served by the model, the rest by the simulator.\n\n{acceptance_table(rows)}\n")
    print(acceptance_table(rows))
    return 0
