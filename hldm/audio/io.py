"""Reading and writing PCG audio: any WAV/FLAC in, 4 kHz mono float32 out.

Everything a user can upload goes through `load_audio`, so its refusals are the
product's input checks: each names what was wrong and the limit it broke.
Resampling is polyphase with a Kaiser-windowed anti-alias FIR
(scipy.signal.resample_poly), so content above the new Nyquist is removed
rather than folded into the heart-sound band.
"""
from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from hldm.clinical.vocabulary import SAMPLE_RATE

# A clip whose RMS is below this (full scale = 1.0, about -80 dBFS) carries no heart sound.
SILENCE_RMS = 1e-4
MAX_SECONDS = 60.0
MAX_BYTES = 20_000_000


class AudioError(ValueError):
    """Audio that cannot be used; the message says why and what is accepted."""


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample (..., N) along the last axis with an anti-alias filter; float32 out."""
    sr_in, sr_out = int(sr_in), int(sr_out)
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rate must be positive; got sr_in={sr_in}, sr_out={sr_out}")
    x = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return x.copy()
    ratio = Fraction(sr_out, sr_in)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def _read(src: str | os.PathLike | bytes, max_seconds: float, max_bytes: int) -> tuple[np.ndarray, int, str]:
    """Decode with soundfile -> ((frames, channels) float32, sr, name for messages); limits checked before decoding."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, name = bytes(src), "<bytes>"
        if not data:
            raise AudioError("audio: empty input (0 bytes); expected a WAV or FLAC file")
        if len(data) > max_bytes:
            raise AudioError(f"audio: {len(data):,} bytes is too big; the limit is {max_bytes:,} bytes")
        handle = io.BytesIO(data)
    else:
        path = Path(src)
        name = str(path)
        if not path.is_file():
            raise AudioError(f"audio: no such file {name!r}")
        size = path.stat().st_size
        if size == 0:
            raise AudioError(f"audio: {name!r} is empty (0 bytes); expected a WAV or FLAC file")
        if size > max_bytes:
            raise AudioError(f"audio: {name!r} is {size:,} bytes, too big; the limit is {max_bytes:,} bytes")
        handle = path
    try:
        with sf.SoundFile(handle) as f:
            fmt, sr, frames = f.format, f.samplerate, f.frames
            if fmt not in ("WAV", "WAVEX", "FLAC"):
                raise AudioError(f"audio: {name} is {fmt}; accepted formats: WAV, FLAC")
            if frames > max_seconds * sr:
                raise AudioError(f"audio: {name} lasts {frames / sr:.1f} s, too long; the limit is {max_seconds:g} s")
            data = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"audio: {name} is not a readable WAV or FLAC file ({exc})") from exc
    if frames == 0 or data.size == 0:
        raise AudioError(f"audio: {name} has no samples")
    return data, sr, name


def load_audio(src: str | os.PathLike | bytes, max_seconds: float = MAX_SECONDS,
               max_bytes: int = MAX_BYTES) -> np.ndarray:
    """WAV/FLAC path or bytes -> np.float32 (N,) at 4 kHz mono.

    Refuses (AudioError) input that is not WAV/FLAC or unreadable, empty, over
    `max_bytes`, longer than `max_seconds`, containing NaN/inf, or silent
    (RMS below SILENCE_RMS of full scale).
    """
    data, sr, name = _read(src, max_seconds, max_bytes)
    if not np.isfinite(data).all():
        raise AudioError(f"audio: {name} contains NaN or infinite samples")
    mono = data.mean(axis=1)  # (N,)
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise AudioError(f"audio: {name} is silent (RMS {rms:.2e} below {SILENCE_RMS:.0e} of full scale)")
    return resample(mono, sr, SAMPLE_RATE)


def pcm16(audio: np.ndarray) -> np.ndarray:
    """A mono waveform (N,) in [-1, 1] as the int16 samples a WAV of it holds (clipped, rounded)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise AudioError(f"audio: expected a mono waveform of shape (N,), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AudioError("audio: refusing to write NaN or infinite samples")
    # Clip instead of wrapping: an overshoot becomes saturation, never a full-scale click.
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def wav_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """A 16-bit PCM WAV of a mono waveform (N,), as bytes."""
    buf = io.BytesIO()
    sf.write(buf, pcm16(audio), int(sr), format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write a 16-bit PCM WAV atomically (temp file + rename: a reader never sees half a file)."""
    path = Path(path)
    data = wav_bytes(audio, sr)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
