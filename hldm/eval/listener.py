"""The listener: judges a heart sound the way a clinician listens, with no learned model.

A clinician finds the beat (two heart sounds a period; S1 opens systole), then asks
where the murmur is (systole, diastole, or through S2), how loud it is against the
heart sounds (the Levine grade is loudness relative to S1/S2, not absolute), whether
the rate is the one expected, and whether the recording sounds like a real one. Each
question is one small function of the audio (N,) at SAMPLE_RATE:

- `heart_rate`: bpm from the autocorrelation of the 25-150 Hz envelope.
- `phases`: S1/S2 from envelope peaks, as CirCor-style segmentation rows.
- `systole_diastole_ratio`, `spans_s2`: where a band's power sits in the cycle.
- `murmur_level_db`: the murmur band in its phase, dB re the heart sounds.
- `realism_auc`: a two-sample classifier test on band-energy statistics.

The simulator (hldm.data.simulator) is the known answer every measure is checked on.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import signal

from hldm.audio.features import HOP
from hldm.clinical.vocabulary import SAMPLE_RATE
from hldm.data.simulator import PITCH_BAND_HZ

HEART_SOUND_BAND_HZ = (25.0, 150.0)  # S1 and S2 carry most of their energy here; murmurs mostly above
FINE_HOP = 4  # 1 kHz envelope for timing: 1 bpm at 180 bpm is a 1.9 ms change of period
HR_LAGS_S = (60 / 210, 60 / 36)  # the product's 40-200 bpm with room for the peak on both sides
OCTAVE_SHARE = 0.8  # a shorter-lag autocorrelation peak this close to the best one is the period
HALF_PERIOD_SHARE = 0.85  # odd multiples of a lag weaker than this share of its even ones: half a period
COMB_TOLERANCE = 0.03  # a multiple of the period is looked for within 3 % of its lag
MIN_SECONDS = 1.0
S1, SYSTOLE, S2, DIASTOLE = 1, 2, 3, 4  # CirCor .tsv states
INNER = (0.15, 0.85)  # the part of a phase measured: away from the heart sounds' onsets and tails
CLEAR_INTERVALS = 0.7  # shorter / longer interval below this: the shorter one is systole
SOUND_PROMINENCE = 0.1  # of the envelope, whose 99th percentile is 1
SOUND_REACH_S = 0.12  # a heart sound's half-peak width ends within this of its peak
SKIP_COST = 3.0  # leaving a heart-sound candidate of envelope height 1 out of the beat costs 3 (log-lik)
MISSED_COST = 2.0  # a period with S1 or S2 missing costs this much more than one with both
N_BANDS = 8  # realism features: log-spaced bands over 20-2000 Hz
BAND_EDGES_HZ = np.geomspace(20.0, SAMPLE_RATE / 2, N_BANDS + 1)
CYCLE_BINS = 16  # the cardiac cycle folded into this many bins
RIDGE = 0.1  # realism classifier's L2 penalty per sample on standardised features


def _checked(audio) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio: expected one clip of shape (N,), got shape {x.shape}")
    if len(x) < MIN_SECONDS * SAMPLE_RATE:
        raise ValueError(f"audio: {len(x)} samples; the listener needs at least {MIN_SECONDS:g} s "
                         f"({int(MIN_SECONDS * SAMPLE_RATE)} samples at {SAMPLE_RATE} Hz)")
    if not np.isfinite(x).all():
        raise ValueError("audio: contains NaN or infinite samples")
    return x


@lru_cache(maxsize=32)
def _band_sos(band: tuple[float, float]) -> np.ndarray:
    """4th-order Butterworth band-pass sections; designed once per band (the design cost more than
    filtering a clip)."""
    return signal.butter(4, band, btype="band", fs=SAMPLE_RATE, output="sos")


def _bandpass(x: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return signal.sosfiltfilt(_band_sos(band), x)


def band_power_response(freqs: np.ndarray, band: tuple[float, float] = HEART_SOUND_BAND_HZ) -> np.ndarray:
    """(F,) power gain of `_bandpass(., band)` at `freqs` (Hz): filtered forwards and backwards, |H|^4."""
    _, h = signal.sosfreqz(_band_sos(band), worN=np.asarray(freqs, np.float64), fs=SAMPLE_RATE)
    return np.abs(h) ** 4


# ----------------------------------------------------------------------------- beats


def heart_sound_envelope(audio: np.ndarray, hop: int = HOP) -> np.ndarray:
    """(N // hop,) 25-150 Hz RMS over 40 ms at SAMPLE_RATE / hop frames a second, scaled so its 99th
    percentile is 1 (S1 and S2 peak near 1, murmurs and noise sit lower); zeros for a silent clip."""
    x = _bandpass(np.asarray(audio, np.float64), HEART_SOUND_BAND_HZ)
    frames = len(x) // hop
    power = np.square(x[:frames * hop]).reshape(frames, hop).mean(1)
    width = max(1, round(0.04 * SAMPLE_RATE / hop))
    env = np.sqrt(np.maximum(np.convolve(power, np.ones(width) / width, mode="same"), 0.0))
    top = np.percentile(env, 99)
    return np.clip(env / top, 0.0, 1.0) if top > 0 else env


def _sound_bounds(env: np.ndarray, peak: int, rate: float) -> tuple[int, int]:
    """(onset, end) frames of the heart sound peaking at `peak`: where the envelope last rose through,
    and next falls through, half the peak, at most SOUND_REACH_S away (a split S2 stays one sound)."""
    reach = int(round(SOUND_REACH_S * rate))
    half = env < 0.5 * env[peak]
    before = np.flatnonzero(half[max(0, peak - reach):peak])
    after = np.flatnonzero(half[peak:peak + reach])
    onset = max(0, peak - reach) + (before[-1] + 1 if len(before) else 0)
    end = peak + (after[0] if len(after) else min(reach, len(env) - peak))
    return int(onset), int(end)


def heart_sound_onsets(audio: np.ndarray, prominence: float = 0.2, min_gap_s: float = 0.12) -> np.ndarray:
    """Onset times (s) of the heart sounds (S1 and S2 alike), (K,) ascending.

    A heart sound is an envelope peak standing `prominence` above its surroundings, at
    least `min_gap_s` from the next (which merges the two parts of a split S2); its onset
    is where the envelope last rose through half the peak. On simulator clips of random
    findings this finds 94 % of the true S1/S2 onsets within 40 ms, 90 % of what it finds
    being one (the rest: S3/S4, clicks, loud murmurs).
    """
    env = heart_sound_envelope(audio)
    rate = SAMPLE_RATE / HOP
    peaks, _ = signal.find_peaks(env, distance=max(1, round(min_gap_s * rate)), prominence=prominence)
    return np.asarray([_sound_bounds(env, p, rate)[0] / rate for p in peaks], dtype=np.float64)


def _autocorrelation(env: np.ndarray) -> np.ndarray:
    """(len(env),) unbiased autocorrelation of the mean-removed envelope, 1 at lag 0."""
    x = env - env.mean()
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:n] / (n - np.arange(n))
    return ac / ac[0] if ac[0] > 0 else ac


def _period_s(env: np.ndarray, rate: float) -> float:
    """Beat period (s) from the envelope's autocorrelation; NaN when no beat is found.

    Each autocorrelation peak in the lag range is scored by the peaks at its multiples
    (up to half the clip): a period recurs at every multiple, while the S1-S2 cross lags
    (systole, diastole: the octave error at slow rates) do not. Of the peaks, the
    shortest-lag one scoring within OCTAVE_SHARE of the best is the period (not two periods).
    """
    ac = _autocorrelation(env)
    lo, hi = (int(round(s * rate)) for s in HR_LAGS_S)
    hi = min(hi, len(ac) - 2)
    if hi <= lo:
        return float("nan")
    peaks, _ = signal.find_peaks(ac[lo - 1:hi + 2])
    peaks = [int(k) + lo - 1 for k in peaks if ac[k + lo - 1] > 0]
    if not peaks:
        return float("nan")
    reach = max(hi, len(ac) // 2)

    def comb(k: int, first: int = 1, every: int = 1) -> float:
        # The tolerance grows with the multiple: beat-to-beat variation accumulates.
        near = [ac[max(0, m - w):m + w + 1].max() for m, w in
                ((m, max(2, round(COMB_TOLERANCE * m))) for m in range(first * k, reach + 1, every * k))]
        return float(np.mean(near)) if near else float("nan")

    score = np.array([comb(k) for k in peaks])
    k = peaks[int(np.argmax(score >= OCTAVE_SHARE * score.max()))]
    # Half a period when S1 and S2 are evenly spaced: its odd multiples are S1-S2 cross lags,
    # weaker than the even ones (S1 on S1, S2 on S2), and the period is the peak near twice it
    # (Only with two of each in reach, one of each is too noisy; the cross lags need not be even.)
    longer = [q for q in peaks if abs(q - 2 * k) <= 0.1 * 2 * k]
    if longer and 4 * k <= reach and comb(k, 1, 2) < HALF_PERIOD_SHARE * comb(k, 2, 2):
        k = max(longer, key=lambda q: ac[q])
    # Parabolic interpolation between lags: the 1 ms lag grid alone is 1 bpm at 180 bpm.
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    return float((k + shift) / rate)


def heart_rate(audio: np.ndarray) -> float:
    """Heart rate (bpm) of a clip (N,): the period of the 25-150 Hz envelope's autocorrelation,
    between 36 and 210 bpm; NaN when the clip has no beat (e.g. silence)."""
    x = _checked(audio)
    return 60.0 / _period_s(heart_sound_envelope(x, FINE_HOP), SAMPLE_RATE / FINE_HOP)


def _centroid_hz(x: np.ndarray, start: int, stop: int) -> float:
    """Spectral centroid (Hz) of x[start:stop] within 25-200 Hz: S2 sits higher than S1."""
    seg = x[start:max(stop, start + 2)] * np.hanning(max(stop, start + 2) - start)
    spec = np.abs(np.fft.rfft(seg, 4096)) ** 2
    freqs = np.fft.rfftfreq(4096, 1.0 / SAMPLE_RATE)
    band = (freqs >= 25) & (freqs <= 200)
    return float((spec[band] * freqs[band]).sum() / max(spec[band].sum(), 1e-30))


def _label_sounds(times: np.ndarray, heights: np.ndarray, period: float, shorts: np.ndarray) -> np.ndarray:
    """The best labelling (K,) of heart-sound candidates at `times` (K,) with envelope `heights`
    (K,) as alternating A (followed by the short interval) and B, or neither (0 / 1 A / 2 B),
    over the short intervals tried, `shorts` (G,) seconds.

    A dynamic programme over the candidates: each step between labelled sounds scores the
    Gaussian log-likelihood of its interval (A->B: short, B->A: period - short, A->A or
    B->B: a period with the other sound missed, MISSED_COST more), and leaving a sound
    unlabelled costs SKIP_COST times its height, so clicks, S3/S4 and murmur bumps drop
    out while a missed S1 or S2 does not break the beat. All shorts run at once.
    """
    k, g = len(times), len(shorts)
    sigma = 0.05 * period + 0.01
    expect = {(1, 2): shorts, (2, 1): period - shorts, (1, 1): np.full(g, period), (2, 2): np.full(g, period)}
    skip = np.concatenate([[0.0], np.cumsum(SKIP_COST * heights)])  # skip[j]: cost of leaving out sounds 0..j-1
    score = np.full((k, 3, g), -np.inf)
    back = np.full((k, 3, g, 2), -1, dtype=int)
    for i in range(k):
        for s in (1, 2):
            score[i, s] = -skip[i]
            j = i - 1
            while j >= 0 and times[i] - times[j] <= 1.3 * period:
                d = times[i] - times[j]
                for r in (1, 2):
                    step = -0.5 * ((d - expect[r, s]) / sigma) ** 2 - (MISSED_COST if r == s else 0.0)
                    total = score[j, r] + step - (skip[i] - skip[j + 1])
                    better = total > score[i, s]
                    score[i, s, better] = total[better]
                    back[i, s, better] = (j, r)
                j -= 1
    final = score[:, 1:] - (skip[-1] - skip[1:])[:, None, None]  # (K, 2, G): the rest left out
    i, s, best = np.unravel_index(int(np.argmax(final)), final.shape)
    labels = np.zeros(k, dtype=int)
    i, s = int(i), int(s) + 1
    while i >= 0:
        labels[i] = s
        i, s = (int(v) for v in back[i, s, best])
    return labels


def phases(audio: np.ndarray, heart_rate: float | None = None) -> np.ndarray:
    """Segmentation of a clip (N,) as rows (start_s, end_s, state) of CirCor's .tsv, shape (K, 3):
    state 1 S1, 2 systole, 3 S2, 4 diastole; (0, 3) when no beat is found.

    Heart-sound candidates are the envelope's peaks; two sounds a period, alternating
    intervals x and period - x, with x searched on a grid (`_label_sounds`). Which
    alternate is S1: the one followed by the shorter interval (systole) when the two
    clearly differ (shorter / longer < CLEAR_INTERVALS: slow and normal rates); at fast
    rates systole and diastole approach each other (diastole ends the shorter above
    ~140 bpm), and S1 is the lower-pitched alternate, as a clinician hears it. A sound
    spans the envelope's half-peak width. `heart_rate` (bpm) skips measuring the period.
    """
    x = _checked(audio)
    rate = SAMPLE_RATE / FINE_HOP
    env = heart_sound_envelope(x, FINE_HOP)
    period = 60.0 / heart_rate if heart_rate else _period_s(env, rate)
    if not np.isfinite(period):
        return np.zeros((0, 3))
    peaks, _ = signal.find_peaks(env, distance=max(1, round(0.06 * rate)), prominence=SOUND_PROMINENCE)
    if len(peaks) < 2:
        return np.zeros((0, 3))
    times, heights = peaks / rate, env[peaks]
    labels = _label_sounds(times, heights, period, np.linspace(0.15, 0.5, 36) * period)
    bounds = [_sound_bounds(env, p, rate) for p in peaks]
    on = [i for i in range(len(peaks)) if labels[i]]
    gap = {1: [], 2: []}  # interval after each A and each B that is followed by the other
    for i, j in zip(on, on[1:]):
        if labels[i] != labels[j]:
            gap[labels[i]].append(times[j] - times[i])
    if gap[1] and gap[2] and np.mean(gap[1]) < CLEAR_INTERVALS * np.mean(gap[2]):
        s1_label = 1
    else:
        pitch = {q: np.mean([_centroid_hz(x, bounds[i][0] * FINE_HOP, bounds[i][1] * FINE_HOP)
                             for i in on if labels[i] == q] or [np.inf]) for q in (1, 2)}
        s1_label = 1 if pitch[1] <= pitch[2] else 2
    rows = []
    for i, j in zip(on, on[1:]):
        (on_i, end_i), (on_j, _) = bounds[i], bounds[j]
        first_s1 = labels[i] == s1_label
        rows.append((on_i, end_i, S1 if first_s1 else S2))
        if labels[i] != labels[j]:
            rows.append((end_i, on_j, SYSTOLE if first_s1 else DIASTOLE))
    last = on[-1]
    rows.append((*bounds[last], S1 if labels[last] == s1_label else S2))
    seg = np.array(rows, dtype=np.float64)
    seg[:, :2] /= rate
    return seg[seg[:, 1] > seg[:, 0]]


# ----------------------------------------------------------------------------- murmur phase and level


def _mask(seg: np.ndarray, n: int, states: Sequence[int], part: tuple[float, float] = INNER) -> np.ndarray:
    """(n,) bool: the samples within fraction `part` of every segmentation row of `states`."""
    keep = np.zeros(n, dtype=bool)
    for start, end, state in seg:
        if int(state) in states:
            lo, hi = start + part[0] * (end - start), start + part[1] * (end - start)
            keep[int(round(lo * SAMPLE_RATE)):int(round(hi * SAMPLE_RATE))] = True
    return keep


def _mean_power(power: np.ndarray, keep: np.ndarray) -> float:
    return float(power[keep].mean()) if keep.any() else float("nan")


def _band_power(x: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """(N,) instantaneous power of x in `band` (Hz)."""
    return np.square(_bandpass(x, band))


def _log_ratio(a: float, b: float) -> float:
    return float(np.log10((a + 1e-20) / (b + 1e-20)))


def systole_diastole_ratio(audio: np.ndarray, band: tuple[float, float], seg: np.ndarray | None = None) -> float:
    """log10 of the power in `band` (Hz) over the inner parts (INNER) of systole over that of
    diastole, so the heart sounds themselves do not count: > 0 systolic, < 0 diastolic
    (-0.3: twice the power in diastole). seg: `phases(audio)` unless given; NaN without a
    complete cycle."""
    x = _checked(audio)
    seg = phases(x) if seg is None else seg
    power = _band_power(x, band)
    return _log_ratio(_mean_power(power, _mask(seg, len(x), (SYSTOLE,))),
                      _mean_power(power, _mask(seg, len(x), (DIASTOLE,))))


def spans_s2(audio: np.ndarray, band: tuple[float, float], seg: np.ndarray | None = None) -> float:
    """How far a continuous murmur runs through S2: log10 of the `band` power just before S2
    (late systole) and just after it (early diastole) over the late-diastolic floor, the
    smaller of the two. > 0.3 both sides at least twice the floor (a machinery murmur); ~0
    for a systolic or a diastolic murmur alone. NaN without a complete cycle."""
    x = _checked(audio)
    seg = phases(x) if seg is None else seg
    power = _band_power(x, band)
    floor = _mean_power(power, _mask(seg, len(x), (DIASTOLE,), (0.75, 0.95)))
    before = _mean_power(power, _mask(seg, len(x), (SYSTOLE,), (0.5, 0.9)))
    after = _mean_power(power, _mask(seg, len(x), (DIASTOLE,), (0.2, 0.5)))
    return min(_log_ratio(before, floor), _log_ratio(after, floor))


PHASE_STATES = {"systolic": (SYSTOLE,), "diastolic": (DIASTOLE,), "continuous": (SYSTOLE, DIASTOLE)}


def murmur_level_db(audio: np.ndarray, pitch: str, seg: np.ndarray | None = None, phase: str | None = None,
                    sounds: np.ndarray | None = None) -> float:
    """The murmur's loudness the way the Levine grade reads it, against the heart sounds: power in
    the pitch band (simulator PITCH_BAND_HZ) over the inner parts of its phase ("systolic",
    "diastolic", "continuous"; None: the louder of systole and diastole), in dB re the
    25-150 Hz power of S1 and S2. Independent of the clip's gain. NaN without a complete cycle.
    sounds: (N,) the clip whose S1 and S2 are the reference, when `audio` is a murmur alone."""
    x = _checked(audio)
    heard = x if sounds is None else _checked(sounds)
    seg = phases(heard) if seg is None else seg
    power = _band_power(x, PITCH_BAND_HZ[pitch])
    if phase is None:
        murmur = max(_mean_power(power, _mask(seg, len(x), (SYSTOLE,))),
                     _mean_power(power, _mask(seg, len(x), (DIASTOLE,))))
    else:
        murmur = _mean_power(power, _mask(seg, len(x), PHASE_STATES[phase]))
    reference = _mean_power(_band_power(heard, HEART_SOUND_BAND_HZ), _mask(seg, len(heard), (S1, S2), (0.0, 1.0)))
    return 10.0 * _log_ratio(murmur, reference)


# ----------------------------------------------------------------------------- realism


def clip_features(audio: np.ndarray) -> np.ndarray:
    """(6 * N_BANDS + 3,) what a listener notices in a clip (N,), gain removed: per band of N_BANDS
    (log-spaced 20-2000 Hz), the log energy over 64 ms frames (mean, std, 10/50/90th
    percentiles) and its spread over the cardiac cycle (max - min of the beat-folded mean);
    then the heart rate, the beat irregularity (std / mean of S1-S1 intervals) and the
    envelope's periodicity (autocorrelation at the period). NaN where no beat is found."""
    x = _checked(audio)
    x = x / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)
    freqs, times, spec = signal.stft(x, fs=SAMPLE_RATE, nperseg=256, noverlap=192, boundary=None)
    power = np.abs(spec) ** 2
    bands = np.stack([power[(freqs >= lo) & (freqs < hi)].sum(0)
                      for lo, hi in zip(BAND_EDGES_HZ, BAND_EDGES_HZ[1:])])
    db = 10 * np.log10(bands + 1e-10)  # (N_BANDS, frames)
    stats = [db.mean(1), db.std(1), *np.percentile(db, (10, 50, 90), axis=1)]
    env = heart_sound_envelope(x, FINE_HOP)
    rate = SAMPLE_RATE / FINE_HOP
    period = _period_s(env, rate)
    seg = phases(x, 60.0 / period) if np.isfinite(period) else np.zeros((0, 3))
    s1 = seg[seg[:, 2] == S1, 0]
    beats = np.diff(s1)
    beats = beats[beats < 1.5 * period] if np.isfinite(period) else beats[:0]
    spread = np.full(N_BANDS, np.nan)
    if len(beats):
        folded = np.zeros((N_BANDS, CYCLE_BINS))
        count = np.zeros(CYCLE_BINS)
        for start, length in zip(s1, np.diff(s1)):
            if length < 1.5 * period:
                inside = (times >= start) & (times < start + length)
                b = np.minimum((times[inside] - start) / length * CYCLE_BINS, CYCLE_BINS - 1).astype(int)
                np.add.at(folded, (slice(None), b), db[:, inside])
                np.add.at(count, b, 1)
        seen = count > 0
        spread = np.ptp(folded[:, seen] / count[seen], axis=1)
    ac = _autocorrelation(env)
    periodicity = ac[int(round(period * rate))] if np.isfinite(period) else np.nan
    irregularity = beats.std() / beats.mean() if len(beats) >= 2 else np.nan
    return np.concatenate([*stats, spread, [60.0 / period, irregularity, periodicity]])


