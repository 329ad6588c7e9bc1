"""Causal rolling-window features per channel, and the robust scaler fitted on training rows.

Shared by training (`plantwatch.detect`) and serving (`plantwatch.inference.stream`,
which turns a model card's window into the same rows), so it belongs to neither.
Decision (see detect/README.md): features are computed here, in numpy, in both the
CLI and anything that feeds the served model; the ONNX graph starts at these features
(robust scaling, clipping and the detector are inside the graph). Rolling medians
and a growing history do not fit a stateless `features [batch, n] -> score [batch]`
graph, while these few lines of numpy are cheap to share. Every window looks only
backwards, so a row's features are the same offline and online.

Per channel, up to four features (`FeatureSpec.kinds`; `change` is off by default):
  level   rolling median over `short` rows        - where the signal is (robust to spikes)
  change  level minus the rolling median over `long` rows - a recent shift, blind to slow drift
  noise   log of the rolling MAD of first differences over `noise` rows
          - noise level: rises with cavitation, collapses for a stuck sensor
  missing fraction of NaN over `short` rows      - a dropped-out sensor
  seasonal the level's departure from its trailing half-period median, minus the median of
          that departure exactly 1, 2, ... `baseline // period` cycles of `period` rows
          earlier - off the usual course for this time of day (opt-in: the default recipe
          turns it on for a slow channel with a daily cycle)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FEATURE_KINDS = ("level", "change", "seasonal", "noise", "missing")
#: `change` is opt-in: it fires again when a fault *ends* (the long baseline still holds the
#: fault) and on every normal set-point step, which cost more false alarms than it found faults.
DEFAULT_KINDS = ("level", "noise", "missing")
#: Robust z-scores are clipped here so one dead sensor cannot dominate every other channel.
CLIP = 20.0


@dataclass(frozen=True)
class FeatureSpec:
    """Window lengths in rows (1 Hz data: seconds)."""

    short: int = 10
    long: int = 120
    noise: int = 30
    kinds: tuple[str, ...] = DEFAULT_KINDS
    period: int = 0  # seasonal: rows per cycle (a day's rows)
    baseline: int = 0  # seasonal: rows of past cycles its baseline looks over (a whole number of periods)

    def __post_init__(self):
        unknown = set(self.kinds) - set(FEATURE_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"feature kinds {sorted(unknown)}; accepted: {', '.join(FEATURE_KINDS)}")
        if "seasonal" in self.kinds and not (self.period >= 2 and self.baseline >= self.period and self.baseline % self.period == 0):
            raise ValueError(
                f"seasonal features need period >= 2 rows and baseline a positive multiple of it, got period {self.period}, "
                f"baseline {self.baseline}"
            )
        object.__setattr__(self, "kinds", tuple(k for k in FEATURE_KINDS if k in self.kinds))

    @property
    def warmup(self) -> int:
        """Rows before every short window is full; their features rest on a handful of readings.

        A MAD over one or two differences is ~0, which would teach the detector
        that a flat line is normal, so these rows never train a detector.
        """
        return max(self.short, self.noise if "noise" in self.kinds else 0, self.baseline if "seasonal" in self.kinds else 0)

    def to_json(self) -> dict:
        return {**asdict(self), "kinds": list(self.kinds)}


def feature_names(channels: list[str] | tuple[str, ...], spec: FeatureSpec = FeatureSpec()) -> list[str]:
    """Column names of `window_features`' output, channel-major."""
    return [f"{c}:{k}" for c in channels for k in spec.kinds]


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaN per column (the last good reading), leading NaN from the first good one, all-NaN as 0."""
    out = np.array(values, dtype=np.float64, copy=True)
    for j in range(out.shape[1]):
        col = out[:, j]
        good = ~np.isnan(col)
        if not good.any():
            col[:] = 0.0
            continue
        index = np.where(good, np.arange(len(col)), 0)
        np.maximum.accumulate(index, out=index)
        first = int(np.argmax(good))
        index[:first] = first
        out[:, j] = col[index]
    return out


def rolling(values: np.ndarray, window: int, reduce) -> np.ndarray:
    """Causal rolling reduction over rows; the first rows reduce over the rows there are (NaN is "no row").

    `reduce` must ignore NaN (np.nanmedian, np.nanmean). Padding with copies of
    row 0 instead would fake a flat line, which is exactly what a stuck sensor looks like.
    """
    padded = np.concatenate([np.full((window - 1, values.shape[1]), np.nan), values], axis=0)
    return reduce(sliding_window_view(padded, window, axis=0), axis=-1)


def _mad(windows: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median absolute deviation from the median, ignoring NaN.

    Applied to first differences it measures noise but not steady ramps (an
    operating-point change moves every difference alike), and one spike moves it
    by one rank only.
    """
    center = np.nanmedian(windows, axis=axis, keepdims=True)
    return np.nanmedian(np.abs(windows - center), axis=axis)


