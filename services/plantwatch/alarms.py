"""From a raw anomaly score per row to a 0/1 alarm per row: smoothing, threshold, hysteresis.

Shared by training and scoring (`plantwatch.detect`: `detector score`, the
experiment, the alarm rates on the card) and serving (`plantwatch.inference.stream`),
so it belongs to neither: `AlarmRule.step` is the one state machine, run over a
whole recording by `alarm_rule` and one row at a time by the stream, so a served
alarm is the CLI's alarm.

Why this is part of every recipe: faults are sustained episodes and are judged
point-wise, so an alarm that flickers inside an episode loses as many points as
one that fires on a single spike outside it. A causal EWMA averages the score
over ~`span` rows; the alarm switches on only after `on_count` consecutive rows
above the threshold and off only after `off_count` consecutive rows below
`off_ratio * threshold`, or once the raw score has fallen well below its
recent level (`release`). All of it is causal, so the service runs it online.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def ewma(scores: np.ndarray, span: float) -> np.ndarray:
    """Causal exponentially weighted moving average (pandas' `ewm(span=...)` without bias adjustment)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.empty_like(scores)
    state = None
    for i, value in enumerate(scores):
        out[i] = state = _ewma_next(state, float(value), span)
    return out


def _ewma_next(state: float | None, value: float, span: float) -> float:
    if state is None or span <= 1:
        return value
    return state + 2.0 / (span + 1.0) * (value - state)


@dataclass
class AlarmState:
    """Where one series' alarm stands: its three averages (None before the first row), on/off, the run, the block.

    `to_json`/`of_json` carry it through a checkpoint (a shard moving to another gateway).
    """

    smoothed: float | None = None
    fast: float | None = None
    slow: float | None = None
    on: bool = False
    run: int = 0
    blocked: float = 0.0

    def to_json(self) -> list[Any]:
        return [self.smoothed, self.fast, self.slow, self.on, self.run, self.blocked]

    @classmethod
    def of_json(cls, value: list[Any]) -> AlarmState:
        smoothed, fast, slow, on, run, blocked = value
        return cls(smoothed, fast, slow, bool(on), int(run), float(blocked))


@dataclass(frozen=True)
class AlarmRule:
    """The alarm rule of a model card's `alarm` (see `hysteresis` and `smooth` for the why of each part)."""

    threshold: float
    span: float
    cap: float = 0.0
    on_count: int = 1
    off_count: int = 1
    off_ratio: float = 1.0
    release: float = 0.0
    rearm: float = 0.8
    release_span: float = 60.0

    @classmethod
    def of_card(cls, alarm: dict[str, Any]) -> AlarmRule:
        """From a card's `alarm`; cards before `cap` have no cap, cards before `release` no release."""
        return cls(
            float(alarm["threshold"]),
            float(alarm["ewma_span"]),
            float(alarm.get("cap", 0.0)),
            int(alarm.get("on_count", 1)),
            int(alarm.get("off_count", 1)),
            float(alarm.get("off_ratio", 1.0)),
            float(alarm.get("release", 0.0)),
            float(alarm.get("rearm", 0.8)),
            float(alarm.get("release_span", 60.0)),
        )

    def step(self, state: AlarmState, raw: float) -> tuple[float, bool]:
        """Advance `state` by one raw score; (smoothed score, alarm on) for that row."""
        capped = min(raw, self.cap * self.threshold) if self.cap > 0 else raw
        state.smoothed = _ewma_next(state.smoothed, capped, self.span)
        if self.release > 0:
            state.fast = _ewma_next(state.fast, raw, self.span)
            state.slow = _ewma_next(state.slow, raw, self.release_span)
        self.switch(state, state.smoothed, state.fast, state.slow)
        return state.smoothed, state.on

    def switch(self, state: AlarmState, value: float, fast: float | None, slow: float | None) -> None:
        """The on/off decision for one smoothed `value` (`fast`, `slow`: the release's averages of the raw score)."""
        if state.on:
            state.run = state.run + 1 if value <= self.off_ratio * self.threshold else 0
            if state.run >= self.off_count:
                state.on, state.run = False, 0
            elif self.release > 0 and fast < self.release * slow:
                state.on, state.run, state.blocked = False, 0, slow
        else:
            if state.blocked and value <= self.threshold:
                state.blocked = 0.0
            above = value > self.threshold and (not state.blocked or fast > self.rearm * state.blocked)
            state.run = state.run + 1 if above else 0
            if state.run >= self.on_count:
                state.on, state.run, state.blocked = True, 0, 0.0

    def run(self, raw: np.ndarray, state: AlarmState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores -> (smoothed score, 0/1 alarm), row by row through `step`."""
        state = AlarmState() if state is None else state
        raw = np.asarray(raw, dtype=np.float64)
        smoothed, alarm = np.empty(len(raw)), np.zeros(len(raw), dtype=np.int8)
        for i, value in enumerate(raw):
            smoothed[i], alarm[i] = self.step(state, float(value))
        return smoothed, alarm


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
    rule = AlarmRule(threshold, 1.0, 0.0, on_count, off_count, off_ratio, release, rearm)
    state = AlarmState()
    alarm = np.zeros(len(smoothed), dtype=np.int8)
    for i, value in enumerate(smoothed):
        rule.switch(state, float(value), fast[i] if release > 0 else None, slow[i] if release > 0 else None)
        alarm[i] = state.on
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
    """Raw scores -> (smoothed score, 0/1 alarm): `AlarmRule.run` with these settings.

    The release compares an EWMA over `span` rows of the *uncapped* raw score
    with one over `release_span` rows: capped, a fault's score sits at the cap
    and its drain would not show until it is nearly over.
    """
    return AlarmRule(threshold, span, cap, on_count, off_count, off_ratio, release, rearm, release_span).run(raw)


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
