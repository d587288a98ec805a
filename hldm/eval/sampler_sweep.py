"""`python -m hldm eval sweep`: which sampler settings to ship, on one harness.

    python -m hldm eval sweep --checkpoint checkpoints/default            # writes reports/sweep-<name>/
    python -m hldm eval sweep --checkpoint DIR --rows dpmpp-20-32 unipc-6-8 --seeds 1

A row is SAMPLER-STEPS-GL: the diffusion sampler, its number of steps and the Griffin-Lim
iterations of the inversion (`DiffusionConfig.gl_iters`). Each row generates one 4 s clip per
clip of held-out half B (B's findings) for every seed and is read by the trained evaluator
against half A: FAD of the pooled seeds (lower is better), murmur CF (the evaluator reads back
murmur status, timing, grade ...), the realism AUC of a classifier telling half A from the
generated clips (0.5: cannot tell), the what-if grade sweep I..VI per pitch (murmur level re
S1/S2 along the app's what-if, 8 s, swing in dB and Spearman rho) and the seconds per clip of
the batched generation. DDPM-1000 is the quality reference a fast default must stay near; its
grade sweep is skipped (an hour of CPU) because the default is compared with today's there.
The full report's sweep (`python -m hldm eval`) is the same measurement at its own sizes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

# Fast rows first: DDPM-1000 alone costs more CPU than all of them together.
DEFAULT_ROWS = ("dpmpp-20-32", "dpmpp-20-8", "dpmpp-10-8", "dpmpp-8-8", "dpmpp-6-8", "dpmpp3-6-8",
                "unipc-8-8", "unipc-6-8", "unipc-5-8", "unipc-4-8", "ddpm-1000-32")
REFERENCE = "ddpm-1000-32"
REFERENCE_SEEDS = 1  # 64 clips of DDPM-1000 already cost an hour of 2-core CPU
CLIP_SECONDS = 4.0  # the metrics table's clip length
SWEEP_SECONDS = 8.0  # the grade sweep's clips: several beats for the segmentation


def parse_row(text: str) -> tuple[str, int, int]:
    """'unipc-6-8' -> ('unipc', 6, 8); ValueError names what is wrong."""
    from hldm.diffusion.schedules import SAMPLERS

    parts = text.split("-")
    if len(parts) != 3 or parts[0] not in SAMPLERS or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"row {text!r}: expected SAMPLER-STEPS-GL with SAMPLER in {', '.join(SAMPLERS)}, "
                         "e.g. unipc-6-8")
    return parts[0], int(parts[1]), int(parts[2])


@contextlib.contextmanager
def generation_defaults(pipe, **changes):
    """The pipeline's generation defaults (sampler, steps, gl_iters ...) changed for a block, so
    everything under it (generate, what_if) runs with them, then restored."""
    saved = pipe.config.diffusion
    pipe.config.diffusion = dataclasses.replace(saved, **changes)
    try:
        yield
    finally:
        pipe.config.diffusion = saved


def grade_swing(pipe, seeds: int, seed: int) -> dict:
    """Per pitch: the generated what-if grade sweep's I->VI swing (dB re S1/S2) and Spearman rho
    (the report's listener section, `listener_report.grade_sweep`, without its simulator rows)."""
    from hldm.eval import listener_report as LR

    sweep = LR.grade_sweep(pipe, SWEEP_SECONDS, seeds, seed, simulator=False)["generated"]
    return {pitch: {"swing_db": v["swing_db"], "spearman": v["spearman"]} for pitch, v in sweep.items()}


def measure_row(pipe, evaluator, half_a, read_a, half_b, row: str, seeds: int, seed: int, swing: bool) -> dict:
    """Every number of one row (see the module docstring)."""
    from hldm.eval import harness as H
    from hldm.eval import listener as L
    from hldm.eval import metrics as M

    sampler, steps, gl = parse_row(row)
    with generation_defaults(pipe, sampler=sampler, steps=steps, gl_iters=gl):
        start = time.process_time()
        sets = [H.generate_clips(pipe, half_b.findings, row, seed=seed + 1000 * s, seconds=CLIP_SECONDS)
                for s in range(seeds)]
        cpu = time.process_time() - start
        gen = H.concat(sets, row)
        read = H.read(evaluator, gen)
        per_seed = np.split(read.embeddings, np.cumsum([len(s) for s in sets])[:-1])  # gen is the sets in order
        result = {"row": row, "sampler": sampler, "steps": steps, "gl_iters": gl, "n_clips": len(gen),
                  "FAD": M.frechet_distance(read_a.embeddings, read.embeddings),
                  "FAD_per_seed": [M.frechet_distance(read_a.embeddings, e) for e in per_seed],
                  "CF": M.clinical_fidelity(H.requested_values(gen.findings), read.values)["mean"],
                  "realism_auc": L.realism_auc(half_a.audio, gen.audio, half_a.groups, gen.groups, seed),
                  "seconds_per_clip": float(np.mean([s.seconds_per_clip for s in sets])),
                  "cpu_seconds_per_clip": cpu / len(gen)}
        if swing:
            result["grade"] = grade_swing(pipe, seeds, seed)
    return result


def run(pipe, evaluator, rows, n_clips: int, seeds: int, seed: int = 0, log=print, on_row=None,
        done: tuple = ()) -> dict:
    """Every row in order but those in `done` (rows measured before with the same sizes); on_row(result
    so far) after each, so a long DDPM row need not lose the rest."""
    from hldm.eval import harness as H

    real = H.real_clips("test", n=n_clips, seconds=CLIP_SECONDS, seed=seed)
    half_a, half_b = H.split_halves(real, seed)
    read_a = H.read(evaluator, half_a)
    out = {"reference": real.source, "n_a": len(half_a), "n_b": len(half_b), "n_clips": n_clips, "seeds": seeds,
           "seed": seed, "rows": list(done)}
    for row in rows:
        if any(r["row"] == row for r in done):
            continue
        log(f"sweep: {row} ...")
        out["rows"].append(measure_row(pipe, evaluator, half_a, read_a, half_b, row,
                                       REFERENCE_SEEDS if row == REFERENCE else seeds, seed,
                                       swing=row != REFERENCE))
        if on_row is not None:
            on_row(out)
    return out


def _f(v, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def markdown(result: dict, checkpoint: str) -> str:
    """The sweep as a report page: one table, FAD relative to the DDPM-1000 reference when it ran."""
    from hldm.clinical.vocabulary import PITCHES

    ref = next((r["FAD_per_seed"][0] for r in result["rows"] if r["row"] == REFERENCE), None)
    head = ["sampler", "steps", "GL iters", "FAD", "FAD seed 0", "seed 0 / DDPM-1000", "CF", "realism AUC"]
    head += [f"grade swing {p} dB (rho)" for p in PITCHES] + ["s / clip (CPU s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        grade = r.get("grade", {})
        fad0 = r["FAD_per_seed"][0]
        cells = [r["sampler"], str(r["steps"]), str(r["gl_iters"]), _f(r["FAD"]), _f(fad0),
                 _f(fad0 / ref) if ref else "-", _f(r["CF"]), _f(r["realism_auc"])]
        cells += [f"{_f(grade[p]['swing_db'], 2)} ({_f(grade[p]['spearman'], 2)})" if p in grade else "-"
                  for p in PITCHES]
        cells.append(f"{r['seconds_per_clip']:.3f} ({r['cpu_seconds_per_clip']:.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    reference = "real" if result["reference"] == "circor" else "SIMULATOR (no real data)"
    return "\n".join([
        f"# Sampler sweep: {checkpoint}", "",
        f"Reference: {reference} held-out half A ({result['n_a']} clips, 4 s); each row generates one clip per "
        f"clip of half B ({result['n_b']}) with B's findings, {result['seeds']} seed(s) pooled ({REFERENCE_SEEDS} "
        "for DDPM-1000, so rows are compared with it on seed 0: the same findings and initial noise). FAD and CF from "
        "the trained evaluator (checkpoints/evaluator); realism AUC: a logistic classifier on band-energy "
        "statistics, patient-grouped folds (0.5 = cannot tell from real); grade swing: the what-if grade "
        f"sweep I..VI of a holosystolic murmur, {SWEEP_SECONDS:g} s, murmur band re S1/S2; s / clip: batches "
        "of 16 4 s clips, wall (process CPU). Written by `python -m hldm eval sweep` "
        "(hldm/eval/sampler_sweep.py).", "", *lines, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hldm eval sweep", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--evaluator", type=Path, default=None, help="default checkpoints/evaluator")
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), metavar="SAMPLER-STEPS-GL")
    p.add_argument("--n-clips", type=int, default=128, help="held-out real clips (two halves)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default reports/sweep-<checkpoint name>")
    p.add_argument("--resume", action="store_true", help="keep the rows of OUT/sweep.json measured with the "
                                                         "same sizes; measure only the others")
    args = p.parse_args(argv)
    try:
        for row in args.rows:
            parse_row(row)
        if args.n_clips < 8 or args.seeds < 1:
            raise ValueError("--n-clips must be >= 8 and --seeds >= 1")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from hldm.eval.evaluator_cli import load_evaluator
    from hldm.models.checkpoint import CheckpointError
    from hldm.paths import REPO
    from hldm.pipeline import HLDMPipeline

    try:
        pipe = HLDMPipeline.from_pretrained(args.checkpoint)
        evaluator = load_evaluator(args.evaluator or REPO / "checkpoints" / "evaluator")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or REPO / "reports" / f"sweep-{args.checkpoint.resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    done = ()
    if args.resume and (out / "sweep.json").is_file():
        before = json.loads((out / "sweep.json").read_text())
        if (before.get("n_clips"), before.get("seeds"), before.get("seed")) == (args.n_clips, args.seeds, args.seed):
            done = tuple(before["rows"])

    def write(result: dict) -> None:
        (out / "sweep.json").write_text(json.dumps(result, indent=1))
        (out / "README.md").write_text(markdown(result, str(args.checkpoint)))

    run(pipe, evaluator, args.rows, args.n_clips, args.seeds, args.seed, on_row=write, done=done)
    print(f"wrote {out / 'README.md'}")
    return 0
