"""The paper's metrics, computed in our own harness (DESIGN.md "Evaluation").

Audio quality group: FAD, IS, MSD, SC, SNR. Clinical group: CF, AD, PDS, SNPA, CMMD.
Every function is pure (numpy in, float out) so each can be unit-tested on cases with
known answers. Embeddings and class probabilities come from the in-domain PCG
evaluator (hldm.models.evaluator), never VGGish: it is trained on 16 kHz everyday
audio and downloads its weights. Our definitions, where the paper leaves room:

- MSD: mean mel-spectral distance in dB between paired clips (lower is better).
- SC: spectral correlation, Pearson r of the set-mean log-power spectra of two sets
  (higher is better, 1 = same average spectrum).
- SNR: in-band (20-400 Hz, where S1/S2 and most murmurs live) over out-of-band
  (600-1900 Hz) power, dB.
- PDS: MIG-style gap of normalised mutual information between each factor and the
  latent subspaces, averaged over factors (1 = each factor lives in exactly one subspace).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import linalg, signal

from hldm.clinical.vocabulary import SAMPLE_RATE


def frechet_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FAD: Frechet distance between Gaussians fitted to two embedding sets (N, D) and (M, D)."""
    emb_a, emb_b = np.asarray(emb_a, np.float64), np.asarray(emb_b, np.float64)
    if emb_a.ndim != 2 or emb_b.ndim != 2 or emb_a.shape[1] != emb_b.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with equal D, got {emb_a.shape} and {emb_b.shape}")
    if min(len(emb_a), len(emb_b)) < 2:
        raise ValueError("FAD needs at least 2 embeddings per set")
    mu_a, mu_b = emb_a.mean(0), emb_b.mean(0)
    cov_a, cov_b = np.cov(emb_a, rowvar=False), np.cov(emb_b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: regularise as in the FID reference code
        eps = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
    return float(max(value, 0.0))


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, K)."""
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1))))
    return float(np.mean(scores))


def _rbf_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def k(a, b):
        d2 = np.sum(a ** 2, 1)[:, None] + np.sum(b ** 2, 1)[None, :] - 2 * a @ b.T
        return np.exp(-np.maximum(d2, 0) / (2 * sigma ** 2))

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    # Unbiased estimator: drop the diagonal self-similarities.
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def cmmd(emb_a: np.ndarray, emb_b: np.ndarray, sigma: float | None = None) -> float:
    """CMMD: unbiased RBF-kernel MMD^2 between embedding sets (x1000 for readability, as in CMMD).

    sigma defaults to the median pairwise distance of the pooled set, fixed per call.
    """
    a, b = np.asarray(emb_a, np.float64), np.asarray(emb_b, np.float64)
    if sigma is None:
        pooled = np.concatenate([a, b])
        d = np.sqrt(np.maximum(np.sum((pooled[:, None] - pooled[None]) ** 2, -1), 0))
        sigma = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
    return 1000.0 * _rbf_mmd2(a, b, sigma)


def _mel_db(audio: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(audio, np.float32), sr=SAMPLE_RATE, n_fft=256,
                                         hop_length=32, n_mels=64, fmax=SAMPLE_RATE / 2)
    return 10 * np.log10(mel + 1e-10)


def mel_spectral_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MSD: mean over frames of the RMS dB difference of 64-band mel spectra of paired clips."""
    n = min(len(reference), len(estimate))
    diff = _mel_db(reference[:n]) - _mel_db(estimate[:n])
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


def _mean_log_spectrum(clips: Sequence[np.ndarray]) -> np.ndarray:
    spectra = [signal.welch(np.asarray(c, np.float64), fs=SAMPLE_RATE, nperseg=256)[1] for c in clips]
    return np.log10(np.mean(spectra, axis=0) + 1e-12)


def spectral_correlation(clips_a: Sequence[np.ndarray], clips_b: Sequence[np.ndarray]) -> float:
    """SC: Pearson r between the set-mean log power spectra (Welch, 256-point) of two sets."""
    return float(np.corrcoef(_mean_log_spectrum(clips_a), _mean_log_spectrum(clips_b))[0, 1])


