"""The values that flow through the pipeline: readings in, alert events out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reading:
    """One accepted value of one sensor of one node at one time (epoch seconds, UTC)."""

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
