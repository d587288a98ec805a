"""Evaluation sets: held-out real clips, generated clips (through HLDMPipeline only), evaluator reads.

Everything the report measures is audio: generated clips are produced by
`HLDMPipeline.generate` exactly as the app plays them, and their features are
recomputed from that audio (`to_features(normalize_loudness(audio))`), the same
path real recordings take. So a metric never sees an intermediate the user
never hears.

Real clips are non-overlapping cycle-aligned windows of held-out (test-split)
CirCor patients, murmur status known. Without the real data, `real_clips` falls
back to simulator clips grouped into pseudo-patients and says so
(`ClipSet.source == "sim"`); the report prints that loudly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hldm.clinical.vocabulary import SAMPLE_RATE, Findings
from hldm.eval import metrics as M
from hldm.models.evaluator import HEAD_CLASSES, IGNORE, PCGEvaluator, decode_predictions, finding_targets

# Heads whose requested value is compared with the evaluator's read (CF); condition only where requested.
CF_HEADS = ("murmur", "grade", "timing", "shape", "pitch", "quality", "location", "condition")


@dataclass
class ClipSet:
    """N clips of equal length with the findings they carry (real) or were asked for (generated).

    groups: patient id per clip (real) or pseudo-patient (simulator), used for disjoint halves.
    weights: (N, 4) mean structured-noise w_i per clip and latents (N, 16, L), generated sets only.
    """

    name: str
    audio: list[np.ndarray]
    findings: list[Findings]
    groups: list[str]
    source: str  # "circor" | "sim" | "generated"
    weights: np.ndarray | None = None
    latents: np.ndarray | None = None
    seconds_per_clip: float | None = None  # wall time of generation per clip
    _features: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.audio)

    def features(self) -> torch.Tensor:
        """(N, 129, T) log-STFT features of the loudness-normalised audio."""
        if self._features is None:
            from hldm.eval.evaluator_training import clip_features

            self._features = clip_features(self.audio)
        return self._features

    def subset(self, idx: Sequence[int], name: str | None = None) -> "ClipSet":
        idx = list(idx)
        pick = (lambda arr: None if arr is None else arr[idx])
        return ClipSet(name or self.name, [self.audio[i] for i in idx], [self.findings[i] for i in idx],
                       [self.groups[i] for i in idx], self.source, pick(self.weights), pick(self.latents),
                       self.seconds_per_clip)


def concat(sets: Sequence[ClipSet], name: str) -> ClipSet:
    """One set of several (e.g. real + simulator training clips); generation-only fields are dropped."""
    sources = {c.source for c in sets}
    return ClipSet(name, [a for c in sets for a in c.audio], [f for c in sets for f in c.findings],
                   [g for c in sets for g in c.groups], sources.pop() if len(sources) == 1 else "mixed")


def playable(f: Findings) -> Findings:
    """Real findings as a generation request: an unknown heart rate becomes the product default."""
    return f if math.isfinite(f.heart_rate) else f.with_(heart_rate=Findings().heart_rate)


# ----------------------------------------------------------------------------- real clips


def circor_available(root=None) -> bool:
    from hldm.paths import circor_dir

    root = circor_dir() if root is None else root
    return root.is_dir() and any(root.glob("*.txt"))


def real_clips(split: str = "test", n: int = 64, seconds: float = 4.0, seed: int = 0,
               max_per_patient: int = 4, spacing_s: float | None = None) -> ClipSet:
    """Up to `n` windows of `split` patients (murmur status known), spread over patients.

    Windows start on S1 onsets at least `spacing_s` apart (default `seconds`: non-overlapping).
    Falls back to simulator clips (source "sim", two clips per pseudo-patient, half without a murmur
    as the held-out sets have both) when CirCor is absent.
    """
    if not circor_available():
        return simulated_clips(n, seconds, seed=seed + {"train": 0, "val": 1, "test": 2}.get(split, 3),
                               normal_share=0.5)
    from hldm.data.circor import load_circor, load_or_make_split
    from hldm.data.windows import CirCorWindows
    from hldm.paths import circor_dir

    index = load_circor(circor_dir())
    split_ids = load_or_make_split(index)[split]
    recs = [r for r in index.recordings_of(split_ids) if r.murmur_status != "unknown"]
    ds = CirCorWindows(recs, seconds=seconds, min_spacing_s=seconds if spacing_s is None else spacing_s)
    rng = np.random.default_rng(seed)
    by_patient: dict[str, list[int]] = {}
    for i, (r, _) in enumerate(ds.windows):
        by_patient.setdefault(ds.recordings[r].patient_id, []).append(i)
    # Round-robin over shuffled patients so a few long recordings cannot fill the set.
    patients = list(by_patient)
    rng.shuffle(patients)
    for p in patients:
        rng.shuffle(by_patient[p])
    chosen: list[int] = []
    for k in range(max_per_patient):
        for p in patients:
            if len(chosen) < n and k < len(by_patient[p]):
                chosen.append(by_patient[p][k])
    audio, findings, groups = [], [], []
    for i in sorted(chosen):
        r, onset = ds.windows[i]
        rec = ds.recordings[r]
        start = int(round(onset * SAMPLE_RATE))
        audio.append(np.asarray(ds.audio(rec)[start:start + ds.n_samples], dtype=np.float32))
        findings.append(ds[i]["findings"])
        groups.append(rec.patient_id)
    return ClipSet(f"real-{split}", audio, findings, groups, "circor")


def simulated_clips(n: int, seconds: float = 4.0, seed: int = 0, findings: Sequence[Findings] | None = None,
                    per_group: int = 2, normal_share: float = 0.0) -> ClipSet:
    """Simulator clips (random coherent findings unless given), `per_group` per pseudo-patient.

    normal_share: the share of random findings drawn as "normal" (no murmur) on top of the simulator's
    uniform draw over the 17 conditions, in which murmurs dominate (16 of 17 conditions carry one).
    """
    from hldm.data.simulator import sample_findings, simulate

    rng = np.random.default_rng(seed)
    audio, fs, groups = [], [], []
    for i in range(n):
        if findings:
            f = findings[i % len(findings)]
        else:
            f = sample_findings(rng, "normal" if rng.random() < normal_share else None)
        sim = simulate(f, seconds=seconds, seed=int(rng.integers(2**31)))
        audio.append(np.asarray(sim.audio, np.float32))
        fs.append(sim.findings)
        groups.append(f"sim{seed}-{i // per_group}")
    return ClipSet(f"sim-{seed}", audio, fs, groups, "sim")


def disjoint_halves(groups: Sequence[str], seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of two halves of the items with no group (patient) in both."""
    patients = sorted(set(groups))
    np.random.default_rng(seed).shuffle(patients)
    half_a = set(patients[::2])
    return [i for i, g in enumerate(groups) if g in half_a], [i for i, g in enumerate(groups) if g not in half_a]


