"""The broker exporter against a real mosquitto (`sys_interval 1`), scraped over HTTP as Prometheus would.

Known clients publish known counts on known topic patterns, with payload timestamps 30 s in
the past; the scrape must show the clients, the broker's received-message counter growing by
at least what was published, each pattern's counts and latencies, the unreadable payload as an
error, `up` falling to 0 when the broker stops, and the broker's counters not falling back
when it starts again from zero.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plantwatch.ingest.formats import DECODABLE, encode
from plantwatch.monitoring.broker_exporter import BrokerExporter, start_http
from plantwatch.monitoring.sys_topics import parse_pattern
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import Publisher

PRESS = "plant/+/+/telemetry"
PI = "pi/+/data"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def value(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


@pytest.fixture
def broker():
    b = start_mosquitto(sys_interval=1)
    yield b
    b.stop()


def test_the_exporter_reports_clients_traffic_latency_errors_and_the_broker_going_away(broker):
    patterns = [parse_pattern(PRESS, "esp32-json", DECODABLE), parse_pattern(f"{PI}=rpi-json", "esp32-json", DECODABLE)]
    exporter = BrokerExporter(broker.url, patterns)
    server = start_http(exporter, 0, "127.0.0.1")
    stop = threading.Event()
    loop = threading.Thread(target=exporter.run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_until(lambda: value(scrape(server.port), "plantwatch_broker_up") == 1, "the exporter to connect")
        wait_until(
            lambda: value(scrape(server.port), "plantwatch_broker_publish_messages_received_total") is not None,
            "the broker's first $SYS report",
        )
        before = scrape(server.port)
        assert value(before, "plantwatch_broker_topic_messages_total", pattern=PRESS) == 0  # every pattern's series from the start
        received_before = value(before, "plantwatch_broker_publish_messages_received_total")

        publishers = [Publisher(broker.url) for _ in range(3)]
        for p in publishers:
            p.start()
        sent = time.time() - 30
        for i in range(20):
            publishers[i % 2].publish(f"plant/hall-1/press-{i % 4}/telemetry", encode("esp32-json", f"press-{i % 4}", sent, {"t": i}))
        for i in range(5):
            publishers[2].publish("pi/line-2/data", encode("rpi-json", "pi-1", sent, {"bme.temperature": 20.0 + i}))
        publishers[2].publish("plant/hall-1/broken/telemetry", b"{not json")
        publishers[2].publish("elsewhere/x", b"uncounted")
        assert all(p.flushed(10) for p in publishers)

        def counted() -> bool:
            m = scrape(server.port)
            return (
                value(m, "plantwatch_broker_clients_connected") == 4  # three publishers and the exporter
                and value(m, "plantwatch_broker_topic_messages_total", pattern=PRESS) == 21
                and value(m, "plantwatch_broker_topic_messages_total", pattern=PI) == 5
                and value(m, "plantwatch_broker_publish_messages_received_total") >= received_before + 27
            )

        wait_until(counted, "the clients and messages to be counted")
        m = scrape(server.port)
        assert value(m, "plantwatch_broker_topic_payload_errors_total", pattern=PRESS, reason="malformed") == 1
        assert not any(("pattern", "elsewhere/x") in labels for _, labels in m)
        # 20 readable timestamps 30 s old: none within 10 s, all within 60 s; the broken one has none.
        assert value(m, "plantwatch_broker_topic_latency_seconds_count", pattern=PRESS) == 20
        assert value(m, "plantwatch_broker_topic_latency_seconds_bucket", pattern=PRESS, le="10.0") == 0
        assert value(m, "plantwatch_broker_topic_latency_seconds_bucket", pattern=PRESS, le="60.0") == 20
        assert value(m, "plantwatch_broker_topic_latency_seconds_count", pattern=PI) == 5
        assert value(m, "plantwatch_broker_topic_payload_bytes_total", pattern=PI) > 5 * len(b'{"sensors":{}}')
        assert value(m, "plantwatch_broker_subscriptions") >= 3  # the exporter's $SYS and two patterns
        assert value(m, "plantwatch_broker_load_publish_received_per_minute", interval="1min") is not None
        assert value(m, "plantwatch_broker_build_info", version=value_label(m, "plantwatch_broker_build_info", "version")) == 1
        for p in publishers:
            p.stop()
        wait_until(lambda: value(scrape(server.port), "plantwatch_broker_clients_connected") == 1, "the publishers' disconnection")
        received = value(scrape(server.port), "plantwatch_broker_publish_messages_received_total")

        port = broker.port
        broker.stop()
        wait_until(lambda: value(scrape(server.port), "plantwatch_broker_up") == 0, "up to fall to 0")

        restarted = start_mosquitto(port, sys_interval=1)
        try:
            wait_until(lambda: value(scrape(server.port), "plantwatch_broker_up") == 1, "the exporter to reconnect")
            wait_until(lambda: value(scrape(server.port), "plantwatch_broker_uptime_seconds") <= 5, "the new broker's report")
            assert value(scrape(server.port), "plantwatch_broker_publish_messages_received_total") >= received
        finally:
            stop.set()
            loop.join(10)
            restarted.stop()
    finally:
        stop.set()
        server.stop()


def value_label(metrics: dict, name: str, label: str) -> str:
    found = [dict(labels)[label] for n, labels in metrics if n == name]
    assert len(found) == 1, f"{name}: expected one series, got {found}"
    assert found[0], f"{name}: empty {label}"
    return found[0]
