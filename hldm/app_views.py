"""Figures the clinician app shows, drawn with matplotlib's object API on Agg.

Each function returns an RGB image (H, W, 3) uint8 ready for `gr.Image`. No
pyplot: the app serves several requests at once and pyplot's global figure
state is not thread-safe, while a `Figure` with its own Agg canvas is.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hldm.audio.features import FEAT_OFFSET, FEAT_SCALE, FRAMES_PER_SECOND, N_BINS
from hldm.clinical.vocabulary import SAMPLE_RATE, SUBSPACES

Interval = tuple[float, float, str]  # (start_s, end_s, "S1" | "S2" | "murmur")

INTERVAL_COLORS = {"S1": "#1f77b4", "S2": "#2ca02c", "murmur": "#d62728"}
SUBSPACE_COLORS = dict(zip(SUBSPACES, ("#9467bd", "#1f77b4", "#d62728", "#7f7f7f")))
MAX_HZ = 1000.0  # heart sounds and murmurs live below ~800 Hz; the rest of the 2 kHz band is mostly empty
DPI = 100
_DB_PER_FEAT = FEAT_SCALE * 20.0 / np.log(10.0)  # feature units -> dB (feature is affine in ln|X|)


def _figure(width: float, height: float, **margins) -> Figure:
    """A figure with fixed margins: constrained/tight layout cost ~3x the drawing itself."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(**{"left": 0.08, "right": 0.97, "bottom": 0.16, "top": 0.88, **margins})
    return fig


def _to_image(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def features_db(features: np.ndarray) -> np.ndarray:
    """Features (129, T) -> 20 log10 |X| in dB (129, T)."""
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or f.shape[0] != N_BINS:
        raise ValueError(f"features: expected shape (129, T); got {f.shape}")
    return (f * FEAT_SCALE - FEAT_OFFSET) * (20.0 / np.log(10.0))


def _extent(n_frames: int) -> list[float]:
    return [0.0, n_frames / FRAMES_PER_SECOND, 0.0, SAMPLE_RATE / 2]


def _draw_spectrogram(ax, features: np.ndarray, intervals: Sequence[Interval], title: str,
                      vmin: float | None = None, vmax: float | None = None, wrap: int = 100):
    db = features_db(features)
    top = float(np.percentile(db, 99.5)) if vmax is None else vmax
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=_extent(db.shape[1]),
                   vmin=top - 60.0 if vmin is None else vmin, vmax=top, interpolation="nearest")
    _mark_intervals(ax, intervals)
    ax.set_xlim(*_extent(db.shape[1])[:2])  # a mark running past the clip's end must not widen the axis
    ax.set_ylim(0, MAX_HZ)
    ax.set_title(textwrap.fill(title, wrap), fontsize=10)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    return im


def _mark_intervals(ax, intervals: Sequence[Interval]) -> None:
    """S1/S2 as bars in a top lane, murmurs in the lane below (they overlap S1/S2 in time) plus a faint band."""
    for start, end, label in intervals:
        color = INTERVAL_COLORS.get(label, "white")
        lane = (0.89, 0.94) if label == "murmur" else (0.95, 1.0)
        ax.axvspan(start, end, ymin=lane[0], ymax=lane[1], color=color, alpha=0.95, lw=0)
        if label == "murmur":
            ax.axvspan(start, end, ymin=0.0, ymax=lane[0], facecolor=color, alpha=0.10, lw=0)
    present = [k for k in INTERVAL_COLORS if any(lab == k for _, _, lab in intervals)]
    if present:
        ax.legend(handles=[Patch(color=INTERVAL_COLORS[k], label=k) for k in present],
                  loc="upper right", bbox_to_anchor=(1.0, 0.88), fontsize=8, framealpha=0.8)


def spectrogram_image(features: np.ndarray, intervals: Sequence[Interval] = (),
                      title: str = "Spectrogram") -> np.ndarray:
    """Annotated spectrogram of one clip: features (129, T), intervals in seconds."""
    fig = _figure(9, 3.2, right=0.93, top=0.86)
    ax = fig.add_subplot()
    im = _draw_spectrogram(ax, features, intervals, title)
    fig.colorbar(im, ax=ax, label="dB", pad=0.01, fraction=0.04)
    return _to_image(fig)


def what_if_image(before: np.ndarray, after: np.ndarray,
                  intervals_before: Sequence[Interval] = (), intervals_after: Sequence[Interval] = (),
                  titles: tuple[str, str] = ("Before", "After")) -> np.ndarray:
    """Two spectrograms (129, T) side by side on one colour scale, and their dB difference."""
    db_a, db_b = features_db(before), features_db(after)
    t = min(db_a.shape[1], db_b.shape[1])
    top = float(np.percentile(np.concatenate([db_a, db_b], axis=1), 99.5))
    fig = _figure(13, 3.4, left=0.055, right=0.94, wspace=0.3)
    ax_a, ax_b, ax_d = fig.subplots(1, 3, sharey=True)
    _draw_spectrogram(ax_a, before, intervals_before, titles[0], vmax=top, wrap=50)
    im = _draw_spectrogram(ax_b, after, intervals_after, titles[1], vmax=top, wrap=50)
    fig.colorbar(im, ax=ax_b, label="dB", pad=0.01, fraction=0.05)
    ax_b.set_ylabel("")
    diff = db_b[:, :t] - db_a[:, :t]
    lim = max(float(np.percentile(np.abs(diff), 99.0)), 1.0)
    im_d = ax_d.imshow(diff, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=_extent(t), interpolation="nearest")
    ax_d.set_ylim(0, MAX_HZ)
    ax_d.set_title("Difference (after − before)", fontsize=10)
    ax_d.set_xlabel("time (s)")
    fig.colorbar(im_d, ax=ax_d, label="dB", pad=0.01, fraction=0.05)
    return _to_image(fig)


