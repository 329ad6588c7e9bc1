"""The Webhook receiver: a JSON POST, signed with HMAC-SHA256 over a timestamp and the body.

Two bodies: `plantwatch` (this module's `plantwatch_body`, also what the MQTT receiver
publishes) and `alertmanager` (Alertmanager's webhook payload, version 4, so a consumer
written for Alertmanager works unchanged). Every request carries `Idempotency-Key`, the
notification's key, the same on every retry and after a restart; with hmacSecretRef,
`X-Plantwatch-Timestamp` (unix seconds) and `X-Plantwatch-Signature: v1=<hex>` of
HMAC-SHA256(key, f"{timestamp}." + body). A consumer checks them with `verify_signature`,
which refuses an old timestamp, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from plantwatch.alerts.notification import AlertView, Notification
from plantwatch.alerts.receivers.http_post import Target, post
from plantwatch.contracts.times import iso
from plantwatch.plant.model import AlertReceiver
from plantwatch.secrets import SecretMissing, Secrets

#: Version of the `plantwatch` body; a consumer refuses one it does not know.
BODY_VERSION = "1"
#: Go's zero time, which Alertmanager writes as the endsAt of a firing alert.
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-Plantwatch-Timestamp", "X-Plantwatch-Signature"
#: How old (or how far ahead) a signed request's timestamp may be by default.
TOLERANCE_S = 300


def plantwatch_body(n: Notification) -> dict[str, Any]:
    """The notification as Plantwatch writes it: `version`, `key` (dedupe on it), `receiver`, `kind` (firing,
    resolved, repeat, escalation), `groupKey`, `groupLabels`, `plant`, `createdAt` and `alerts`, each with
    `fingerprint`, `rule`, `node`, `sensor`, `severity`, `status`, `value`, `summary`, `startsAt`, `endsAt`
    (RFC 3339 UTC; null while firing), `labels`, `annotations` and `ackedBy`."""
    return {
        "version": BODY_VERSION,
        "key": n.key,
        "receiver": n.receiver,
        "kind": n.kind,
        "groupKey": n.group_key,
        "groupLabels": n.group_labels,
        "plant": n.plant,
        "createdAt": iso(n.created_at),
        "alerts": [
            {
                "fingerprint": a.fingerprint,
                "rule": a.rule,
                "node": a.node,
                "sensor": a.sensor,
                "severity": a.severity,
                "status": a.status,
                "value": a.value,
                "summary": a.summary,
                "startsAt": iso(a.starts_at),
                "endsAt": None if a.ends_at is None else iso(a.ends_at),
                "labels": a.labels,
                "annotations": a.annotations,
                "ackedBy": a.acked_by,
            }
            for a in n.alerts
        ],
    }


def label_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (Prometheus' FNV-1a 64 over the sorted names and values,
    each followed by 0xff), as 16 hex digits: the same alert gets the same fingerprint from both."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _common(maps: Iterable[dict[str, str]]) -> dict[str, str]:
    maps = list(maps)
    if not maps:
        return {}
    return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}


def _am_labels(a: AlertView) -> dict[str, str]:
    return {"alertname": a.rule, "node": a.node, "sensor": a.sensor, "severity": a.severity, **a.labels}


def alertmanager_body(n: Notification, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, as Alertmanager itself would send it for this group."""
    labels = [_am_labels(a) for a in n.alerts]
    return {
        "receiver": n.receiver,
        "status": "firing" if n.firing else "resolved",
        "alerts": [
            {
                "status": a.status,
                "labels": ls,
                "annotations": a.annotations,
                "startsAt": iso(a.starts_at),
                "endsAt": _GO_ZERO_TIME if a.ends_at is None else iso(a.ends_at),
                "generatorURL": "",
                "fingerprint": label_fingerprint(ls),
            }
            for a, ls in zip(n.alerts, labels, strict=True)
        ],
        "groupLabels": n.group_labels,
        "commonLabels": _common(labels),
        "commonAnnotations": _common(a.annotations for a in n.alerts),
        "externalURL": external_url,
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Plantwatch-Signature` value: `v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}`."""
    return "v1=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    key: bytes | str, timestamp: str | int, body: bytes, header: str, now: float, tolerance_s: float = TOLERANCE_S
) -> bool:
    """For consumers: True when `header` (`v1=<hex>`, several comma-separated while keys rotate) signs exactly
    `body` at `timestamp`, and `timestamp` is within `tolerance_s` of `now` (a replay later is refused)."""
    key = key.encode() if isinstance(key, str) else key
    text = str(timestamp).strip()
    if not text.isdigit() or abs(now - int(text)) > tolerance_s:
        return False
    expected = signature(key, int(text), body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))


class Webhook:
    """POSTs each notification as JSON to the URL from urlSecretRef, signed when hmacSecretRef is set."""

    kind = "Webhook"

    def __init__(
        self, name: str, url: str, format: str = "plantwatch", hmac_key: bytes | None = None, now: Callable[[], float] = time.time
    ):
        if format not in ("plantwatch", "alertmanager"):
            raise ValueError(f"AlertReceiver {name!r} spec.webhook.format: {format!r}; accepted: plantwatch, alertmanager")
        self.name = name
        self._target = Target.parse(url, f"AlertReceiver {name!r} spec.webhook.urlSecretRef")
        self._format = format
        self._key = hmac_key
        self._now = now

    def request(self, n: Notification) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the POST for `n` (signed as of now)."""
        body = encode(plantwatch_body(n) if self._format == "plantwatch" else alertmanager_body(n))
        headers = {"Idempotency-Key": n.key}
        if self._key is not None:
            ts = int(self._now())
            headers |= {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(self._key, ts, body)}
        return body, headers

    def send(self, notification: Notification, timeout: float) -> None:
        body, headers = self.request(notification)
        post(self._target, body, headers, timeout, f"webhook receiver {self.name!r}")

    def close(self) -> None:
        """Nothing held between requests."""


def build(receiver: AlertReceiver, secrets: Secrets, broker_url: str | None) -> Webhook:
    spec = receiver.spec.webhook
    if spec is None:
        raise ValueError(f"AlertReceiver {receiver.name!r}: type Webhook needs spec.webhook")
    try:
        url = secrets.text(spec.url_secret_ref)
        key = secrets.get(spec.hmac_secret_ref).strip() if spec.hmac_secret_ref else None
    except SecretMissing as exc:
        raise SecretMissing(f"AlertReceiver {receiver.name!r} (Webhook): {exc}") from None
    if key == b"":
        raise ValueError(f"AlertReceiver {receiver.name!r} spec.webhook.hmacSecretRef: the signing key is empty")
    return Webhook(receiver.name, url, spec.format or "plantwatch", key)
