"""The gateway's report on each SensorNode: `Online`, `lastSeen`, `readingsPerMinute`, and its data quality.

The operator owns `Ready`; the gateway, which sees the data, owns `Online` (field
manager `plantwatch-gateway`, server-side apply on the status, so neither overwrites
the other). The condition says why (ingest/status_topics.py): `Reporting` (readings within
the heartbeat), `Birth` (announced `online`, or a Sparkplug birth, and no reading yet),
`LastWill` (`offline` on its status topic, or a Sparkplug NDEATH), `DeviceDeath` (a
Sparkplug DDEATH), `Silent`, `NeverSeen`.

Beside it the gateway owns `InRange`, `Sequential` and `ClockInSync` and `status.quality`, from
the pipeline's sliding-window figures (ingest/quality.py). One write carries them all, for a
node whose conditions or figure buckets changed (quality.change_key), else every `refresh_s`
for the rate. Writes are paced by a token bucket (`writes_per_s`): a node whose condition flipped
goes first, then changed figures, then the oldest refreshes; what an interval's budget leaves is
judged again and written on without a pause, so 1,000 nodes changing at once reach the API server at
that rate (bench/node_status.py measures it).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, NamedTuple

from plantwatch import metrics
from plantwatch.contracts.conditions import condition
from plantwatch.contracts.names import API_VERSION, GATEWAY_MANAGER, SENSOR_NODE
from plantwatch.contracts.times import iso
from plantwatch.ingest.periodic import PeriodicReport, TokenBucket
from plantwatch.ingest.quality import Figures, Thresholds, change_key, judge
from plantwatch.ingest.status_topics import Presence

log = logging.getLogger(__name__)


def online_condition(presence: Presence, previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The Online condition (pure); lastTransitionTime moves only when the status flips."""
    return condition("Online", "True" if presence.online else "False", presence.reason, presence.message, previous, None, iso(int(now)))


def node_conditions(
    presence: Presence, figures: Figures | None, thresholds: Thresholds, previous: dict[str, dict[str, Any]], now: float
) -> tuple[list[dict[str, Any]], tuple]:
    """A node's gateway-owned conditions (pure), and the key whose change makes them worth writing."""
    online = online_condition(presence, previous.get("Online"), now)
    verdicts = judge(figures, thresholds) if figures is not None else ()
    quality = [condition(v.type, v.status, v.reason, v.message, previous.get(v.type), None, iso(int(now))) for v in verdicts]
    key = ((online["status"], online["reason"]), *(change_key(figures, verdicts) if figures is not None else ()))
    return [online, *quality], key


class _Reported(NamedTuple):
    conditions: dict[str, dict[str, Any]]
    at: float
    readings: int
    key: tuple


class NodeStatusReporter(PeriodicReport):
    """Applies each node's Online and quality conditions from the pipeline's view, on its own thread, at most `writes_per_s`."""

    def __init__(
        self,
        pipeline,
        namespace: str,
        interval_s: float = 5.0,
        refresh_s: float = 60.0,
        thresholds: Thresholds | None = None,
        writes_per_s: float = 20.0,
    ):
        super().__init__("node-status", interval_s, log)
        self._pipeline = pipeline
        self._namespace = namespace
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._thresholds = thresholds or Thresholds()
        self._bucket = TokenBucket(writes_per_s, max(1.0, writes_per_s), time.monotonic())
        self._reported: dict[str, _Reported] = {}

    def due(self, now: float, figures: dict[str, Figures]) -> list[tuple[str, list[dict[str, Any]], tuple]]:
        """The nodes whose status should be written now, most urgent first, with their conditions (no I/O)."""
        ranked = []
        for node, presence in self._pipeline.presence(now).items():
            previous = self._reported.get(node)
            conditions, key = node_conditions(presence, figures.get(node), self._thresholds, previous.conditions if previous else {}, now)
            if previous is None or key[:2] != previous.key[:2]:  # a new Online reason, a condition flipped
                urgency = 0
            elif key != previous.key:
                urgency = 1
            elif now - previous.at >= self._refresh_s:
                urgency = 2
            else:
                continue
            ranked.append((urgency, previous.at if previous else -math.inf, node, conditions, key))
        ranked.sort(key=lambda r: r[:3])
        return [(node, conditions, key) for _, _, node, conditions, key in ranked]

    def report(self, now: float) -> None:
        # Not at the top: the Kubernetes client takes ~0.4 s to import, which a gateway outside a
        # cluster (no --status-namespace, `plantwatch up`, the tests) need not pay.
        from plantwatch.kube import apply_status

        while self._write_due(apply_status, now):
            # Judged again (the most urgent first) and written on at once: pausing here for the next round
            # would leave the bucket's tokens of that interval unused, and 1,000 flips at half the rate.
            now = time.time()

    def _write_due(self, apply_status, now: float) -> bool:
        """Writes what is due, the most urgent first, for one interval at most; True when some is left."""
        counts = self._pipeline.readings_by_node
        figures = self._pipeline.quality(now)
        due = self.due(now, figures)
        metrics.NODE_STATUS_PENDING.set(len(due))
        deadline = time.monotonic() + self._interval_s
        for node, conditions, key in due:
            wait = self._bucket.wait(time.monotonic())
            if wait and time.monotonic() + wait > deadline:
                # no token before the interval ends (a rate below one per interval): wait it out, not spin
                return not self.pause(max(0.0, deadline - time.monotonic()))
            if wait and self.pause(wait):
                return False  # stopping
            self._bucket.take(time.monotonic())
            previous = self._reported.get(node)
            last_seen = self._pipeline.last_seen.get(node)
            status: dict[str, Any] = {"conditions": conditions}
            if last_seen is not None:
                status["lastSeen"] = iso(int(last_seen))
            if previous is not None and now > previous.at:
                status["readingsPerMinute"] = f"{(counts[node] - previous.readings) / (now - previous.at) * 60:.1f}"
            if node in figures:
                status["quality"] = figures[node].status()
            body = {"apiVersion": API_VERSION, "kind": SENSOR_NODE, "metadata": {"name": node, "namespace": self._namespace}}
            apply_status(body, status, GATEWAY_MANAGER)
            metrics.NODE_STATUS_WRITES.inc()
            metrics.NODE_STATUS_PENDING.dec()
            self.written(node, conditions, key, now)
        return False

    def written(self, node: str, conditions: list[dict[str, Any]], key: tuple, now: float) -> None:
        """Remember what a write said: the next ones are judged against it."""
        self._reported[node] = _Reported({c["type"]: c for c in conditions}, now, self._pipeline.readings_by_node[node], key)
