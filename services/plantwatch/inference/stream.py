"""Streaming scores: readings in, `anomaly_score` readings out, one StreamScorer per DetectorModel.

Per node, the readings of the DetectorModel's `spec.features.sensors` are gathered
into rows (one row per timestamp: a node's message carries its sensors at one
time), rows into a rolling history, and every `step` rows the history's newest
window becomes a feature vector. The vectors of every node in a batch go through
the model in one call, and each score comes back as a Reading of the node with
sensor = the DetectorModel's name and type `anomaly_score`, so AlertRules of
condition type AnomalyScore (selector `sensorType: anomaly_score`) evaluate it
like any other series.

Two ways to turn rows into the model's input:
- `Aggregations`: the DetectorModel's own spec (`window`, `aggregations` of
  last/mean/std/min/max/slope per sensor, sensor-major), for hand-made models
  such as the sample plant's starter;
- `CardFeatures`: a model trained by `plantwatch detector train` carries its
  feature recipe in model-card.json; the same numpy features the detector was
  trained on, then the card's alarm rule (`plantwatch.alarms.AlarmRule`: capped
  EWMA, on/off counts, the fast release), one state per node, the very state
  machine `detector score` runs. The served value is the smoothed score held on
  the side of the card's threshold the alarm is on (`served_value`), so an
  AnomalyScore rule at the card's threshold alarms on exactly the CLI's rows.

A scorer's per-node state (the feature history, bounded by the longest window,
and the alarm state) goes into the pipeline's checkpoint (`snapshot`/`restore`),
so a node whose shard moves to another gateway is scored on without a new warm-up.

Pure apart from `run` (the model call), which the caller supplies: a local
ONNX Runtime session, the micro-batcher, or a remote Open Inference Protocol
endpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from plantwatch import metrics
from plantwatch.alarms import AlarmRule, AlarmState
from plantwatch.contracts import model_card
from plantwatch.contracts.model_card import ModelCard
from plantwatch.features import FeatureSpec, window_features
from plantwatch.readings import Reading

log = logging.getLogger(__name__)

SCORE_TYPE = "anomaly_score"
#: At most one warning per detector in this many seconds while its model cannot be reached.
UNAVAILABLE_LOG_INTERVAL_S = 30.0
#: After a call that could not reach the model, its scores are skipped without calling it for this many seconds:
#: a service that is down or hung costs the pipeline one call's timeout per back-off, not one per batch.
UNAVAILABLE_BACKOFF_S = 10.0
AGGREGATIONS = ("last", "mean", "std", "min", "max", "slope")


class ScoringUnavailable(RuntimeError):
    """The model could not be reached for this call (an inference service that is down or restarting).

    A scorer skips that batch's scores rather than failing the batch (and the next
    ones for UNAVAILABLE_BACKOFF_S without calling the model): readings, thresholds
    and absence alerts must not wait for a detector.
    """


class Features(Protocol):
    #: Rows of history kept per node (the longest window).
    history: int
    #: Rows a node must have seen before its scores are emitted.
    warmup: int
    #: Whether a sensor missing from a row (NaN) is information the features use, rather
    #: than a gap the scorer fills with the sensor's last value.
    uses_missing: bool

    def vectors(self, rows: np.ndarray, newest: int) -> np.ndarray:
        """Feature vectors [newest, n] of the last `newest` rows of `rows` [history rows, channels]."""


@dataclass(frozen=True)
class Aggregations:
    """Per sensor, aggregations over the last `window` rows (DetectorModel spec.features)."""

    window: int
    aggregations: tuple[str, ...]

    def __post_init__(self):
        unknown = [a for a in self.aggregations if a not in AGGREGATIONS]
        if unknown or not self.aggregations:
            raise ValueError(f"aggregations {unknown or '[]'}; accepted: {', '.join(AGGREGATIONS)}")

    @property
    def history(self) -> int:
        return self.window

    @property
    def warmup(self) -> int:
        return self.window

    uses_missing = False

    def vectors(self, rows: np.ndarray, newest: int) -> np.ndarray:
        out = []
        for end in range(len(rows) - newest + 1, len(rows) + 1):
            win = rows[max(0, end - self.window) : end]
            columns = np.stack([_AGGREGATE[a](win) for a in self.aggregations], axis=-1)  # [channels, aggregations]
            out.append(columns.reshape(-1))  # sensor-major, as the DetectorModel documents
        return np.asarray(out, dtype=np.float32)


def _slope(window: np.ndarray) -> np.ndarray:
    """Least-squares slope per channel, per row."""
    if len(window) < 2:
        return np.zeros(window.shape[1])
    t = np.arange(len(window), dtype=np.float64)
    t -= t.mean()
    return (t[:, None] * (window - window.mean(axis=0))).sum(axis=0) / (t * t).sum()


_AGGREGATE = {
    "last": lambda w: w[-1],
    "mean": lambda w: w.mean(axis=0),
    "std": lambda w: w.std(axis=0),
    "min": lambda w: w.min(axis=0),
    "max": lambda w: w.max(axis=0),
    "slope": _slope,
}


@dataclass(frozen=True)
class CardFeatures:
    """The features a `plantwatch detector` model was trained on (its model card's `features.window`)."""

    card: ModelCard

    @property
    def history(self) -> int:
        # Every window length in the card (short, long, noise, ...) fits in the kept history.
        return model_card.history(self.card)

    uses_missing = True  # the detector's features forward-fill and count missing readings themselves

    @property
    def warmup(self) -> int:
        return FeatureSpec(**model_card.window(self.card)).warmup

    def vectors(self, rows: np.ndarray, newest: int) -> np.ndarray:
        if len(rows) < 2:  # window_features needs two rows; a lone first row is still in warm-up
            rows = np.concatenate([rows, rows])
        return window_features(rows, FeatureSpec(**model_card.window(self.card)))[-newest:].astype(np.float32)


def served_value(rule: AlarmRule, smoothed: float, on: bool) -> float:
    """The smoothed score, held on the side of the card's threshold the alarm rule decided.

    An AnomalyScore rule alarms while the value is above its threshold; the alarm rule
    also holds an alarm below it (`off_count`, `off_ratio`) and keeps one off above it
    (`on_count`, a release). Held at the threshold (off) or just past it (on), a rule at
    the card's threshold follows the alarm row for row, and elsewhere the value is the score.
    """
    if on:
        return max(smoothed, float(np.nextafter(rule.threshold, math.inf)))
    return min(smoothed, rule.threshold)


def _row_json(row: np.ndarray) -> list[float | None]:
    return [None if math.isnan(x) else float(x) for x in row]


@dataclass
class _NodeState:
    rows: list[np.ndarray] = field(default_factory=list)
    seen: int = 0
    since_scored: int = 0
    alarm: AlarmState = field(default_factory=AlarmState)
    last: np.ndarray | None = None
    #: Per sensor, its newest reading among the rows that left the history (NaN: none yet): what
    #: the features forward-fill a gap longer than the history from, as the CLI does over a whole file.
    carry: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        last = None if self.last is None else _row_json(self.last)
        return {
            "rows": [_row_json(r) for r in self.rows],
            "seen": self.seen,
            "since": self.since_scored,
            "alarm": self.alarm.to_json(),
            "last": last,
            "carry": None if self.carry is None else _row_json(self.carry),
        }

    def trim(self, keep: int) -> None:
        """Keep the newest `keep` rows, remembering each sensor's newest reading among those dropped."""
        dropped = len(self.rows) - keep
        if dropped <= 0:
            return
        old = np.asarray(self.rows[:dropped])
        newest = np.full(old.shape[1], np.nan) if self.carry is None else self.carry.copy()
        for column in range(old.shape[1]):
            good = np.flatnonzero(~np.isnan(old[:, column]))
            if len(good):
                newest[column] = old[good[-1], column]
        self.carry = newest
        del self.rows[:dropped]

    @classmethod
    def of_json(cls, value: dict[str, Any]) -> _NodeState:
        # None is a missing reading (JSON has no NaN); numpy reads it back as NaN.
        rows = [np.asarray(r, dtype=np.float64) for r in value["rows"]]
        last = None if value["last"] is None else np.asarray(value["last"], dtype=np.float64)
        carry = value.get("carry")  # absent from checkpoints written before it was kept
        carry = None if carry is None else np.asarray(carry, dtype=np.float64)
        return cls(rows, int(value["seen"]), int(value["since"]), AlarmState.of_json(value["alarm"]), last, carry)


class StreamScorer:
    """One DetectorModel over the readings of the nodes it selects."""

    def __init__(
        self,
        detector: str,
        nodes: Iterable[str],
        sensors: Iterable[str],
        features: Features,
        run: Callable[[np.ndarray], np.ndarray],
        step: int = 1,
        alarm: AlarmRule | None = None,
        backoff_s: float = UNAVAILABLE_BACKOFF_S,
    ):
        self.detector = detector
        self.nodes = frozenset(nodes)
        self.sensors = tuple(sensors)
        self.features = features
        self.run = run
        self.step = max(1, step)
        #: The card's alarm rule; None (a hand-made model): the raw score is served.
        self.alarm = alarm
        self._channel = {s: i for i, s in enumerate(self.sensors)}
        self._state: dict[str, _NodeState] = {}
        self.scored = 0
        #: Feature rows that were due but not scored because the model could not be reached.
        self.skipped = 0
        self._warned_at = -math.inf
        self.backoff_s = backoff_s
        self._skip_until = -math.inf  # monotonic time until which the model is not called (see ScoringUnavailable)

    def score(self, readings: Iterable[Reading]) -> list[Reading]:
        """Add a batch of readings; return the scores of the rows they completed."""
        rows: dict[str, list[tuple[float, np.ndarray]]] = {}
        for r in readings:
            index = self._channel.get(r.sensor)
            if index is None or r.node not in self.nodes or r.type == SCORE_TYPE:
                continue
            node_rows = rows.setdefault(r.node, [])
            if not node_rows or node_rows[-1][0] != r.ts:
                node_rows.append((r.ts, np.full(len(self.sensors), math.nan)))
            node_rows[-1][1][index] = r.value
        due: list[tuple[str, float]] = []
        vectors: list[np.ndarray] = []
        for node, new in rows.items():
            state = self._state.setdefault(node, _NodeState())
            stamps = []
            for ts, row in new:
                # Otherwise a sensor missing from a message keeps its last value.
                if not self.features.uses_missing and state.last is not None:
                    row = np.where(np.isnan(row), state.last, row)
                state.last = row
                state.rows.append(row)
                state.seen += 1
                state.since_scored += 1
                if state.seen >= self.features.warmup and state.since_scored >= self.step:
                    state.since_scored = 0
                    stamps.append(ts)
            if stamps:
                # The batch's rows are the newest of the history: one feature call for all of them. Features
                # that fill gaps themselves get the carried readings as a row before the history: outside
                # every window of the rows scored, it only feeds a forward fill across a long gap.
                history = state.rows if state.carry is None or not self.features.uses_missing else [state.carry, *state.rows]
                computed = self.features.vectors(np.asarray(history), len(new))
                offsets = {ts: i for i, (ts, _) in enumerate(new)}
                for ts in stamps:
                    due.append((node, ts))
                    vectors.append(computed[offsets[ts]])
            state.trim(self.features.history)
        if not due:
            return []
        if time.monotonic() < self._skip_until:
            self._skip(len(due), "backing off after the model could not be reached")
            return []
        try:
            raw = np.asarray(self.run(np.asarray(vectors, dtype=np.float32)), dtype=np.float64).reshape(-1)
        except ScoringUnavailable as exc:
            self._skip_until = time.monotonic() + self.backoff_s
            self._skip(len(due), f"{exc}; not called again for {self.backoff_s:g}s")
            return []
        out = []
        for (node, ts), value in zip(due, raw):
            state = self._state[node]
            if self.alarm is not None:
                value = served_value(self.alarm, *self.alarm.step(state.alarm, float(value)))
            out.append(Reading(node, self.detector, SCORE_TYPE, float(value), ts))
        self.scored += len(out)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Per node, the feature history (at most `features.history` rows) and the alarm state, JSON-ready."""
        return {node: state.to_json() for node, state in self._state.items()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue from a snapshot; nodes this scorer no longer selects are dropped."""
        for node, value in snapshot.items():
            if node in self.nodes:
                self._state[node] = _NodeState.of_json(value)

    def _skip(self, rows: int, why: str) -> None:
        self.skipped += rows
        metrics.SCORES_SKIPPED.labels(self.detector).inc(rows)
        if time.monotonic() - self._warned_at >= UNAVAILABLE_LOG_INTERVAL_S:
            self._warned_at = time.monotonic()
            log.warning("DetectorModel %s: %d rows not scored: %s", self.detector, rows, why)
