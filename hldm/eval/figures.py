"""Report figures (matplotlib, Agg): spectrogram grid per condition, grade sweep, metric bars."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hldm.audio.features import FRAMES_PER_SECOND, normalize_loudness, to_features  # noqa: E402
from hldm.clinical.vocabulary import SAMPLE_RATE  # noqa: E402


def _spectrogram(ax, audio: np.ndarray, title: str) -> None:
    feat = to_features(normalize_loudness(audio)).numpy()  # (129, T)
    ax.imshow(feat, origin="lower", aspect="auto", cmap="magma",
              extent=(0, feat.shape[1] / FRAMES_PER_SECOND, 0, SAMPLE_RATE / 2))
    ax.set_ylim(0, 1000)
    ax.set_title(title, fontsize=7)
    ax.tick_params(labelsize=6)


def spectrogram_grid(path: Path, panels: Sequence[tuple[str, np.ndarray]], cols: int = 4) -> Path:
    """One log-STFT panel (0-1 kHz) per (title, audio); e.g. one generated clip per condition."""
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, audio) in zip(axes.flat, panels):
        _spectrogram(ax, audio, title)
    fig.supxlabel("time (s)", fontsize=8)
    fig.supylabel("Hz", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grade_sweep(path: Path, band_db_by_grade: dict[str, dict[int, float]],
                examples: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Left: murmur-band energy vs grade per source (generated, edited real, simulator);
    right: spectrograms of one grade sweep."""
    n = len(examples)
    fig = plt.figure(figsize=(3.2 + 1.8 * max(n, 1), 2.6))
    grid = fig.add_gridspec(1, 1 + max(n, 1), width_ratios=[1.8] + [1] * max(n, 1))
    ax = fig.add_subplot(grid[0, 0])
    for label, curve in band_db_by_grade.items():
        grades = sorted(curve)
        ax.plot(grades, [curve[g] for g in grades], marker="o", label=label)
    ax.set_xlabel("Levine grade")
    ax.set_ylabel("murmur-band energy (dB)")
    ax.legend(fontsize=6)
    for k, (title, audio) in enumerate(examples):
        _spectrogram(fig.add_subplot(grid[0, 1 + k]), audio, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_bars(path: Path, rows: dict[str, dict[str, float]], metrics: Sequence[str] = ("FAD", "CF", "SC", "MSD")
                ) -> Path:
    """One bar chart per metric, one bar per model row (rows without a value are left out)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        names = [n for n, r in rows.items() if r.get(m) is not None and np.isfinite(r[m])]
        ax.bar(range(len(names)), [rows[n][m] for n in names], color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=6)
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
