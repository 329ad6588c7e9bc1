"""The series people graph, read from the process's /metrics exposition as Prometheus would.

A Pipeline over the sample plant stores real batches (SQLite store) and the gauges follow: an alert
firing by rule and severity and back to 0 once it resolves, each node's last-seen time, and
no series at all for a sensor the plant does not declare.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT

NODE, TOPIC = "esp32-press-01", "sensors/hall-1/esp32-press-01/data"


def scrape() -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for s in family.samples
    }


def firing(rule: str, severity: str) -> float:
    return scrape().get(("plantwatch_alerts_firing", frozenset({"rule": rule, "severity": severity}.items())), 0.0)


def test_alerts_firing_by_severity_and_node_last_seen(tmp_path):
    now = 1_800_000_000.0
    plant = load_plant(EXAMPLE_PLANT)
    declared = {s.name for s in next(n for n in plant.nodes if n.name == NODE).spec.sensors}
    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), now=now)
    before = firing("machine-overtemperature", "critical")

    def send(t: float, celsius: float) -> None:
        pipeline.process([(TOPIC, encode("esp32-json", NODE, t, {"temperature_c": celsius, "vibration_g": 1.0, "spare_c": 3.0}))], t)

    for t in range(0, 4):  # over 80 °C for longer than the rule's `for: 2s`
        send(now + t, 85.0)
    assert firing("machine-overtemperature", "critical") == before + 1
    pipeline.tick(now + 4)
    assert scrape()[("plantwatch_node_last_seen_timestamp_seconds", frozenset({"node": NODE}.items()))] == now + 3
    send(now + 5, 20.0)  # well under every level, hysteresis included
    assert firing("machine-overtemperature", "critical") == before
    exported = {dict(k[1])["sensor"] for k in scrape() if k[0] == "plantwatch_sensor_value" and ("node", NODE) in k[1]}
    assert exported == {"temperature", "vibration"} < declared  # what it sent of its sensors: the undeclared spare_c made none
