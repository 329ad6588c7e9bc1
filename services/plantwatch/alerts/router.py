"""Alert routing: which alert events reach people, and when again.

Keeps the set of active alerts, suppresses notifications during a node's
maintenance windows, re-sends still-firing alerts every rule's repeatInterval and
hands notifications to the receivers. Receivers in this version: `console`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from plantwatch.contracts.times import iso, parse_timestamp
from plantwatch.plant.load import Plant
from plantwatch.plant.model import duration_seconds
from plantwatch.readings import AlertEvent


@dataclass
class _Active:
    event: AlertEvent
    last_sent: float


class AlertRouter:
    """Tracks active alerts and notifies receivers."""

    def __init__(self, plant: Plant, out: TextIO = sys.stdout, notify: Callable[[AlertEvent, str], None] | None = None):
        self._out = out
        self._notify = notify
        self._repeat = {r.name: duration_seconds(r.spec.repeat_interval) for r in plant.rules}
        self._windows = {
            n.name: [(parse_timestamp(w.start), parse_timestamp(w.end)) for w in n.spec.maintenance_windows] for n in plant.nodes
        }
        self.active: dict[str, _Active] = {}
        self.fired = 0
        self.suppressed = 0

    def in_maintenance(self, node: str, ts: float) -> bool:
        return any(start <= ts < end for start, end in self._windows.get(node, ()))

    def route(self, events: list[AlertEvent], now: float) -> None:
        for e in events:
            if e.state == "firing":
                if e.fingerprint not in self.active:
                    self.fired += 1
                self.active[e.fingerprint] = _Active(e, now)
            else:
                self.active.pop(e.fingerprint, None)
            self._send(e, "new" if e.state == "firing" else "resolved")

    def carry(self, event: AlertEvent, now: float) -> None:
        """Take over an alert still firing from an earlier run: it repeats on schedule and resolves once, unannounced now."""
        self.active[event.fingerprint] = _Active(event, now)

    def repeat_due(self, now: float) -> None:
        """Send again the alerts still firing after their rule's repeatInterval."""
        for a in self.active.values():
            if now - a.last_sent >= self._repeat.get(a.event.rule, 3600.0):
                a.last_sent = now
                self._send(a.event, "repeat")

    def _send(self, e: AlertEvent, why: str) -> None:
        if self.in_maintenance(e.node, e.ts):
            self.suppressed += 1
            return
        if self._notify:
            self._notify(e, why)
        marker = "RESOLVED" if e.state == "resolved" else e.severity.upper()
        print(
            f"{iso(e.ts)} ALERT {marker:9} {e.rule} {e.node}/{e.sensor}: {e.summary}" + (" (repeat)" if why == "repeat" else ""),
            file=self._out,
            flush=True,
        )