def snr_db(audio: np.ndarray, band: tuple[float, float] = (20.0, 400.0),
           noise_band: tuple[float, float] = (600.0, 1900.0)) -> float:
    """SNR: heart-sound-band power over a high noise band's power, per Hz, in dB."""
    freqs, psd = signal.welch(np.asarray(audio, np.float64), fs=SAMPLE_RATE, nperseg=256)
    sig = psd[(freqs >= band[0]) & (freqs <= band[1])].mean()
    noise = psd[(freqs >= noise_band[0]) & (freqs <= noise_band[1])].mean()
    return float(10 * np.log10((sig + 1e-20) / (noise + 1e-20)))


def clinical_fidelity(requested: dict[str, Sequence], predicted: dict[str, Sequence]) -> dict[str, float]:
    """CF: per-attribute agreement between requested findings and what the evaluator hears.

    requested/predicted map attribute -> per-clip values; returns {attribute: accuracy, "mean": ...}.
    Clips whose requested value is None (not applicable, e.g. timing of an absent murmur) are skipped.
    """
    out = {}
    for attr, req in requested.items():
        pairs = [(r, p) for r, p in zip(req, predicted[attr]) if r is not None]
        if pairs:
            out[attr] = float(np.mean([r == p for r, p in pairs]))
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def attribute_disentanglement(before: dict[str, Sequence], after: dict[str, Sequence],
                              changed: Sequence[str]) -> float:
    """AD: share of (clip, attribute) readings that behave as asked after a one-attribute edit.

    For clip k the attribute changed[k] must read differently after the edit and every
    other attribute must read the same. before/after map attribute -> per-clip evaluator reads.
    """
    hits = []
    for k, target in enumerate(changed):
        for attr in before:
            moved = before[attr][k] != after[attr][k]
            hits.append(moved if attr == target else not moved)
    return float(np.mean(hits)) if hits else float("nan")


def _discretise(x: np.ndarray, bins: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if np.unique(x).size <= bins:
        return np.unique(x, return_inverse=True)[1]
    edges = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
    return np.digitize(x, edges)


def mutual_information(x: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Plug-in MI (nats) of two 1-D variables after equal-frequency binning."""
    xd, yd = _discretise(x, bins), _discretise(y, bins)
    joint = np.zeros((xd.max() + 1, yd.max() + 1))
    np.add.at(joint, (xd, yd), 1)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / (px @ py)[nz])))


def entropy(x: np.ndarray, bins: int = 10) -> float:
    xd = _discretise(x, bins)
    p = np.bincount(xd) / len(xd)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def subspace_disentanglement(codes: dict[str, np.ndarray], factors: dict[str, np.ndarray],
                             bins: int = 10) -> dict[str, float]:
    """PDS: for each factor, (top - second) MI over subspaces, normalised by the factor's entropy.

    codes: subspace -> (N, K) pooled latent codes; factors: name -> (N,) ground truth.
    A subspace's MI with a factor is the max over its K code dimensions. Returns
    {factor: gap, "mean": mean gap}; 1 means each factor is captured by one subspace only.
    """
    out = {}
    for name, fac in factors.items():
        h = entropy(fac, bins)
        if h <= 0:
            continue
        mis = sorted((max(mutual_information(code[:, j], fac, bins) for j in range(code.shape[1]))
                      for code in codes.values()), reverse=True)
        out[name] = float((mis[0] - (mis[1] if len(mis) > 1 else 0.0)) / h)
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def structured_noise_accuracy(weights: np.ndarray, murmur_present: np.ndarray) -> float:
    """SNPA: how well the murmur subspace's noise weight w_murmur separates clips with and without
    a murmur (ROC AUC over clips; 0.5 = no relation, 1 = perfect).

    weights: (N, 4) mean w_i over sampling steps in SUBSPACES order; murmur_present: (N,) 0/1.
    """
    from hldm.clinical.vocabulary import SUBSPACES

    score = np.asarray(weights)[:, SUBSPACES.index("murmur")]
    pos, neg = score[np.asarray(murmur_present) == 1], score[np.asarray(murmur_present) == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    # Mann-Whitney U / (n_pos * n_neg) equals the ROC AUC, ties counting half.
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
