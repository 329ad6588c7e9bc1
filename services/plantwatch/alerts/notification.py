"""What a receiver is handed: one notification about a group of alerts, and the Receiver protocol.

The notifier (alerts/notifier.py) decides what is sent when (grouping, silences,
maintenance, inhibition, repeats, escalation) and records every attempt; a receiver only
turns a Notification into its own wire format and delivers it, raising DeliveryError
when it could not. Receivers live in alerts/receivers/, one module per kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class AlertView:
    """One alert as a person (or Alertmanager) sees it."""

    #: rule/node/sensor: the alert's identity.
    fingerprint: str
    rule: str
    node: str
    sensor: str
    #: info, warning, critical or emergency.
    severity: str
    #: "firing" or "resolved".
    status: str
    value: float | None
    summary: str
    #: When it started firing (epoch seconds), and when it resolved (None while firing).
    starts_at: float
    ends_at: float | None = None
    #: alertname (= rule), node, sensor, severity, equipment, location and the SensorNode's labels.
    labels: dict[str, str] = field(default_factory=dict)
    #: summary, runbook (a URL, when the rule gives one), unit, threshold (when known).
    annotations: dict[str, str] = field(default_factory=dict)
    #: Who acknowledged it, when it is acknowledged.
    acked_by: str | None = None


@dataclass(frozen=True)
class Notification:
    """One message to one receiver about one group of alerts."""

    #: Stable for this message across retries and restarts: receivers that accept an idempotency
    #: key get it (webhook `Idempotency-Key`, email Message-ID), so a resend after a crash between
    #: sending and recording the send is recognisably the same message.
    key: str
    receiver: str
    #: "firing" (new alerts in the group), "resolved" (only resolutions), "repeat" (still firing
    #: after the repeat interval) or "escalation" (an escalation tier hears of it).
    kind: str
    group_key: str
    #: The labels the group was formed by (the receiver's grouping.by) with their values.
    group_labels: dict[str, str]
    alerts: tuple[AlertView, ...]
    #: When the notifier decided to send it (epoch seconds).
    created_at: float
    #: The plant (namespace) the alerts belong to.
    plant: str = "default"

    @property
    def firing(self) -> tuple[AlertView, ...]:
        return tuple(a for a in self.alerts if a.status == "firing")

    @property
    def resolved(self) -> tuple[AlertView, ...]:
        return tuple(a for a in self.alerts if a.status == "resolved")


class DeliveryError(Exception):
    """A notification that did not reach its receiver; `retryable` False when trying again cannot help
    (a 4xx other than 408/429, an address the server refuses, bad credentials)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class Receiver(Protocol):
    """Delivers notifications to one place; built from an AlertReceiver by alerts.receivers.build."""

    #: The AlertReceiver's name (or `console`).
    name: str
    #: Slack, Webhook, Email, MQTT, Alertmanager or Console.
    kind: str

    def send(self, notification: Notification, timeout: float) -> None:
        """Deliver it within `timeout` seconds, or raise DeliveryError."""

    def close(self) -> None:
        """Release connections."""
