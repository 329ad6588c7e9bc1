"""`plantwatch serve broker-exporter`: Mosquitto's `$SYS` figures and the plant's traffic as Prometheus metrics.

One MQTT connection (mqtt.subscriber, clean session) subscribes to `$SYS/broker/#` and to the
configured topic patterns; sys_topics turns each `$SYS` message into state, and each plant
message is counted under the pattern it matched, its payload decoded with the plant's own
decoders (ingest.formats) for the latency from its timestamp to its arrival here. /metrics
serves this process's registry only; /healthz says the process runs (a broker that is down
is `plantwatch_broker_up 0`, not an unhealthy exporter, so Prometheus keeps scraping it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from plantwatch.contracts.times import parse_timestamp
from plantwatch.health import Handler, HealthServer
from plantwatch.ingest.codecs import DecodeError
from plantwatch.ingest.formats import decoder
from plantwatch.monitoring.sys_topics import (
    LOAD_SERIES,
    SYS_PREFIX,
    SYS_SERIES,
    SYS_SUBSCRIPTION,
    BrokerStats,
    SysValueError,
    TopicPattern,
    TopicPatterns,
)
from plantwatch.mqtt import wire
from plantwatch.mqtt.endpoint import Endpoint
from plantwatch.mqtt.subscriber import BatchSubscriber

log = logging.getLogger(__name__)

NAMESPACE = "plantwatch_broker"
#: Seconds from a payload's timestamp to its arrival here: a sensor node's send delay, the broker's queueing, clock skew.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _SysCollector(Collector):
    """The broker's `$SYS` figures as they were last reported, read at each scrape."""

    def __init__(self, exporter: BrokerExporter):
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        values, version = self._exporter.snapshot()
        yield GaugeMetricFamily(f"{NAMESPACE}_up", "1 while the exporter is connected to the broker, else 0.", self._exporter.connected)
        for series in SYS_SERIES.values():
            if (series.name, "") in values:
                family = CounterMetricFamily if series.kind == "counter" else GaugeMetricFamily
                yield family(f"{NAMESPACE}_{series.name}", series.help, values[(series.name, "")])
        for series in LOAD_SERIES.values():
            found = [(interval, v) for (name, interval), v in values.items() if name == series.name]
            if found:
                family = GaugeMetricFamily(f"{NAMESPACE}_{series.name}", series.help, labels=["interval"])
                for interval, value in sorted(found):
                    family.add_metric([interval], value)
                yield family
        if version is not None:
            yield InfoMetricFamily(f"{NAMESPACE}_build", "The broker's version, as it reports it.", {"version": version})


class BrokerExporter:
    """The exporter's state and metrics, fed by `handle(batch)`; the registry is its own (several may run in one process)."""

    def __init__(self, endpoint: str | Endpoint, patterns: list[TopicPattern], clock: Callable[[], float] = time.time):
        self.registry = CollectorRegistry()
        self.stats = BrokerStats()
        self._lock = threading.Lock()
        self._patterns = TopicPatterns(patterns)
        self._clock = clock
        self.subscriber = BatchSubscriber(endpoint, [SYS_SUBSCRIPTION, *dict.fromkeys(p.pattern for p in patterns)])
        self._decoders = {p.format: decoder(p.format) for p in patterns}
        messages = Counter(f"{NAMESPACE}_topic_messages", "Messages received on a topic pattern.", ["pattern"], registry=self.registry)
        size = Counter(
            f"{NAMESPACE}_topic_payload_bytes", "Payload bytes received on a topic pattern.", ["pattern"], registry=self.registry
        )
        latency = Histogram(
            f"{NAMESPACE}_topic_latency_seconds",
            "Seconds from a message's payload timestamp to its arrival at the exporter, by topic pattern (clock skew included).",
            ["pattern"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._payload_errors = Counter(
            f"{NAMESPACE}_topic_payload_errors",
            "Messages on a topic pattern whose payload or timestamp could not be read, by the decoder's reason code.",
            ["pattern", "reason"],
            registry=self.registry,
        )
        self._sys_errors = Counter(
            f"{NAMESPACE}_sys_value_errors",
            "$SYS messages of an exported topic whose value could not be read.",
            registry=self.registry,
        )
        # A child per pattern made now: every pattern's series exists (at 0) from the first scrape.
        self._children = {p.pattern: (messages.labels(p.pattern), size.labels(p.pattern), latency.labels(p.pattern)) for p in patterns}
        self.registry.register(_SysCollector(self))

    @property
    def connected(self) -> int:
        return int(self.subscriber.connected)

    def snapshot(self) -> tuple[dict[tuple[str, str], float], str | None]:
        with self._lock:
            return dict(self.stats.values), self.stats.version

    def handle(self, batch: list[wire.Publish]) -> None:
        now = self._clock()
        for message in batch:
            if message.topic.startswith(SYS_PREFIX):
                try:
                    with self._lock:
                        self.stats.apply(message.topic, message.payload)
                except SysValueError as exc:
                    self._sys_errors.inc()
                    log.warning("broker $SYS value not understood: %s", exc)
                continue
            pattern = self._patterns.find(message.topic)
            if pattern is None:  # a `$SYS` topic outside $SYS/broker/, or a retained message of an overlapping filter
                continue
            count, size, latency = self._children[pattern.pattern]
            count.inc()
            size.inc(len(message.payload))
            try:
                samples = self._decoders[pattern.format](message.payload)
            except DecodeError as exc:
                self._payload_errors.labels(pattern.pattern, exc.reason).inc()
                continue
            stamp = next((s.ts for s in samples if s.ts is not None), None)
            if stamp is None:  # a format whose messages need not carry a time
                continue
            try:
                sent = parse_timestamp(stamp)
            except ValueError:
                self._payload_errors.labels(pattern.pattern, "bad_timestamp").inc()
                continue
            # A node's clock slightly ahead of ours is skew, not a message from the future.
            latency.observe(max(0.0, now - sent))

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def run(self, stop: threading.Event) -> None:
        """Receive until `stop` is set, reconnecting whenever the broker goes away."""
        self.subscriber.run(self.handle, stop)


def start_http(exporter: BrokerExporter, port: int, host: str = "0.0.0.0") -> HealthServer:
    """Serve /metrics (the exporter's registry), /healthz and /readyz; started."""

    def metrics(handler: Handler) -> None:
        handler.send(200, exporter.metrics(), CONTENT_TYPE_LATEST)

    server = HealthServer(port, lambda: True, lambda: True, host, routes={"/metrics": metrics})
    server.start()
    return server


def serve(endpoint: Endpoint, patterns: list[TopicPattern], port: int, host: str = "0.0.0.0") -> int:
    """Run until SIGTERM or SIGINT."""
    exporter = BrokerExporter(endpoint, patterns)
    server = start_http(exporter, port, host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("broker exporter: %s on :%d/metrics, patterns %s", endpoint, server.port, [p.pattern for p in patterns] or "none")
    try:
        exporter.run(stop)
    finally:
        server.stop()
    return 0
