"""From a raw anomaly score per row to a 0/1 alarm per row: smoothing, threshold, hysteresis.

Why this is part of every recipe: faults are sustained episodes and are judged
point-wise, so an alarm that flickers inside an episode loses as many points as
one that fires on a single spike outside it. A causal EWMA averages the score
over ~`span` rows; the alarm switches on only after `on_count` consecutive rows
above the threshold and off only after `off_count` consecutive rows below
`off_ratio * threshold`. All of it is causal, so the service can run it online.
"""

from __future__ import annotations

import numpy as np


def ewma(scores: np.ndarray, span: float) -> np.ndarray:
    """Causal exponentially weighted moving average (pandas' `ewm(span=...)` without bias adjustment)."""
    scores = np.asarray(scores, dtype=np.float64)
    if span <= 1 or len(scores) == 0:
        return scores.copy()
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(scores)
    state = scores[0]
    for i, value in enumerate(scores):
        state += alpha * (value - state)
        out[i] = state
    return out


def hysteresis(smoothed: np.ndarray, threshold: float, on_count: int = 1, off_count: int = 1,
               off_ratio: float = 1.0) -> np.ndarray:
    """0/1 alarm: on after `on_count` rows above `threshold`, off after `off_count` rows below `off_ratio*threshold`."""
    alarm = np.zeros(len(smoothed), dtype=np.int8)
    on, run = False, 0
    for i, value in enumerate(smoothed):
        crossing = value <= off_ratio * threshold if on else value > threshold
        run = run + 1 if crossing else 0
        if run >= (off_count if on else on_count):
            on, run = not on, 0
        alarm[i] = on
    return alarm


def smooth(raw: np.ndarray, threshold: float, span: float, cap: float = 0.0) -> np.ndarray:
    """EWMA of the raw score, each row first capped at `cap` x threshold (0: no cap).

    Why the cap: a fault scores tens of times the threshold, and an uncapped
    EWMA needs ~span x log(score / threshold) rows to come back down after the
    fault is over, each one a false alarm; capped, release takes a few rows
    whatever the fault's size, while onset (a climb to the threshold) is unchanged.
    """
    raw = np.asarray(raw, dtype=np.float64)
    return ewma(np.minimum(raw, cap * threshold) if cap > 0 else raw, span)


def choose_threshold(scores: np.ndarray, quantile: float, margin: float) -> float:
    """median + `margin` * (the `quantile` - median) of scores on normal (training) rows.

    Stretching the tail above the typical score keeps the rule independent of
    the score's offset and scale (an IsolationForest's scores sit near 0.4, a
    distance's near 0); the margin pays for the training rows being fewer and
    cleaner than the months a deployed model will see.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("threshold needs at least one finite training score")
    if not 0.0 < quantile <= 1.0 or margin <= 0:
        raise ValueError(f"quantile must be in (0, 1] and margin positive, got {quantile}, {margin}")
    median = float(np.median(scores))
    return median + margin * (float(np.quantile(scores, quantile)) - median)
