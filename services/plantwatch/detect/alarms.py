"""From a raw anomaly score per row to a 0/1 alarm per row: smoothing, threshold, hysteresis.

Why this is part of every recipe: faults are sustained episodes and are judged
point-wise, so an alarm that flickers inside an episode loses as many points as
one that fires on a single spike outside it. A causal EWMA averages the score
over ~`span` rows; the alarm switches on only after `on_count` consecutive rows
above the threshold and off only after `off_count` consecutive rows below
`off_ratio * threshold`, or once the raw score has fallen well below its
recent level (`release`). All of it is causal, so the service can run it online.
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


def hysteresis(
    smoothed: np.ndarray,
    threshold: float,
    on_count: int = 1,
    off_count: int = 1,
    off_ratio: float = 1.0,
    fast: np.ndarray | None = None,
    slow: np.ndarray | None = None,
    release: float = 0.0,
    rearm: float = 0.8,
) -> np.ndarray:
    """0/1 alarm: on after `on_count` rows above `threshold`, off after `off_count` rows below `off_ratio*threshold`.

    With `release` > 0 an alarm also ends at the first row where `fast` (a short
    EWMA of the uncapped raw score) falls below `release` x `slow` (a long one):
    the score dropped steeply from the level it held. Why: when a fault ends,
    the window features drain over 10-20 rows, and the smoothed score stays
    above the threshold for most of the drain, each row a false alarm. Relative
    to the score's own recent level, the release does not depend on how big the
    fault was; averages rather than the episode's peak, because a peak is an
    extreme value that a noisy score inside a fault sets far above its typical
    level (the alarm then falls off in the middle of the fault). After such a
    release the alarm stays off (the score is still draining above the
    threshold) until the smoothed score has been back at or below the
    threshold, or `fast` climbs back to `rearm` x the `slow` level of the release.
    """
    if release > 0 and (fast is None or slow is None):
        raise ValueError("a release needs the fast and slow averages of the raw score")
    alarm = np.zeros(len(smoothed), dtype=np.int8)
    on, run, blocked = False, 0, 0.0
    for i, value in enumerate(smoothed):
        if on:
            run = run + 1 if value <= off_ratio * threshold else 0
            if run >= off_count:
                on, run = False, 0
            elif release > 0 and fast[i] < release * slow[i]:
                on, run, blocked = False, 0, slow[i]
        else:
            if blocked and value <= threshold:
                blocked = 0.0
            above = value > threshold and (not blocked or fast[i] > rearm * blocked)
            run = run + 1 if above else 0
            if run >= on_count:
                on, run, blocked = True, 0, 0.0
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


def alarm_rule(
    raw: np.ndarray,
    threshold: float,
    span: float,
    cap: float = 0.0,
    on_count: int = 1,
    off_count: int = 1,
    off_ratio: float = 1.0,
    release: float = 0.0,
    rearm: float = 0.8,
    release_span: float = 60.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores -> (smoothed score, 0/1 alarm): `smooth`, then `hysteresis` with its release averages.

    The release compares an EWMA over `span` rows of the *uncapped* raw score
    with one over `release_span` rows: capped, a fault's score sits at the cap
    and its drain would not show until it is nearly over.
    """
    raw = np.asarray(raw, dtype=np.float64)
    smoothed = smooth(raw, threshold, span, cap)
    fast, slow = (ewma(raw, span), ewma(raw, release_span)) if release > 0 else (None, None)
    return smoothed, hysteresis(smoothed, threshold, on_count, off_count, off_ratio, fast, slow, release, rearm)


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