def split_halves(clips: ClipSet, seed: int = 0) -> tuple[ClipSet, ClipSet]:
    """Two patient-disjoint halves of a clip set (the real-vs-real floor compares them)."""
    idx_a, idx_b = disjoint_halves(clips.groups, seed)
    return clips.subset(idx_a, clips.name + "-A"), clips.subset(idx_b, clips.name + "-B")


# ----------------------------------------------------------------------------- generated clips


def generate_clips(pipe, findings: Sequence[Findings], name: str, seed: int = 0, seconds: float = 4.0,
                   sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                   batch_size: int = 16) -> ClipSet:
    """One clip per requested finding set through `pipe.generate`; clip k uses seed `seed + k`."""
    import time

    audio, weights, latents = [], [], []
    start = time.perf_counter()
    requests = [playable(f) for f in findings]
    for lo in range(0, len(requests), batch_size):
        gens = pipe.generate(requests[lo:lo + batch_size], seed=seed + lo, steps=steps, guidance=guidance,
                             sampler=sampler, seconds=seconds)
        for g in gens:
            audio.append(g.audio)
            weights.append(g.weights.mean(0))
            latents.append(g.latent)
    wall = time.perf_counter() - start
    return ClipSet(name, audio, list(requests), [f"gen{k}" for k in range(len(requests))], "generated",
                   np.stack(weights), np.stack(latents), wall / max(len(requests), 1))


