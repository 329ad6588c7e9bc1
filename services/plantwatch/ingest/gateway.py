"""The ingestion pipeline: MQTT messages → decode/validate → store → rules → alerts.

`Pipeline` is the orchestration of the pure parts with the store and the alert
router; `IngestService` runs it on its own thread behind an MQTT subscriber. Both
runtimes use them: `plantwatch up` (one process) and `plantwatch serve ingest`
(the gateway Deployment the operator renders).
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections import Counter
from typing import Callable

import orjson

from plantwatch import metrics
from plantwatch.alerts.router import AlertRouter
from plantwatch.ingest.validate import CompiledNode, Policy, Rejection, check_message
from plantwatch.mqtt.client import Subscriber
from plantwatch.plant.load import Plant
from plantwatch.plant.model import duration_seconds
from plantwatch.readings import AlertEvent, Reading
from plantwatch.rules.engine import RuleEngine
from plantwatch.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX = "plantwatch/dead-letter"


def dead_letter(topic: str, payload: bytes, node: str | None, rejections: list[Rejection], now: float) -> bytes:
    """The DLQ message: the original payload, verbatim, with every reason."""
    try:
        body, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(payload).decode(), "base64"
    return orjson.dumps({
        "reason": rejections[0].reason,
        "rejections": [{"reason": r.reason, "detail": r.detail, "field": r.field} for r in rejections],
        "topic": topic,
        "node": node,
        "received_at": now,
        "payload": body,
        "payload_encoding": encoding,
    })


class Pipeline:
    """Processes batches of messages; owns per-series state, so one thread calls it."""

    def __init__(self, plant: Plant, store: SqliteStore, router: AlertRouter,
                 publish: Callable[[str, bytes], None] | None = None, policy: Policy = Policy(),
                 now: float | None = None):
        self.plant = plant
        self.store = store
        self.router = router
        self.policy = policy
        self._publish = publish
        self._nodes = {n.spec.payload.topic: CompiledNode.of(n) for n in plant.nodes}
        self._silence = {n.name: duration_seconds(n.spec.heartbeat.interval) * n.spec.heartbeat.missed_beats for n in plant.nodes}
        self.engine = RuleEngine(plant, time.time() if now is None else now)
        self.last_seen: dict[str, float] = {}
        self.messages = 0
        self.readings_stored = 0
        self.rejected: Counter[str] = Counter()

    @property
    def subscriptions(self) -> list[str]:
        """One `<first level>/#` filter per top-level topic the nodes use.

        Wider than the node topics on purpose: a message on an unknown topic under
        the plant's prefixes is a node misconfiguration worth a dead letter, not silence.
        Filters never overlap, so the broker delivers each message once.
        """
        return sorted({t.split("/", 1)[0] + "/#" for t in self._nodes})

    def process(self, batch: list[tuple[str, bytes]], now: float) -> None:
        readings: list[Reading] = []
        alerts: list[AlertEvent] = []
        dead: list[tuple[float, str, str, str, bytes]] = []
        letters: list[tuple[str, bytes]] = []
        for topic, payload in batch:
            if topic.startswith(DEAD_LETTER_PREFIX):
                continue  # our own dead letters, seen when a node topic shares their top level
            node = self._nodes.get(topic)
            if node is None:
                accepted, rejections = [], [Rejection("unknown_node", f"no SensorNode publishes to topic {topic!r}")]
            else:
                accepted, rejections = check_message(node, payload, now, self.policy)
            for r in accepted:
                alerts.extend(self.engine.on_reading(r))
                if r.ts > self.last_seen.get(r.node, 0.0):
                    self.last_seen[r.node] = r.ts
            readings.extend(accepted)
            result = "accepted" if not rejections else ("partial" if accepted else "rejected")
            metrics.MESSAGES.labels(result).inc()
            if rejections:
                for rej in rejections:
                    self.rejected[rej.reason] += 1
                    metrics.REJECTED.labels(rej.reason).inc()
                detail = "; ".join(r.detail for r in rejections)
                dead.append((now, topic, rejections[0].reason, detail, payload))
                letters.append((f"{DEAD_LETTER_PREFIX}/{node.name if node else 'unknown'}",
                                dead_letter(topic, payload, node.name if node else None, rejections, now)))
        self.messages += len(batch)
        stored = self.store.write(readings, alerts, dead)
        self.readings_stored += stored
        metrics.READINGS.inc(stored)
        metrics.BATCH.observe(len(batch))
        self._route(alerts, now)
        if self._publish:
            for topic, body in letters:
                self._publish(topic, body)

    def tick(self, now: float) -> None:
        """Clock-driven work: absence alerts, repeats, node online state."""
        events = self.engine.tick(now)
        if events:
            self.store.write(alerts=events)
            self._route(events, now)
        self.router.repeat_due(now)
        for node, silence in self._silence.items():
            metrics.NODE_ONLINE.labels(node).set(1 if now - self.last_seen.get(node, -1e18) <= silence else 0)

    def online(self, now: float) -> dict[str, bool]:
        return {node: now - self.last_seen.get(node, -1e18) <= s for node, s in self._silence.items()}

    def _route(self, events: list[AlertEvent], now: float) -> None:
        for e in events:
            metrics.ALERTS.labels(e.rule, e.state, e.severity).inc()
        self.router.route(events, now)


class IngestService:
    """Runs a Pipeline on its own thread, fed by an MQTT subscription to every node topic."""

    def __init__(self, pipeline: Pipeline, broker_url: str, max_batch: int = 5000, tick_s: float = 0.5):
        self.pipeline = pipeline
        self.subscriber = Subscriber(broker_url, pipeline.subscriptions)
        self._max_batch = max_batch
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self.error: BaseException | None = None

    def start(self, connect_timeout: float | None = 10.0) -> None:
        self.subscriber.start(connect_timeout)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ready(self) -> bool:
        return self.alive and self.subscriber.connected

    def _run(self) -> None:
        q = self.subscriber.messages
        next_tick = 0.0
        try:
            while True:
                batch = self._drain(q)
                now = time.time()
                if batch:
                    self.pipeline.process(batch, now)
                if now >= next_tick:
                    self.pipeline.tick(now)
                    next_tick = now + self._tick_s
                metrics.QUEUE.set(q.qsize())
                if not batch and self._stop.is_set():
                    return
        except BaseException as exc:  # recorded for /healthz and the exit code; the thread must not die silently
            log.exception("pipeline stopped")
            self.error = exc

    def _drain(self, q: queue.Queue[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        try:
            batch = [q.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < self._max_batch:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        return batch

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop receiving, process what was received, then stop the thread."""
        self.subscriber.stop()
        self._stop.set()
        self._thread.join(drain_timeout)
