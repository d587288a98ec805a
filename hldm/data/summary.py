"""`python -m hldm data summary|split|windows`: what the CirCor loader sees, the patient split,
and the training windows (with their loading speed)."""
from __future__ import annotations

import argparse
import os
import time
from collections import Counter

from hldm.data.circor import SPLITS, CirCorIndex, load_circor, load_or_make_split, manifest_path, split_patients
from hldm.paths import circor_dir

MAX_EXAMPLES = 8  # problems listed per kind; the rest are counted


def _table(title: str, counts: Counter, order=None) -> list[str]:
    keys = list(order) if order else sorted(counts, key=lambda k: (-counts[k], str(k)))
    keys = [k for k in keys if counts.get(k)] + [k for k in counts if k not in keys]
    return [f"{title}:"] + [f"  {str(k):24s} {counts[k]:6d}" for k in keys]


def summary_lines(index: CirCorIndex, split: dict[str, list[str]]) -> list[str]:
    recs = index.recordings
    present = [r for r in recs if r.murmur_status == "present"]
    out = [f"root: {index.root}", f"patients: {len(index.patients)}", f"recordings: {len(recs)}",
           f"  with audio: {sum(r.audio_path is not None for r in recs)}",
           f"  with segmentation: {sum(r.segmentation is not None for r in recs)}",
           f"  with heart rate: {sum(r.heart_rate is not None for r in recs)}"]
    split_of = {p: s for s in SPLITS for p in split[s]}
    out.append("split (patients / recordings, by patient murmur status):")
    for s in SPLITS:
        status = Counter(index.patients[p].murmur_status for p in split[s])
        n_rec = sum(split_of.get(r.patient_id) == s for r in recs)
        out.append(f"  {s:6s} {len(split[s]):5d} / {n_rec:5d}   " +
                   "  ".join(f"{k} {status[k]}" for k in ("present", "absent", "unknown")))
    out += _table("patient murmur status", Counter(p.murmur_status for p in index.patients.values()),
                  ("present", "absent", "unknown"))
    out += _table("recording murmur status", Counter(r.murmur_status for r in recs), ("present", "absent", "unknown"))
    out += _table("recording location", Counter(r.raw_location for r in recs))
    out += _table("murmur timing (recordings with a murmur)", Counter(str(r.findings.timing) for r in present))
    out += _table("murmur grade (recordings with a murmur)", Counter(str(r.findings.grade) for r in present))
    out += _table("murmur shape (recordings with a murmur)", Counter(str(r.findings.shape) for r in present))
    out += _table("age group (patients)", Counter(str(p.demographics.get("age_group")) for p in index.patients.values()))
    out += _table("recording flags", Counter(f for r in recs for f in r.flags))
    out += _table("missing findings fields (recordings)", Counter(m for r in recs for m in r.missing))
    by_kind: dict[str, list] = {}
    for p in index.problems:
        by_kind.setdefault(p.kind, []).append(p)
    out.append(f"problems: {len(index.problems)}")
    for kind, items in sorted(by_kind.items()):
        out.append(f"  {kind} ({len(items)}):")
        out += [f"    {p.path}: {p.detail}" for p in items[:MAX_EXAMPLES]]
        if len(items) > MAX_EXAMPLES:
            out.append(f"    ... and {len(items) - MAX_EXAMPLES} more")
    return out


def _windows(index: CirCorIndex, split: dict[str, list[str]], seconds: float, bench: int) -> list[str]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from hldm.data.windows import CirCorWindows, collate

    out = [f"windows of {seconds:g} s starting at S1 onsets:"]
    datasets = {s: CirCorWindows(index.recordings_of(split[s]), seconds=seconds) for s in SPLITS}
    for s, ds in datasets.items():
        spaced = CirCorWindows(ds.recordings, seconds=seconds, min_spacing_s=seconds)
        out.append(f"  {s:6s} {len(ds):6d} windows ({len(spaced)} non-overlapping) from {len(ds.recordings)} recordings")
    skipped = Counter()
    for ds in datasets.values():
        skipped.update({k: len(v) for k, v in ds.skipped.items()})
    out += _table("recordings without windows", skipped)
    if bench:
        ds = datasets["train"]
        t0 = time.perf_counter()
        decoded = ds.warm_cache(progress=True)
        out.append(f"cache: decoded {decoded} train recordings in {time.perf_counter() - t0:.1f} s")
        order = [int(i) for i in np.random.default_rng(0).permutation(len(ds))[:bench]]
        # One process with one torch thread: tiny STFTs only lose from intra-op threading.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in order:
            ds[i]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        torch.set_num_threads(threads)
        out.append(f"throughput, 1 process: {len(order) / wall:.0f} windows/s wall; {1000 * cpu / len(order):.2f} ms "
                   f"CPU per window (= {len(order) / cpu:.0f} windows/s per free core); load average "
                   f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        loader = DataLoader(Subset(ds, order), batch_size=32, num_workers=2, collate_fn=collate)
        t0 = time.perf_counter()
        n = sum(len(batch["findings"]) for batch in loader)
        out.append(f"throughput, DataLoader with 2 workers (batch 32): {n / (time.perf_counter() - t0):.0f} windows/s "
                   "(worker start-up and prompt building included)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hldm data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("summary", "counts per split, label, location, and the problems found"),
                        ("split", "write the patient split manifest into the cache"),
                        ("windows", "count training windows per split; --bench N times loading")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--root", default=str(circor_dir()), help="CirCor-layout directory (default: %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
        if name == "windows":
            p.add_argument("--seconds", type=float, default=4.0)
            p.add_argument("--bench", type=int, default=0, help="time loading this many train windows")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        index = load_circor(args.root)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    if args.command == "split":
        split = load_or_make_split(index, args.seed)
        print(f"split manifest: {manifest_path(index, args.seed)}")
        print("  ".join(f"{s} {len(split[s])}" for s in SPLITS) + " patients")
        return 0
    split = split_patients(index, args.seed)
    lines = summary_lines(index, split) if args.command == "summary" else \
        _windows(index, split, args.seconds, args.bench)
    print("\n".join(lines))
    return 0
