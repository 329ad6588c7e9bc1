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
  trained on, then the card's smoothing (capped EWMA), so the streamed score is
  the one the card's threshold was chosen for.

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
from typing import Protocol

import numpy as np

from plantwatch import metrics
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


@dataclass(frozen=True)
class Smoothing:
    """The card's alarm smoothing: each raw score capped at cap x threshold (0: no cap), then an EWMA."""

    span: float
    threshold: float
    cap: float = 0.0

    @classmethod
    def of_card(cls, card: ModelCard) -> Smoothing:
        alarm = card["alarm"]
        return cls(float(alarm["ewma_span"]), float(alarm["threshold"]), float(alarm.get("cap", 0.0)))

    def next(self, state: float | None, raw: float) -> float:
        value = min(raw, self.cap * self.threshold) if self.cap > 0 else raw
        if state is None or self.span <= 1:
            return value
        return state + 2.0 / (self.span + 1.0) * (value - state)


@dataclass
class _NodeState:
    rows: list[np.ndarray] = field(default_factory=list)
    seen: int = 0
    since_scored: int = 0
    smoothed: float | None = None
    last: np.ndarray | None = None


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
        smoothing: Smoothing | None = None,
        backoff_s: float = UNAVAILABLE_BACKOFF_S,
    ):
        self.detector = detector
        self.nodes = frozenset(nodes)
        self.sensors = tuple(sensors)
        self.features = features
        self.run = run
        self.step = max(1, step)
        self.smoothing = smoothing
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
                # The batch's rows are the newest of the history: one feature call for all of them.
                computed = self.features.vectors(np.asarray(state.rows), len(new))
                offsets = {ts: i for i, (ts, _) in enumerate(new)}
                for ts in stamps:
                    due.append((node, ts))
                    vectors.append(computed[offsets[ts]])
            del state.rows[: -self.features.history]
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
            if self.smoothing is not None:
                state.smoothed = value = self.smoothing.next(state.smoothed, float(value))
            out.append(Reading(node, self.detector, SCORE_TYPE, float(value), ts))
        self.scored += len(out)
        return out

    def _skip(self, rows: int, why: str) -> None:
        self.skipped += rows
        metrics.SCORES_SKIPPED.labels(self.detector).inc(rows)
        if time.monotonic() - self._warned_at >= UNAVAILABLE_LOG_INTERVAL_S:
            self._warned_at = time.monotonic()
            log.warning("DetectorModel %s: %d rows not scored: %s", self.detector, rows, why)
