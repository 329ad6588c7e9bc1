"""The series people graph, read from the process's /metrics exposition as Prometheus would.

A Pipeline over the sample plant stores real batches (SQLite store) and the gauges follow: an alert
firing by rule and severity and back to 0 once it resolves, each node's last-seen time, and
no series at all for a sensor the plant does not declare. Then a real Prometheus scrapes a running
plant with the chart's platform-health rules loaded.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT
from tests.support.prometheus import Prometheus, wait_until
from tests.unit.test_prometheus_rules import RULES, alerts

#: A metric name in a PromQL expression: an identifier that is not a function, keyword or label.
METRIC = re.compile(r"\b(plantwatch_\w+|up)\b(?!\s*\()")


def base(name: str) -> str:
    """A histogram's or counter's family name (what Prometheus's metadata lists)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


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


def test_a_real_prometheus_scraping_a_running_plant_knows_every_series_the_rules_read(tmp_path):
    """Prometheus (Debian's) scrapes `plantwatch up` (the gateway), `serve inference` (the sample's starter
    model) and `serve broker-exporter` on loopback and loads the chart's rules: every metric an expression
    reads is one of the families the live targets expose, and every rule evaluates without error."""
    broker = start_mosquitto(sys_interval=1)
    model = tmp_path / "model.onnx"
    model.write_bytes(base64.b64decode(yaml.safe_load((EXAMPLE_PLANT / "bearing-wear-model.yaml").read_text())["binaryData"]["model.onnx"]))
    ports = {job: free_port() for job in ("gateway", "inference", "broker-exporter")}
    cli = (sys.executable, "-m", "plantwatch.cli")
    commands = {
        "gateway": [*cli, "up", "-f", str(EXAMPLE_PLANT), "--broker", broker.url, "--simulate", "--duration", "300"]
        + ["--http-port", str(ports["gateway"]), "--db", str(tmp_path / "plant.db")],
        "inference": [
            *cli,
            "serve",
            "inference",
            "--model-name",
            "bearing-wear",
            "--model",
            str(model),
            "--http-port",
            str(ports["inference"]),
        ],
        "broker-exporter": [
            *cli,
            "serve",
            "broker-exporter",
            "--broker",
            broker.url,
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["broker-exporter"]),
        ],
    }
    prometheus = Prometheus(tmp_path, {job: f"127.0.0.1:{ports[job]}" for job in commands}, {"namespace": "plant-a"}, [RULES])
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands.values()]
    read = {name for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] for name in METRIC.findall(r["expr"])}
    try:
        prometheus.wait_targets_up()
        # the exporter's $SYS families appear once the broker has published them, the gateway's once it stored
        exposed = wait_until(
            "the families the rules read in the targets' metadata",
            lambda: (names := {base(n) for n in prometheus.get("metadata")}) >= {base(n) for n in read} - {"up"} and names,
        )

        def evaluated() -> list[dict] | None:
            rules = [r for g in prometheus.get("rules")["groups"] for r in g["rules"] if r["health"] != "unknown"]
            return rules if len(rules) == len(alerts()) else None

        # a target's own `up` series is made by Prometheus, not exposed
        assert {base(n) for n in read} - {"up"} <= exposed
        rules = wait_until("every rule evaluated", evaluated)
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        query = "query?query=" + urllib.parse.quote('plantwatch_alerts_firing{namespace="plant-a"} > 0')
        wait_until("the simulated plant's alerts in plantwatch_alerts_firing", lambda: prometheus.get(query)["result"])
    finally:
        prometheus.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        broker.stop()
