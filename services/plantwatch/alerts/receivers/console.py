"""The built-in `console` receiver: one line per alert of a notification, on the gateway's output.

The line is the one `plantwatch up` has always printed (the demo and tests read it):
`2024-05-01T12:00:00Z ALERT CRITICAL  overheat press-1/temperature: ...`, RESOLVED for a
resolution, ` (repeat)` or ` (escalation)` after a message that is not the first.
"""

from __future__ import annotations

import sys
from typing import TextIO

from plantwatch.alerts.notification import AlertView, DeliveryError, Notification
from plantwatch.contracts.times import iso

#: Notification kinds that say so after the line.
_SUFFIX = {"repeat": " (repeat)", "escalation": " (escalation)"}


def console_line(alert: AlertView, kind: str) -> str:
    """The alert's line: when it started (or resolved), its severity (or RESOLVED), rule, node/sensor, summary."""
    resolved = alert.status == "resolved"
    ts = alert.ends_at if resolved and alert.ends_at is not None else alert.starts_at
    marker = "RESOLVED" if resolved else alert.severity.upper()
    return f"{iso(ts)} ALERT {marker:9} {alert.rule} {alert.node}/{alert.sensor}: {alert.summary}" + _SUFFIX.get(kind, "")


class Console:
    """Writes each notification's alerts to `out`, one line each."""

    kind = "Console"

    def __init__(self, name: str = "console", out: TextIO = sys.stdout):
        self.name = name
        self._out = out

    def send(self, notification: Notification, timeout: float) -> None:
        text = "".join(console_line(a, notification.kind) + "\n" for a in notification.alerts)
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError) as exc:  # a closed pipe or file
            raise DeliveryError(f"console receiver: cannot write to the output: {exc}", retryable=False) from None

    def close(self) -> None:
        """Nothing to release: the output belongs to the caller."""