def _seasonal_baseline(level: np.ndarray, period: int, cycles: int) -> np.ndarray:
    """Median of the level 1..`cycles` periods earlier (the ones there are); a row with none: its own level."""
    past = np.full((cycles, *level.shape), np.nan)
    for k in range(1, cycles + 1):
        past[k - 1, k * period :] = level[: len(level) - k * period]
    have = ~np.isnan(past).all(axis=0)
    baseline = level.copy()
    baseline[have] = np.nanmedian(past[:, have], axis=0)
    return baseline


def window_features(values: np.ndarray, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """[rows, channels] raw readings (NaN = missing) -> [rows, channels * len(spec.kinds)] features (float64)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"values must be [rows, channels] with at least two rows, got shape {values.shape}")
    filled = fill_missing(values)
    level = rolling(filled, spec.short, np.nanmedian)
    out = {"level": level}
    if "change" in spec.kinds:
        out["change"] = level - rolling(filled, spec.long, np.nanmedian)
    if "seasonal" in spec.kinds:
        # Against the level's own trailing half-period median, not the raw level: a load step moves the
        # whole day's level for hours to days, and past days' levels would call all of it off course
        # (most of the slow kind's false alarms); the cycle's shape, and a shift for its first hours, remain.
        course = level - rolling(level, spec.period // 2, np.nanmedian)
        out["seasonal"] = course - _seasonal_baseline(course, spec.period, spec.baseline // spec.period)
    if "noise" in spec.kinds:
        diffs = np.diff(filled, axis=0)
        diffs = np.concatenate([diffs[:1], diffs])  # row 0 has no predecessor: borrow row 1's step
        # The floor keeps log() finite for a flat line and is far below any real noise level.
        out["noise"] = np.log(rolling(diffs, spec.noise, _mad) + 1e-6 * (np.abs(level) + 1e-3))
    if "missing" in spec.kinds:
        out["missing"] = rolling(np.isnan(values).astype(np.float64), spec.short, np.nanmean)
    return np.stack([out[k] for k in spec.kinds], axis=-1).reshape(len(values), -1)


@dataclass(frozen=True)
class RobustScaler:
    """Median / MAD scaling fitted on training features; z is clipped to +-CLIP."""

    center: np.ndarray
    scale: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        return np.clip((features - self.center) / self.scale, -CLIP, CLIP)


def fit_scaler(train: np.ndarray) -> RobustScaler:
    """Median and 1.4826*MAD per column; 1.2533 x the mean absolute deviation where the MAD is 0; floored.

    A quantised channel's level sits on one step for more than half the training
    rows, so its MAD is 0: scaled by the floor, its every step was +-CLIP, its limits
    were at the clip and the channel was blind (a quantised sensor drifting by
    several steps went unseen). The mean absolute deviation still sees the steps
    (1.2533 x it is the std for normal data). The floor (0.1 % of |median|, at
    least 1e-6) stops a feature that never moved in training (a constant
    set-point, no missing data) from turning rounding noise into infinite z;
    anything it does flag is then clipped at CLIP.
    """
    center = np.median(train, axis=0)
    deviation = np.abs(train - center)
    mad = 1.4826 * np.median(deviation, axis=0)
    spread = np.where(mad > 0, mad, 1.2533 * deviation.mean(axis=0))
    return RobustScaler(center, np.maximum(spread, np.maximum(1e-3 * np.abs(center), 1e-6)))
