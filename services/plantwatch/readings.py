"""The values that flow through the pipeline: readings in, alert events out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Reading(NamedTuple):
    """One accepted value of one sensor of one node at one time (epoch seconds, UTC).

    A named tuple, not a frozen dataclass: the gateway makes four of these per message
    and a tuple is built about three times faster; its field order is the column order
    of the store's INSERT, so a batch goes to SQLite without being copied.
    """

    node: str
    sensor: str
    type: str
    value: float
    ts: float
    unit: str = ""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A change in an alert's life: it started firing, changed level, or resolved."""

    #: rule/node/sensor: the alert's identity (one alert per series per rule).
    fingerprint: str
    rule: str
    node: str
    sensor: str
    #: "firing" or "resolved".
    state: str
    #: warning, critical, emergency (threshold levels) or the rule's severity.
    severity: str
    value: float | None
    ts: float
    summary: str
    #: The unit of `value` (the sensor's; `s` for an absence, whose value is the silence).
    unit: str = ""
    #: The limit crossed: the threshold level (on a resolve, the value it went back past), maxPerMinute,
    #: the anomaly score threshold, or absence.after in seconds. None when not known.
    threshold: float | None = None
    #: When the condition started to hold (epoch seconds; for an absence, the last reading), so the
    #: alert has been so for ts - since; the same across level changes. None when not known.
    since: float | None = None
