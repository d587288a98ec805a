"""`python -m hldm segmenter --out checkpoints/segmenter`: train, score and save the S1/S2 segmenter.

hldm.models.segmenter.PCGSegmenter learns CirCor's annotated S1 / systole / S2 / diastole
frames of train-split patients (the .tsv files), with simulator clips over 40-180 bpm beside
them so slow adult rates, diastolic murmurs and extra sounds are not new to it. It is scored
on val-split patients against their annotations, beside the envelope rule of
hldm.eval.listener.phases: S1 and S2 onsets found within ONSET_TOL_S of an annotated onset of
the same sound, and how many recordings come out with S1 and S2 swapped.
Without the real data it trains on the simulator only and says so on the card.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hldm.audio.features import HOP, n_frames, normalize_loudness, to_features
from hldm.clinical.vocabulary import SAMPLE_RATE
from hldm.models.checkpoint import load_single, save_checkpoint
from hldm.models.segmenter import PCGSegmenter, SegmenterConfig
from hldm.paths import REPO

MODEL_TYPE = "pcg-segmenter"
DEFAULT_DIR = REPO / "checkpoints" / "segmenter"
ONSET_TOL_S = 0.06  # an onset this close to an annotated one of the same sound is found
SIM_RATES = (40.0, 180.0)  # bpm drawn uniformly for the simulator clips
S1, S2 = 1, 3


@dataclass
class Annotated:
    """A recording and its frame states (T,) (0 unannotated, 1-4 as CirCor's .tsv); rows (K, 3)."""

    audio: np.ndarray
    rows: np.ndarray
    patient: str
    states: np.ndarray | None = None

    def __post_init__(self):
        if self.states is None:
            from hldm.data.windows import frame_states

            self.states = frame_states(self.rows, 0.0, n_frames(len(self.audio)))


def real_recordings(split: str, limit: int | None = None) -> list[Annotated]:
    """Whole CirCor recordings of `split` patients with their annotated segmentation ([] without data)."""
    from hldm.eval.harness import circor_available

    if not circor_available():
        return []
    from hldm.data.circor import load_circor, load_or_make_split
    from hldm.data.windows import CirCorWindows
    from hldm.paths import circor_dir

    index = load_circor(circor_dir())
    recs = sorted((r for r in index.recordings_of(load_or_make_split(index)[split])
                   if r.segmentation is not None and r.audio_path is not None and len(r.segmentation)),
                  key=lambda r: r.stem)[:limit]
    reader = CirCorWindows([], cache=True)
    return [Annotated(np.asarray(reader.audio(r), np.float32), np.asarray(r.segmentation, np.float64), r.patient_id)
            for r in recs]


def simulated_recordings(n: int, seconds: float, seed: int) -> list[Annotated]:
    """Simulator clips of random findings at heart rates uniform over SIM_RATES, exact segmentation."""
    from hldm.data.simulator import sample_findings, simulate

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        f = sample_findings(rng).with_(heart_rate=round(float(rng.uniform(*SIM_RATES)), 1))
        sim = simulate(f, seconds=seconds, seed=seed * 100_003 + k)
        out.append(Annotated(sim.audio.astype(np.float32), np.asarray(sim.segmentation, np.float64), f"sim{k}"))
    return out


def crop_batch(clips: Sequence[Annotated], batch: int, samples: int,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of `samples` samples, starting on a frame: features (B, 129, T) and states (B, T)."""
    frames = n_frames(samples)
    feats, states = [], []
    for i in rng.integers(len(clips), size=batch):
        c = clips[int(i)]
        start = int(rng.integers(0, max(1, (len(c.audio) - samples) // HOP)))
        x = c.audio[start * HOP:start * HOP + samples]
        feats.append(to_features(normalize_loudness(np.pad(x, (0, samples - len(x))))))
        s = c.states[start:start + frames]
        states.append(np.pad(s, (0, frames - len(s))))
    return torch.stack(feats), torch.from_numpy(np.stack(states))


def train_segmenter(clips: Sequence[Annotated], steps: int = 1500, batch_size: int = 16, seconds: float = 6.0,
                    lr: float = 2e-3, seed: int = 0, cfg: SegmenterConfig | None = None,
                    progress: bool = True) -> PCGSegmenter:
    """Fit a fresh segmenter on random crops of `clips`; returns it in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PCGSegmenter(cfg or SegmenterConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    samples = int(seconds * SAMPLE_RATE)
    model.train()
    bar = tqdm(range(steps), disable=not progress, desc="segmenter")
    for _ in bar:
        feat, states = crop_batch(clips, batch_size, samples, rng)
        loss = model.loss(feat, states)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


# ----------------------------------------------------------------------------- scoring


def onsets_found(found: np.ndarray, truth: np.ndarray, state: int, tol: float = ONSET_TOL_S) -> tuple[int, int]:
    """(annotated onsets of `state` matched by a found one within tol, annotated onsets of it)."""
    t = truth[truth[:, 2] == state, 0]
    f = found[found[:, 2] == state, 0] if len(found) else np.zeros(0)
    if not len(t):
        return 0, 0
    hit = np.min(np.abs(t[:, None] - f[None, :]), axis=1) <= tol if len(f) else np.zeros(len(t), bool)
    return int(hit.sum()), len(t)


def agreement(segment: Callable[[np.ndarray], np.ndarray], clips: Sequence[Annotated], seconds: float = 8.0) -> dict:
    """How a segmentation method (audio (N,) -> rows (K, 3)) matches annotations on `seconds` crops from
    each clip's first annotated S1: S1 and S2 onset recall, the share of clips labelled right (>= 70 %
    of S1 and of S2 onsets found) and swapped (>= 70 % found under the other sound's name)."""
    hits = {S1: [0, 0], S2: [0, 0]}
    right = swapped = n = 0
    for c in clips:
        first = c.rows[c.rows[:, 2] == S1]
        if not len(first):
            continue
        start = first[0, 0]
        x = c.audio[int(round(start * SAMPLE_RATE)):][: int(seconds * SAMPLE_RATE)]
        if len(x) < seconds * SAMPLE_RATE:
            continue
        truth = c.rows.copy()
        truth[:, :2] -= start
        truth = truth[(truth[:, 0] >= 0) & (truth[:, 1] <= seconds)]
        found = segment(x)
        n += 1
        share = {}
        for s in (S1, S2):
            h, k = onsets_found(found, truth, s)
            hits[s][0] += h
            hits[s][1] += k
            share[s] = h / max(k, 1)
        crossed = [onsets_found(_relabel(found), truth, s) for s in (S1, S2)]
        right += min(share.values()) >= 0.7
        swapped += min(h / max(k, 1) for h, k in crossed) >= 0.7
    return {"clips": n, "s1_recall": hits[S1][0] / max(hits[S1][1], 1), "s2_recall": hits[S2][0] / max(hits[S2][1], 1),
            "right": right / max(n, 1), "swapped": swapped / max(n, 1)}


def _relabel(rows: np.ndarray) -> np.ndarray:
    """rows with S1 and S2 (and systole and diastole) exchanged: the swapped reading."""
    out = rows.copy()
    out[:, 2] = np.asarray([0, 3, 4, 1, 2])[rows[:, 2].astype(int)]
    return out


# ----------------------------------------------------------------------------- checkpoint


def save_segmenter(directory: str | Path, model: PCGSegmenter, info: dict) -> Path:
    config = {"model_type": MODEL_TYPE, "config": model.cfg.to_dict(), **info}
    return save_checkpoint(directory, {"segmenter": model}, config, model_card(info))


def load_segmenter(directory: str | Path = DEFAULT_DIR) -> PCGSegmenter:
    """Rebuild a saved segmenter (eval mode, CPU); CheckpointError if the directory is not one."""
    return load_single(directory, MODEL_TYPE, "segmenter", lambda c: PCGSegmenter(SegmenterConfig.from_dict(c)))


def model_card(info: dict) -> str:
    lines = ["# Heart-cycle segmenter", "",
             "S1 / systole / S2 / diastole per STFT frame for the recording editor (hldm.editing): "
             "hldm.models.segmenter.PCGSegmenter, a dilated 1-D CNN over the log-STFT features (4 kHz, "
             "n_fft 256, hop 32), decoded by a cycle-ordered Viterbi with minimum state durations.", "",
             f"- trained on: {info['trained_on']}",
             f"- steps: {info['steps']} (batch {info['batch_size']}, {info['seconds']} s crops, seed {info['seed']}), "
             f"{info['train_minutes']} min on {info['device']}", "",
             f"## Held-out agreement with the annotations ({info['scored_on']}, 8 s from the first S1, onsets within "
             f"{1000 * ONSET_TOL_S:.0f} ms)", "",
             "| method | clips | S1 onsets found | S2 onsets found | clips labelled right | clips with S1/S2 swapped |",
             "|---|---|---|---|---|---|"]
    for name, a in info["agreement"].items():
        lines.append(f"| {name} | {a['clips']} | {a['s1_recall']:.3f} | {a['s2_recall']:.3f} | {a['right']:.3f} | "
                     f"{a['swapped']:.3f} |")
    return "\n".join(lines + [""])


def segmenter_rows(model: PCGSegmenter) -> Callable[[np.ndarray], np.ndarray]:
    """audio (N,) -> rows (K, 3) with `model`."""
    return lambda x: model.decode(to_features(normalize_loudness(np.asarray(x, np.float32))))[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hldm segmenter", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_DIR))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--sim", type=int, default=600, help="simulator clips beside the real recordings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hldm.eval.listener import phases

    start = time.perf_counter()
    real = real_recordings("train")
    sim = simulated_recordings(args.sim, 12.0, args.seed)
    desc = (f"{len(real)} annotated CirCor recordings of {len({c.patient for c in real})} train-split patients + "
            if real else "NO REAL DATA (CirCor absent): ") + f"{len(sim)} simulator clips (12 s, {SIM_RATES[0]:g}-"
    desc += f"{SIM_RATES[1]:g} bpm)"
    print(f"training on {desc}")
    model = train_segmenter(real + sim, steps=args.steps, batch_size=args.batch_size, seconds=args.seconds,
                            seed=args.seed)
    minutes = (time.perf_counter() - start) / 60
    held = real_recordings("val")
    scored_on = f"{len(held)} recordings of {len({c.patient for c in held})} val-split patients"
    if not held:
        held = simulated_recordings(60, 12.0, args.seed + 1)
        scored_on = f"{len(held)} simulator clips of an unseen seed (no real data)"
    agree = {"this segmenter": agreement(segmenter_rows(model), held),
             "envelope rule (listener.phases)": agreement(phases, held)}
    info = {"trained_on": desc, "steps": args.steps, "batch_size": args.batch_size, "seconds": args.seconds,
            "seed": args.seed, "train_minutes": round(minutes, 1),
            "device": f"CPU ({torch.get_num_threads()} torch threads)", "scored_on": scored_on, "agreement": agree}
    path = save_segmenter(args.out, model, info)
    print(model_card(info))
    print(f"saved {path}")
    return 0