def weights_image(weights: np.ndarray, names: Sequence[str] = SUBSPACES) -> np.ndarray:
    """Structured-noise weights w_i over sampling steps: weights (steps, 4) -> line plot."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != len(names):
        raise ValueError(f"weights: expected shape (steps, {len(names)}); got {w.shape}")
    fig = _figure(6.5, 3.2, left=0.11)
    ax = fig.add_subplot()
    steps = np.arange(1, w.shape[0] + 1)
    for i, name in enumerate(names):
        ax.plot(steps, w[:, i], marker="o", ms=3, label=name, color=SUBSPACE_COLORS.get(name))
    ax.set_xlabel("sampling step (noisy → clean)")
    ax.set_ylabel("w_i")
    ax.set_title("Per-subspace noise weights w_i", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=len(names), loc="best")
    return _to_image(fig)


def attention_image(mask: np.ndarray, layer: str | int = 0, step: int | None = None) -> np.ndarray:
    """Medical Attention mask M_cardiac (L, L) as a heatmap; positions in latent frames."""
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"attention mask: expected a square (L, L) array; got {m.shape}")
    fig = _figure(4.6, 4.0, left=0.15, right=0.88, bottom=0.12, top=0.92)
    ax = fig.add_subplot()
    im = ax.imshow(m, origin="upper", cmap="viridis", interpolation="nearest")
    where = f"layer {layer}" + (f", step {step}" if step is not None else "")
    ax.set_title(f"M_cardiac ({where})", fontsize=10)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    fig.colorbar(im, ax=ax, pad=0.02, fraction=0.05)
    return _to_image(fig)


def fusion_image(weights: Mapping[str, float]) -> np.ndarray:
    """Learned fusion weights (e.g. {"text": l1, "graph": l2, "attributes": l3}) as a bar chart."""
    names, values = list(weights), [float(v) for v in weights.values()]
    fig = _figure(3.6, 3.0, left=0.16, bottom=0.1)
    ax = fig.add_subplot()
    bars = ax.bar(names, values, color=["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"][: len(names)])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_title("Condition fusion weights", fontsize=10)
    return _to_image(fig)


# ----------------------------------------------------------------------------- the course

QUESTION_COLORS = {"category": "#1f77b4", "findings": "#ff7f0e", "description": "#2ca02c", "diagnosis": "#d62728"}


def progress_image(history: Sequence[Mapping[str, float]], attributes: Mapping[str, float],
                   window: int = 10) -> np.ndarray:
    """A learner's progress: per question, the running accuracy over their last `window` answers
    (history: each answer's {question: score 0..1}, oldest first), beside accuracy per finding."""
    fig = _figure(11, 3.4, left=0.06, right=0.98, bottom=0.2, wspace=0.35)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for q, color in QUESTION_COLORS.items():
        xs = [k + 1 for k, h in enumerate(history) if q in h]
        ys = np.array([h[q] for h in history if q in h], dtype=np.float64)
        if len(ys):
            running = np.convolve(ys, np.ones(window), "full")[: len(ys)] / np.minimum(np.arange(1, len(ys) + 1), window)
            ax.plot(xs, running, color=color, label=q, marker="o" if len(ys) < 30 else None, ms=3)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("answer number")
    ax.set_ylabel(f"accuracy (last {window})")
    ax.set_title("Accuracy per question over time", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    names = [k for k, v in attributes.items() if np.isfinite(v)]
    bars = bx.bar(names, [attributes[k] for k in names], color="#7f7f7f")
    bx.bar_label(bars, fmt="%.0f%%", labels=[f"{100 * attributes[k]:.0f}%" for k in names], fontsize=8)
    bx.set_ylim(0, 1.1)
    bx.tick_params(axis="x", labelrotation=30, labelsize=8)
    bx.set_title("Accuracy per finding", fontsize=10)
    return _to_image(fig)


def screening_image(attempts: Sequence[tuple[str, Mapping[str, float]]]) -> np.ndarray:
    """Screening results side by side: attempts (label, {question: accuracy}) oldest first, one bar group
    per question (a pre/post comparison when the same test was taken again)."""
    fig = _figure(8, 3.2, left=0.08, bottom=0.14)
    ax = fig.add_subplot()
    questions = list(QUESTION_COLORS)
    width = 0.8 / max(1, len(attempts))
    for k, (label, scores) in enumerate(attempts):
        xs = np.arange(len(questions)) + (k - (len(attempts) - 1) / 2) * width
        bars = ax.bar(xs, [scores.get(q, np.nan) for q in questions], width, label=label,
                      alpha=0.45 + 0.55 * (k + 1) / len(attempts), color="#1f77b4")
        ax.bar_label(bars, labels=[f"{100 * scores.get(q, np.nan):.0f}%" for q in questions], fontsize=7)
    ax.set_xticks(np.arange(len(questions)), questions)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy")
    ax.set_title("Screening test: score per question" + (" (earlier attempts lighter)" if len(attempts) > 1 else ""),
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper right", ncol=min(3, len(attempts)))
    return _to_image(fig)