def _logistic_fit(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, steps: int = 25) -> np.ndarray:
    """Weights (F + 1,) of an L2-penalised logistic regression on standardised features x (n, F)
    and labels y (n,) in {0, 1}, by Newton's method (the bias is not penalised)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], ridge * len(x))
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (n,) for binary `labels` (n,) (ties count half)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    pos, neg = labels.sum(), (~labels).sum()
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _folds(groups: Sequence, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) fold index per item, whole groups to a fold, groups shuffled then dealt round-robin."""
    names = sorted(set(groups), key=str)
    rng.shuffle(names)
    fold_of = {g: i % k for i, g in enumerate(names)}
    return np.array([fold_of[g] for g in groups])


def realism_auc(clips_a: Sequence[np.ndarray], clips_b: Sequence[np.ndarray], groups_a: Sequence | None = None,
                groups_b: Sequence | None = None, seed: int = 0, folds: int = 5) -> float:
    """A classifier two-sample test: out-of-fold ROC AUC of a logistic regression telling set a
    from set b by `clip_features` (0.5: indistinguishable, 1: told apart every time).

    Folds hold whole groups (patients) when given, so the classifier cannot win by
    recognising a patient it trained on; each set's groups are dealt over the folds
    separately, so every fold tests both. Features are standardised on the training folds;
    a missing one (no beat found) reads as the training mean. Deterministic for a seed.
    """
    if len(clips_a) < 2 or len(clips_b) < 2:
        raise ValueError(f"realism_auc: needs at least 2 clips a side, got {len(clips_a)} and {len(clips_b)}")
    feats = np.stack([clip_features(c) for c in (*clips_a, *clips_b)])
    y = np.r_[np.zeros(len(clips_a)), np.ones(len(clips_b))]
    ga = list(range(len(clips_a))) if groups_a is None else [("a", g) for g in groups_a]
    gb = list(range(len(clips_b))) if groups_b is None else [("b", g) for g in groups_b]
    k = min(folds, len(set(map(str, ga))), len(set(map(str, gb))))
    rng = np.random.default_rng(seed)
    fold = np.r_[_folds([str(g) for g in ga], k, rng), _folds([str(g) for g in gb], k, rng)]
    scores = np.zeros(len(y))
    for f in range(k):
        train, test = fold != f, fold == f
        mean = np.nanmean(feats[train], 0)
        std = np.nanstd(feats[train], 0)
        std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)

        def z(rows):
            return np.nan_to_num((rows - np.nan_to_num(mean)) / std)

        w = _logistic_fit(z(feats[train]), y[train])
        scores[test] = z(feats[test]) @ w[:-1] + w[-1]
    return roc_auc(scores, y)


def realism_floor(clips: Sequence[np.ndarray], groups: Sequence, seed: int = 0) -> float:
    """`realism_auc` of two patient-disjoint halves of one set (hldm.eval.harness.disjoint_halves):
    what the test reads when nothing differs but the patients and chance."""
    from hldm.eval.harness import disjoint_halves

    a, b = disjoint_halves(groups, seed)
    return realism_auc([clips[i] for i in a], [clips[i] for i in b], [groups[i] for i in a],
                       [groups[i] for i in b], seed=seed)
