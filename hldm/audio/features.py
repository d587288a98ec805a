"""Spectral representation of a PCG and its inversion (DESIGN.md "Signal and latent").

Log-magnitude STFT, n_fft 256, hop 32 at 4 kHz: 129 bins x 125 frames/s. The
feature is an affine map of log|X| so that typical PCG values sit near [-1, 1]
(the VAE trains better on unit-scale inputs). Inversion is Griffin-Lim
(librosa, batched over leading axes), seeded so generation stays deterministic.
"""
from __future__ import annotations

import librosa
import numpy as np
import torch

from hldm.clinical.vocabulary import SAMPLE_RATE

N_FFT = 256
HOP = 32
N_BINS = N_FFT // 2 + 1  # 129
FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 125.0
GL_ITERS = 32
TARGET_RMS = 0.05  # every clip is scaled to this RMS before features: loudness is relative
LOG_EPS = 1e-5
FEAT_OFFSET = 3.0  # log|X| of a TARGET_RMS clip spans about [-10.5, 2.5]; centre it near 0
FEAT_SCALE = 4.0


def n_frames(n_samples: int) -> int:
    """Frames of the feature for a waveform of n_samples (the centred STFT's last frame is dropped)."""
    return n_samples // HOP


def n_samples(frames: int) -> int:
    return frames * HOP


def normalize_loudness(audio: np.ndarray, target_rms: float = TARGET_RMS) -> np.ndarray:
    """Scale a clip (..., N) to a fixed RMS; murmur grade is loudness relative to S1/S2, which this keeps."""
    rms = np.sqrt(np.mean(np.square(audio, dtype=np.float64), axis=-1, keepdims=True))
    return (audio * (target_rms / np.maximum(rms, 1e-8))).astype(np.float32)


def to_features(audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Waveform (..., N) at 4 kHz -> features (..., 129, N // 32), float32."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])  # (B, N)
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, device=x.device),
                      center=True, return_complex=True)  # (B, 129, N//32 + 1)
    spec = spec[..., : n_frames(x.shape[-1])]
    feat = (torch.log(spec.abs() + LOG_EPS) + FEAT_OFFSET) / FEAT_SCALE
    return feat.reshape(*lead, N_BINS, feat.shape[-1])


def features_to_magnitude(feat: torch.Tensor | np.ndarray) -> np.ndarray:
    """Features (..., 129, T) -> linear STFT magnitude (..., 129, T) as numpy float32."""
    f = torch.as_tensor(feat, dtype=torch.float32).detach().cpu().numpy()
    return np.maximum(np.exp(f * FEAT_SCALE - FEAT_OFFSET) - LOG_EPS, 0.0).astype(np.float32)


def invert(feat: torch.Tensor | np.ndarray, n_iter: int = GL_ITERS, seed: int = 0) -> np.ndarray:
    """Features (..., 129, T) -> waveform (..., T * 32) by Griffin-Lim; deterministic for a seed."""
    mag = features_to_magnitude(feat)
    frames = mag.shape[-1]
    # Re-append one frame so the centred inverse covers exactly frames * HOP samples.
    mag = np.concatenate([mag, mag[..., -1:]], axis=-1)
    audio = librosa.griffinlim(mag, n_iter=n_iter, hop_length=HOP, n_fft=N_FFT, window="hann",
                               center=True, length=n_samples(frames),
                               random_state=np.random.RandomState(seed))
    return audio.astype(np.float32)


def spectral_convergence(reference: np.ndarray, estimate: np.ndarray) -> float:
    """|| |S_ref| - |S_est| ||_F / || |S_ref| ||_F on the project's STFT (lower is better)."""
    ref = features_to_magnitude(to_features(reference))
    est = features_to_magnitude(to_features(estimate))
    return float(np.linalg.norm(ref - est) / max(np.linalg.norm(ref), 1e-12))


def log_spectral_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean over frames of the RMS dB difference between power spectra (lower is better)."""
    ref = features_to_magnitude(to_features(reference)) ** 2
    est = features_to_magnitude(to_features(estimate)) ** 2
    diff = 10 * np.log10(ref + 1e-10) - 10 * np.log10(est + 1e-10)
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=-2))))
