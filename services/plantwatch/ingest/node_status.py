"""The gateway's report on each SensorNode: `Online`, `lastSeen`, `readingsPerMinute`.

The operator owns `Ready`; the gateway, which sees the data, owns `Online` (field
manager `plantwatch-gateway`, server-side apply on the status, so neither overwrites
the other). The condition says why (ingest/status_topics.py): `Reporting` (readings within
the heartbeat), `Birth` (announced `online`, or a Sparkplug birth, and no reading yet),
`LastWill` (`offline` on its status topic, or a Sparkplug NDEATH), `DeviceDeath` (a
Sparkplug DDEATH), `Silent`, `NeverSeen`. Written when the status or the reason changes,
and every `refresh_s` for the rate.
"""

from __future__ import annotations

import logging
from typing import Any

from plantwatch.contracts.conditions import condition
from plantwatch.contracts.names import API_VERSION, GATEWAY_MANAGER, SENSOR_NODE
from plantwatch.contracts.times import iso
from plantwatch.ingest.periodic import PeriodicReport
from plantwatch.ingest.status_topics import Presence

log = logging.getLogger(__name__)


def online_condition(presence: Presence, previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The Online condition (pure); lastTransitionTime moves only when the status flips."""
    return condition("Online", "True" if presence.online else "False", presence.reason, presence.message, previous, None, iso(int(now)))


class NodeStatusReporter(PeriodicReport):
    """Applies each node's Online condition from the pipeline's view, on its own thread."""

    def __init__(self, pipeline, namespace: str, interval_s: float = 5.0, refresh_s: float = 60.0):
        super().__init__("node-status", interval_s, log)
        self._pipeline = pipeline
        self._namespace = namespace
        self._refresh_s = refresh_s
        self._reported: dict[str, tuple[dict[str, Any], float, int]] = {}  # node → (condition, when, readings then)

    def report(self, now: float) -> None:
        # Not at the top: the Kubernetes client takes ~0.4 s to import, which a gateway outside a
        # cluster (no --status-namespace, `plantwatch up`, the tests) need not pay.
        from plantwatch.kube import apply_status

        counts = self._pipeline.readings_by_node
        for node, presence in self._pipeline.presence(now).items():
            previous = self._reported.get(node)
            last_seen = self._pipeline.last_seen.get(node)
            condition = online_condition(presence, previous[0] if previous else None, now)
            # A new reason is news too (Silent → LastWill: the broker now knows the connection is gone).
            flipped = previous is None or (previous[0]["status"], previous[0]["reason"]) != (condition["status"], condition["reason"])
            if not flipped and now - previous[1] < self._refresh_s:
                continue
            status: dict[str, Any] = {"conditions": [condition]}
            if last_seen is not None:
                status["lastSeen"] = iso(int(last_seen))
            if previous is not None and now > previous[1]:
                status["readingsPerMinute"] = f"{(counts[node] - previous[2]) / (now - previous[1]) * 60:.1f}"
            body = {"apiVersion": API_VERSION, "kind": SENSOR_NODE, "metadata": {"name": node, "namespace": self._namespace}}
            apply_status(body, status, GATEWAY_MANAGER)
            self._reported[node] = (condition, now, counts[node])
