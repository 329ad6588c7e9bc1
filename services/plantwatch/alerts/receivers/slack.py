"""The Slack receiver: an incoming webhook, one attachment per alert in the seed's layout.

Each attachment is coloured by severity (green once resolved) and titled with the rule and
its status; its fields are node, sensor, value (with the unit), threshold and the time it
started or resolved, and a runbook link when the rule gives one. A grouped notification
lists its alerts, the first MAX_ALERTS of them, then says how many more there are
(Slack accepts at most 50 attachments per message and folds long ones away).
"""

from __future__ import annotations

import json
from typing import Any

from plantwatch.alerts.notification import AlertView, Notification
from plantwatch.alerts.receivers.http_post import Target, post
from plantwatch.contracts.times import iso
from plantwatch.plant.model import AlertReceiver
from plantwatch.secrets import SecretMissing, Secrets

#: Alerts shown in one message; the rest are counted ("and 12 more").
MAX_ALERTS = 20
COLOURS = {"info": "#439FE0", "warning": "#ECB22E", "critical": "#E01E5A", "emergency": "#7A0019"}
RESOLVED_COLOUR = "#2EB67D"
_KIND_TITLE = {"repeat": " (still firing)", "escalation": " (escalated)"}


def _escape(text: str) -> str:
    """Slack's three control characters in message text (its mrkdwn links and mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _quantity(value: float | str | None, unit: str | None) -> str:
    if value is None or value == "":
        return "–"
    text = f"{value:g}" if isinstance(value, float | int) else str(value)
    return f"{text} {unit}" if unit else text


def _runbook(url: str | None) -> str | None:
    """The runbook as a link, only when it is an http(s) URL Slack's link syntax cannot be broken by."""
    if not url or not url.startswith(("http://", "https://")) or any(c in url for c in "<>| \n"):
        return None
    return url


def attachment(a: AlertView, kind: str) -> dict[str, Any]:
    resolved = a.status == "resolved"
    unit = a.annotations.get("unit")
    runbook = _runbook(a.annotations.get("runbook"))
    fields = [
        {"title": "Node", "value": _escape(a.node), "short": True},
        {"title": "Sensor", "value": _escape(a.sensor), "short": True},
        {"title": "Value", "value": _escape(_quantity(a.value, unit)), "short": True},
        {"title": "Threshold", "value": _escape(_quantity(a.annotations.get("threshold"), unit)), "short": True},
        {"title": "Started", "value": iso(a.starts_at), "short": True},
    ]
    if resolved and a.ends_at is not None:
        fields.append({"title": "Resolved", "value": iso(a.ends_at), "short": True})
    if a.acked_by:
        fields.append({"title": "Acknowledged by", "value": _escape(a.acked_by), "short": True})
    if runbook:
        fields.append({"title": "Runbook", "value": f"<{runbook}|Open the runbook>", "short": False})
    status = "RESOLVED" if resolved else f"{a.severity.upper()} · FIRING"
    out: dict[str, Any] = {
        "color": RESOLVED_COLOUR if resolved else COLOURS.get(a.severity, COLOURS["warning"]),
        "title": _escape(f"[{status}] {a.rule}" + ("" if resolved else _KIND_TITLE.get(kind, ""))),
        "text": _escape(a.summary),
        "fallback": _escape(f"[{status}] {a.rule} {a.node}/{a.sensor}: {a.summary}"),
        "fields": fields,
        "ts": int(a.ends_at if resolved and a.ends_at is not None else a.starts_at),
    }
    if runbook:
        out["title_link"] = runbook
    return out


def slack_payload(n: Notification, channel: str | None = None) -> dict[str, Any]:
    """The incoming-webhook JSON for `n`: a one-line `text` (what notification clients show) and the attachments."""
    firing, resolved = len(n.firing), len(n.resolved)
    counts = ", ".join(p for p in (f"{firing} firing" if firing else "", f"{resolved} resolved" if resolved else "") if p)
    group = " ".join(f"{k}={v}" for k, v in n.group_labels.items())
    shown = n.alerts[:MAX_ALERTS]
    attachments = [attachment(a, n.kind) for a in shown]
    if more := len(n.alerts) - len(shown):
        attachments.append({"color": "#BBBBBB", "text": f"and {more} more", "fallback": f"and {more} more"})
    payload: dict[str, Any] = {
        "text": _escape(f"Plantwatch {n.plant}: {counts}" + (f" ({group})" if group else "")),
        "attachments": attachments,
    }
    if channel:
        payload["channel"] = channel
    return payload


class Slack:
    """POSTs each notification to a Slack incoming webhook (the URL, a secret, from urlSecretRef)."""

    kind = "Slack"

    def __init__(self, name: str, url: str, channel: str | None = None):
        self.name = name
        self._target = Target.parse(url, f"AlertReceiver {name!r} spec.slack.urlSecretRef")
        self._channel = channel

    def send(self, notification: Notification, timeout: float) -> None:
        body = json.dumps(slack_payload(notification, self._channel), ensure_ascii=False).encode()
        post(self._target, body, {}, timeout, f"Slack receiver {self.name!r}")

    def close(self) -> None:
        """Nothing held between requests."""


def build(receiver: AlertReceiver, secrets: Secrets, broker_url: str | None) -> Slack:
    spec = receiver.spec.slack
    if spec is None:
        raise ValueError(f"AlertReceiver {receiver.name!r}: type Slack needs spec.slack")
    try:
        url = secrets.text(spec.url_secret_ref)
    except SecretMissing as exc:
        raise SecretMissing(f"AlertReceiver {receiver.name!r} (Slack): {exc}") from None
    return Slack(receiver.name, url, spec.channel)
