"""`python -m hldm generate` (one clip) and `python -m hldm export` (a labelled ZIP of clips).

    python -m hldm generate --condition "aortic stenosis" --seed 3 --out as.wav
    python -m hldm generate --findings '{"murmur": "present", "timing": "holosystolic", "grade": 3}' --out mr.wav
    python -m hldm export --n 20 --condition "mitral regurgitation" --out clips.zip

`generate` writes the WAV and, next to it, a JSON record of findings, L1/L2/L3
prompts, sampler settings, per-step w_i and the S1/S2/murmur intervals.
`export` writes a ZIP of WAVs with labels.csv (one row per clip) and labels.json
(the same JSON records); without --condition/--findings it cycles through all 17
conditions' typical findings. Both go through HLDMPipeline, like the app.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from hldm.clinical.vocabulary import CONDITIONS, SUBSPACES, Findings
from hldm.paths import DEFAULT_CHECKPOINT

CSV_FIELDS = ("file", "seed", "condition", "murmur", "timing", "shape", "grade", "pitch", "quality", "location",
              "radiation", "extra_sounds", "heart_rate", "age_group", "sex", "l1", "l2", "l3", "sampler", "steps",
              "guidance", "seconds")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="model directory (model.safetensors + config.json); default: %(default)s")
    parser.add_argument("--findings", help="findings as a JSON object, or a path to a .json file")
    parser.add_argument("--condition", action="append", metavar="NAME",
                        help=f"start from a condition's typical findings (--findings fields override); "
                             f"export: repeat to cycle several. One of: {', '.join(CONDITIONS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp", "dpmpp_sde"), help="default: the model's")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--raw", dest="conform", action="store_false", default=None,
                        help="the model's clip as sampled: not edited to the findings' rate, murmur phase and level")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def _findings_json(text: str | None) -> dict:
    if text is None:
        return {}
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text()
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--findings: not a JSON object or a readable .json file: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"--findings: expected a JSON object of findings fields, got {type(d).__name__}")
    return d


def _requests(conditions: list[str] | None, overrides: dict) -> list[Findings]:
    """Validated findings: each condition's typical findings with `overrides` applied, or the overrides alone."""
    from hldm.clinical.validation import validate_dict

    if not conditions:
        return [validate_dict(overrides)]
    return [validate_dict({"condition": name, **overrides}) for name in conditions]


def _run(argv: list[str], parser: argparse.ArgumentParser, body) -> int:
    from hldm.clinical.validation import FindingsError
    from hldm.models.checkpoint import CheckpointError

    args = parser.parse_args(argv)
    try:
        return body(args)
    except (FindingsError, CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _settings(args) -> dict:
    return dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, seconds=args.seconds,
                conform=args.conform)


def main(argv: list[str]) -> int:
    """`python -m hldm generate`: one clip -> WAV + JSON."""
    parser = argparse.ArgumentParser(prog="python -m hldm generate", description=__doc__.split("\n\n")[0])
    _common(parser)
    parser.add_argument("--out", required=True, help="output .wav; the JSON record goes next to it")

    def body(args) -> int:
        from hldm.audio.io import write_wav
        from hldm.pipeline import HLDMPipeline

        if args.condition and len(args.condition) > 1:
            raise ValueError("--condition: give one condition to generate (repeat it only with export)")
        findings = _requests(args.condition, _findings_json(args.findings))[0]
        pipe = HLDMPipeline.from_pretrained(args.checkpoint, device=args.device)
        g = pipe.generate(findings, seed=args.seed, **_settings(args))
        out = Path(args.out)
        write_wav(out, g.audio, g.sr)
        out.with_suffix(".json").write_text(json.dumps(g.to_json(), indent=2) + "\n")
        print(f"wrote {out} ({g.seconds:.1f} s, {g.sampler} x {g.steps} steps, guidance {g.guidance:g}, "
              f"{g.device}) and {out.with_suffix('.json')}\nL2: {g.prompts.l2}")
        return 0

    return _run(argv, parser, body)


def _csv_row(name: str, g) -> dict:
    f = g.findings.to_dict()
    f["extra_sounds"] = ";".join(f["extra_sounds"])
    row = {k: f.get(k) for k in CSV_FIELDS if k in f}
    row.update(file=name, seed=g.seed, l1=g.prompts.l1, l2=g.prompts.l2, l3=g.prompts.l3, sampler=g.sampler,
               steps=g.steps, guidance=g.guidance, seconds=round(g.seconds, 3))
    return {k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS}


def write_export(pipe, requests: list[Findings], n: int, out, seed: int = 0, batch_size: int = 4,
                 progress: Callable[[int, int], None] | None = None, **settings) -> None:
    """n clips (seeds seed .. seed+n-1, cycling through `requests`) as a ZIP written to `out` (a path or a
    binary file): clip_NNNN_<condition>.wav at 4 kHz, labels.csv (CSV_FIELDS) and labels.json (each clip's
    record). settings: steps / guidance / sampler / seconds of `HLDMPipeline.generate`; progress(done, n)
    after each batch. The app's export writes the same ZIP."""
    from hldm.audio.io import wav_bytes

    records, table = [], io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for start in range(0, n, batch_size):
            idx = range(start, min(start + batch_size, n))
            gens = pipe.generate([requests[i % len(requests)] for i in idx], seed=seed + start, **settings)
            for i, g in zip(idx, gens):
                label = (g.findings.condition or "custom").replace(" ", "_")
                name = f"clip_{i:04d}_{label}.wav"
                zf.writestr(name, wav_bytes(g.audio, g.sr))
                writer.writerow(_csv_row(name, g))
                records.append({"file": name, **g.to_json()})
            if progress is not None:
                progress(idx[-1] + 1, n)
        zf.writestr("labels.csv", table.getvalue())
        zf.writestr("labels.json", json.dumps({"subspaces": list(SUBSPACES), "clips": records}, indent=1))


def export_main(argv: list[str]) -> int:
    """`python -m hldm export`: n clips -> ZIP of WAVs + labels.csv + labels.json (written atomically)."""
    parser = argparse.ArgumentParser(prog="python -m hldm export",
                                     description="Batch export of generated clips with their labels.")
    _common(parser)
    parser.add_argument("--n", type=int, default=20, help="number of clips (seeds seed .. seed+n-1)")
    parser.add_argument("--batch-size", type=int, default=4, help="clips generated per batched run")
    parser.add_argument("--out", required=True, help="output .zip")

    def body(args) -> int:
        from hldm.pipeline import HLDMPipeline

        if args.n < 1 or args.batch_size < 1:
            raise ValueError(f"--n and --batch-size must be >= 1, got {args.n} and {args.batch_size}")
        conditions = args.condition or ([] if args.findings else list(CONDITIONS))
        requests = _requests(conditions, _findings_json(args.findings))
        pipe = HLDMPipeline.from_pretrained(args.checkpoint, device=args.device)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            write_export(pipe, requests, args.n, tmp, seed=args.seed, batch_size=args.batch_size,
                         progress=lambda done, n: print(f"{done}/{n} clips", file=sys.stderr), **_settings(args))
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        print(f"wrote {out}: {args.n} clips + labels.csv + labels.json")
        return 0

    return _run(argv, parser, body)
