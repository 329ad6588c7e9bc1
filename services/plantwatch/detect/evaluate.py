"""Point-wise detection figures, pooled over recordings (how the hidden benchmark judges).

Pooling sums the confusion counts of every recording before dividing, so a long
recording weighs more than a short one, and a recording without faults still
counts its false alarms.
  F1                = 2 TP / (2 TP + FP + FN)
  false-alarm rate  = FP / (FP + TN)   (share of normal rows alarmed)
  missed-alarm rate = FN / (FN + TP)   (share of anomalous rows not alarmed)

Event-level figures (`Events`) judge what an operator sees instead of rows: a
failure period (a run of labelled rows) is caught when any of its rows alarms,
and a false-alarm episode is a run of alarmed rows that touches no labelled row,
counted per 30 days of the judged time span.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0

    @property
    def false_alarm_rate(self) -> float:
        normals = self.fp + self.tn
        return self.fp / normals if normals else 0.0

    @property
    def missed_alarm_rate(self) -> float:
        anomalies = self.fn + self.tp
        return self.fn / anomalies if anomalies else 0.0

    def summary(self) -> dict:
        return {**asdict(self), "f1": round(self.f1, 4), "far": round(self.false_alarm_rate, 4), "mar": round(self.missed_alarm_rate, 4)}


def confusion(labels: np.ndarray, predictions: np.ndarray) -> Counts:
    """Confusion counts of 0/1 labels against 0/1 predictions of the same length."""
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels have {labels.shape} rows, predictions {predictions.shape}")
    return Counts(
        int(np.sum(labels & predictions)),
        int(np.sum(~labels & predictions)),
        int(np.sum(labels & ~predictions)),
        int(np.sum(~labels & ~predictions)),
    )


def pooled(counts: list[Counts]) -> Counts:
    return sum(counts, Counts())


#: The bar `meets_target` judges by (issue 14's, for the multivariate kind), as `evaluate` prints it.
TARGET = {"f1": ">= 0.80", "far": "<= 0.135", "mar": "<= 0.28"}


def meets_target(counts: Counts, f1: float = 0.80, far: float = 0.135, mar: float = 0.28) -> bool:
    """The issue's bar (TARGET): all three at once."""
    return counts.f1 >= f1 and counts.false_alarm_rate <= far and counts.missed_alarm_rate <= mar


#: Days in the "month" of false-alarm episodes per month.
MONTH_DAYS = 30.0


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end exclusive) of every run of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


@dataclass(frozen=True)
class Events:
    periods: int = 0  # failure periods (runs of labelled rows)
    caught: int = 0  # failure periods with at least one alarmed row
    false_episodes: int = 0  # runs of alarmed rows touching no labelled row
    seconds: float = 0.0  # judged time span

    def __add__(self, other: Events) -> Events:
        return Events(
            self.periods + other.periods,
            self.caught + other.caught,
            self.false_episodes + other.false_episodes,
            self.seconds + other.seconds,
        )

    @property
    def false_episodes_per_month(self) -> float:
        return self.false_episodes / (self.seconds / (MONTH_DAYS * 86_400)) if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "failure_periods": self.periods,
            "periods_caught": self.caught,
            "false_episodes": self.false_episodes,
            "months": round(self.seconds / (MONTH_DAYS * 86_400), 3),
            "false_episodes_per_month": round(self.false_episodes_per_month, 3),
        }


def events(labels: np.ndarray, predictions: np.ndarray, seconds: np.ndarray) -> Events:
    """Event-level figures of 0/1 labels and predictions, with each row's time in seconds (the span judged).

    The span is last minus first stamp plus one median step, so N rows at a cadence cover N steps.
    """
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    seconds = np.asarray(seconds, dtype=np.float64)
    if not labels.shape == predictions.shape == seconds.shape:
        raise ValueError(f"labels have {labels.shape} rows, predictions {predictions.shape}, times {seconds.shape}")
    periods = _runs(labels)
    caught = sum(bool(predictions[a:b].any()) for a, b in periods)
    false = sum(not labels[a:b].any() for a, b in _runs(predictions))
    span = float(seconds[-1] - seconds[0] + np.median(np.diff(seconds))) if len(seconds) > 1 else 0.0
    return Events(len(periods), caught, false, span)


def pooled_events(items: list[Events]) -> Events:
    return sum(items, Events())


@dataclass(frozen=True)
class FaultFigures:
    """One fault kind's share of the misses: its episodes and labelled rows, how many of each alarmed."""

    episodes: int = 0
    caught: int = 0  # episodes with at least one alarmed row
    rows: int = 0
    alarmed: int = 0  # labelled rows alarmed (true positives)

    def __add__(self, other: FaultFigures) -> FaultFigures:
        return FaultFigures(
            self.episodes + other.episodes, self.caught + other.caught, self.rows + other.rows, self.alarmed + other.alarmed
        )

    def summary(self) -> dict:
        mar = 1 - self.alarmed / self.rows if self.rows else 0.0
        return {**asdict(self), "mar": round(mar, 4)}


def by_fault(faults: tuple[tuple[str, int, int], ...], predictions: np.ndarray, first: int = 0) -> dict[str, FaultFigures]:
    """Per fault kind, from (kind, first row, end row exclusive) episodes and the 0/1 alarm of every row.

    Only rows from `first` on are judged (the training rows before it are never faulty).
    """
    predictions = np.asarray(predictions).astype(bool)
    out: dict[str, FaultFigures] = {}
    for kind, start, end in faults:
        hit = predictions[max(start, first) : end]
        out[kind] = out.get(kind, FaultFigures()) + FaultFigures(1, int(hit.any()), len(hit), int(hit.sum()))
    return out


def pooled_by_fault(items: list[dict[str, FaultFigures]]) -> dict[str, FaultFigures]:
    out: dict[str, FaultFigures] = {}
    for item in items:
        for kind, figures in item.items():
            out[kind] = out.get(kind, FaultFigures()) + figures
    return dict(sorted(out.items()))