# ----------------------------------------------------------------------------- evaluator reads


@dataclass
class Reading:
    """What the evaluator hears in a clip set."""

    embeddings: np.ndarray  # (N, D)
    probs: dict[str, np.ndarray]  # head -> (N, K)
    values: dict[str, list]  # head -> per-clip class value (HEAD_CLASSES vocabulary)


@torch.inference_mode()
def read(evaluator: PCGEvaluator, clips: ClipSet, batch_size: int = 64) -> Reading:
    from hldm.eval.evaluator_training import predict

    emb, probs = predict(evaluator.eval(), clips.features(), batch_size)
    return Reading(emb, probs, decode_predictions({h: torch.from_numpy(p) for h, p in probs.items()}))


def requested_values(findings: Sequence[Findings], heads: Sequence[str] = CF_HEADS) -> dict[str, list]:
    """Per head, the class value each finding set asks for (None where it says nothing)."""
    rows = [finding_targets(f) for f in findings]
    return {h: [None if r[h] == IGNORE else HEAD_CLASSES[h][r[h]] for r in rows] for h in heads}


# ----------------------------------------------------------------------------- one metrics row


def pair_by_findings(queries: Sequence[Findings], pool: Sequence[Findings]) -> list[int]:
    """For each query, a pool index with the same murmur status and location when one exists
    (else the same murmur status, else any), cycling so pairs spread over the pool."""
    out = []
    for k, q in enumerate(queries):
        for key in ((lambda f: (f.murmur, f.location)), (lambda f: f.murmur), (lambda f: 0)):
            hits = [j for j, f in enumerate(pool) if key(f) == key(q)]
            if hits:
                out.append(hits[k % len(hits)])
                break
    return out


def quality_row(reference: ClipSet, ref_read: Reading, candidate: ClipSet, cand_read: Reading,
                pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """FAD, IS, MSD, SC, SNR, CF, CMMD of a candidate set against the real reference set.

    pairs: (reference clip, candidate clip) with matching findings, for MSD.
    IS reads the evaluator's 17-way condition head.
    """
    cf = M.clinical_fidelity(requested_values(candidate.findings), cand_read.values)
    return {
        "FAD": M.frechet_distance(ref_read.embeddings, cand_read.embeddings),
        "IS": M.inception_score(cand_read.probs["condition"]),
        "MSD": float(np.mean([M.mel_spectral_distance(a, b) for a, b in pairs])),
        "SC": M.spectral_correlation(reference.audio, candidate.audio),
        "SNR": float(np.mean([M.snr_db(a) for a in candidate.audio])),
        "CF": cf["mean"],
        "CMMD": M.cmmd(ref_read.embeddings, cand_read.embeddings),
        "CF_by_attribute": {k: v for k, v in cf.items() if k != "mean"},
    }


def latent_disentanglement(clips: ClipSet) -> dict[str, float]:
    """PDS over a generated set: requested factors vs time-pooled codes of each latent subspace."""
    from hldm.clinical.vocabulary import LOCATIONS, SUBSPACES

    z = clips.latents  # (N, 16, L)
    group = z.shape[1] // len(SUBSPACES)
    codes = {name: np.concatenate([z[:, i * group:(i + 1) * group].mean(-1), z[:, i * group:(i + 1) * group].std(-1)],
                                  axis=1) for i, name in enumerate(SUBSPACES)}
    factors = {"heart_rate": np.array([f.heart_rate for f in clips.findings]),
               "murmur_grade": np.array([f.grade or 0 for f in clips.findings]),
               "location": np.array([LOCATIONS.index(f.location) for f in clips.findings])}
    return M.subspace_disentanglement(codes, factors, bins=min(10, max(2, len(clips) // 4)))
