"""The Alertmanager receiver: alerts POSTed to Alertmanager's API v2, which then groups, silences and routes them.

Alertmanager's contract is Prometheus's: a firing alert carries an `endsAt` a few
resend intervals ahead and is posted again every `resendInterval` while it fires; an
alert not heard of by its `endsAt` is resolved by Alertmanager itself (so a Plantwatch
that dies does not leave alerts firing forever). A resolved alert is posted once with
its resolve time as `endsAt`. `payload` is pure; `AlertmanagerReceiver.send` is the I/O.
"""

from __future__ import annotations

import re
import time

import orjson

from plantwatch.alerts.notification import AlertView, Notification
from plantwatch.alerts.receivers.http_post import Target, post
from plantwatch.contracts.times import iso
from plantwatch.plant.model import AlertReceiver, duration_seconds
from plantwatch.plant.specs import AlertReceiverAlertmanager
from plantwatch.secrets import Secrets

#: Prometheus's choice: a firing alert stays valid for four resend intervals, so three lost posts in a row are forgiven.
RESEND_FACTOR = 4
#: Annotations renamed to the names Prometheus rules and Alertmanager templates use.
_ANNOTATION_NAMES = {"runbook": "runbook_url"}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A label or annotation key as Alertmanager accepts it ([a-zA-Z_][a-zA-Z0-9_]*), so one SensorNode label cannot get
    a whole post refused: `app.kubernetes.io/part-of` → `app_kubernetes_io_part_of`."""
    name = _INVALID.sub("_", key)
    return "_" + name if not name or name[0].isdigit() else name


def _clean(pairs: dict[str, str]) -> dict[str, str]:
    # An empty value means "no such label" to Alertmanager, and it would make two alerts differ by nothing visible.
    return {label_name(k): str(v) for k, v in pairs.items() if str(v) != ""}


def alert(a: AlertView, now: float, resend_interval_s: float) -> dict[str, object]:
    """One alert of the API v2 body (postableAlert)."""
    labels = _clean(a.labels) | {"alertname": a.rule, "node": a.node, "sensor": a.sensor, "severity": a.severity}
    annotations = _clean({_ANNOTATION_NAMES.get(k, k): v for k, v in a.annotations.items()})
    if a.summary:
        annotations["summary"] = a.summary
    if a.value is not None:
        annotations["value"] = f"{a.value:g}"
    if a.acked_by:
        annotations["acknowledged_by"] = a.acked_by
    ends_at = (a.ends_at if a.ends_at is not None else now) if a.status == "resolved" else now + RESEND_FACTOR * resend_interval_s
    return {"labels": labels, "annotations": annotations, "startsAt": iso(a.starts_at), "endsAt": iso(ends_at)}


def payload(n: Notification, now: float, resend_interval_s: float) -> list[dict[str, object]]:
    """The body of POST /api/v2/alerts for a notification's alerts, as of `now`."""
    return [alert(a, now, resend_interval_s) for a in n.alerts]


class AlertmanagerReceiver:
    """Posts every notification's alerts to one Alertmanager; the caller re-posts firing ones every `resend_interval_s`."""

    kind = "Alertmanager"

    def __init__(self, name: str, spec: AlertReceiverAlertmanager):
        self.name = name
        self.url = spec.url.rstrip("/") + "/api/v2/alerts"
        self._target = Target.parse(self.url, f"AlertReceiver {name!r} spec.alertmanager.url")
        self.resend_interval_s = duration_seconds(spec.resend_interval or "1m")

    def send(self, notification: Notification, timeout: float) -> None:
        body = orjson.dumps(payload(notification, time.time(), self.resend_interval_s))
        post(self._target, body, {}, timeout, f"alertmanager receiver {self.name}")

    def close(self) -> None:
        """Nothing held between requests."""


def build(receiver: AlertReceiver, secrets: Secrets, broker_url: str | None) -> AlertmanagerReceiver:
    spec = receiver.spec.alertmanager
    if spec is None:
        raise ValueError(f"AlertReceiver {receiver.name!r}: type Alertmanager needs spec.alertmanager")
    return AlertmanagerReceiver(receiver.name, spec)
