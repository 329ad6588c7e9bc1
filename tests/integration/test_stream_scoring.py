"""Streaming scores end to end on a real mosquitto: a trained detector, published as YAML, fires an AnomalyScore rule.

train (plantwatch detector train) -> publish (DetectorModel + ConfigMap) -> plantwatch validate ->
ESP32 messages on mosquitto, normal then a fault -> the anomaly_score series the pipeline computes
fires the AnomalyScore AlertRule, after the fault starts and not before. Twice: `plantwatch up`
(the model loaded in process), and the cluster's shape, `plantwatch serve ingest --score-url`
scoring through `plantwatch serve inference` over HTTP.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import yaml

from plantwatch.mqtt.broker import free_port, start_broker

TOPIC = "sensors/hall-9/esp32-pump-01/data"
NODE = f"""\
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata:
  name: esp32-pump-01
  labels: {{plantwatch.io/line: line-9}}
spec:
  hardware: esp32
  payload: {{format: esp32-json, topic: {TOPIC}}}
  heartbeat: {{interval: 1s, missedBeats: 5}}
  sensors:
    - {{name: temperature, type: temperature, unit: celsius, field: temperature_c, range: {{min: "-40", max: "125"}}}}
    - {{name: vibration, type: vibration, unit: g, field: vibration_g, range: {{min: "0", max: "16"}}}}
    - {{name: current, type: current, unit: ampere, field: current_a, range: {{min: "0", max: "50"}}}}
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata:
  name: pump-anomaly
spec:
  selector: {{sensorType: anomaly_score}}
  condition:
    type: AnomalyScore
    anomalyScore: {{detector: pump-wear}}
  for: 3s
  severity: warning
  receivers: [console]
"""


def pump(rows: int, seed: int) -> np.ndarray:
    """Normal pump readings: temperature, vibration, current around a steady operating point."""
    rng = np.random.default_rng(seed)
    return np.column_stack([45 + rng.normal(0, 0.3, rows), 1.5 + rng.normal(0, 0.05, rows), 12 + rng.normal(0, 0.2, rows)])


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.cli", *args], capture_output=True, text=True, timeout=120, **kw)


FAULT_FROM = 180  # bearing fault from this row: hotter, shaking, drawing more current


def published_plant(tmp_path) -> Path:
    normal = tmp_path / "normal.csv"
    normal.write_text("temperature,vibration,current\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in pump(500, 0)))
    trained = cli("detector", "train", "--csv", str(normal), "--out", str(tmp_path / "model"), "--train-rows", "500")
    assert trained.returncode == 0, trained.stderr
    plant = tmp_path / "plant"
    plant.mkdir()
    published = cli(
        "detector",
        "publish",
        "--model",
        str(tmp_path / "model"),
        "--name",
        "pump-wear",
        "--node-selector",
        "plantwatch.io/line=line-9",
        "--out",
        str(plant / "pump-wear.yaml"),
    )
    assert published.returncode == 0, published.stderr
    (plant / "pump.yaml").write_text(NODE)
    validated = cli("validate", "-f", str(plant))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    return plant


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.time() < deadline and proc.poll() is None, f"{proc.args[3:5]} did not become ready"
        time.sleep(0.1)


def publish_stream(broker) -> tuple[int, int]:
    """The pump's messages, normal then faulty, stamped one second apart in the recent past; (first stamp, rows)."""
    values = pump(240, 1)
    values[FAULT_FROM:] += [6.0, 1.2, 2.5]
    start = int(time.time()) - len(values) - 5
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    for i, (t, v, c) in enumerate(values):
        publisher.publish(
            TOPIC,
            orjson.dumps(
                {
                    "device_id": "esp32-pump-01",
                    "timestamp": start + i,
                    "temperature_c": round(float(t), 3),
                    "vibration_g": round(float(v), 3),
                    "current_a": round(float(c), 3),
                }
            ),
            qos=1,
        ).wait_for_publish(5)
    publisher.loop_stop()
    publisher.disconnect()
    return start, len(values)


def assert_fired_on_the_fault(db: Path, plant: Path, start: int) -> list:
    with sqlite3.connect(db) as conn:
        scores = conn.execute("SELECT ts, value FROM readings WHERE sensor = 'pump-wear' ORDER BY ts").fetchall()
        fired = conn.execute("SELECT ts, value FROM alert_events WHERE rule = 'pump-anomaly' AND state = 'firing' ORDER BY ts").fetchall()
    (detector,) = [d for d in yaml.safe_load_all((plant / "pump-wear.yaml").read_text()) if d["kind"] == "DetectorModel"]
    threshold = float(detector["spec"]["threshold"])
    # every row after the features' warm-up is scored, as the anomaly_score series of the node
    assert len(scores) >= 200
    assert all(v <= threshold for ts, v in scores if ts < start + FAULT_FROM), "normal rows scored above the threshold"
    assert fired, f"the AnomalyScore rule never fired; max score {max(v for _, v in scores):.3g}, threshold {threshold}"
    assert fired[0][0] >= start + FAULT_FROM + 3  # fires on the fault, after the rule's `for: 3s`
    return scores


def test_anomaly_score_rule_fires_from_a_fault_in_the_stream(tmp_path):
    plant = published_plant(tmp_path)
    broker = start_broker("mosquitto")
    port = free_port()
    db = tmp_path / "plant.db"
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "up",
            "-f",
            str(plant),
            "--broker",
            broker.url,
            "--duration",
            "12",
            "--http-port",
            str(port),
            "--db",
            str(db),
            "--summary-json",
            str(tmp_path / "summary.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", up)
        start, rows = publish_stream(broker)
        stdout, stderr = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
        broker.stop()
    assert up.returncode == 0, stderr
    assert "not scoring" not in stderr, stderr
    scores = assert_fired_on_the_fault(db, plant, start)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["readings_stored"] >= 3 * rows + len(scores) and summary["alerts_fired"] >= 1
    assert "ALERT" in stdout and "pump-anomaly esp32-pump-01/pump-wear" in stdout


def test_the_gateway_scores_through_the_inference_service(tmp_path):
    plant = published_plant(tmp_path)
    broker = start_broker("mosquitto")
    inference_port, gateway_port = free_port(), free_port()
    db = tmp_path / "gateway.db"
    inference = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "inference",
            "--model-name",
            "pump-wear",
            "--model",
            str(tmp_path / "model" / "model.onnx"),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(inference_port),
        ]
    )
    gateway = None
    try:
        wait_ready(f"http://127.0.0.1:{inference_port}/v2/health/ready", inference)
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plantwatch.cli",
                "serve",
                "ingest",
                "-f",
                str(plant),
                "--broker",
                broker.url,
                "--db",
                str(db),
                "--http-port",
                str(gateway_port),
                "--score-url",
                f"http://127.0.0.1:{inference_port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_ready(f"http://127.0.0.1:{gateway_port}/readyz", gateway)
        start, rows = publish_stream(broker)
        deadline = time.time() + 60
        while True:  # the gateway acknowledges after each commit: wait until every message is stored
            with sqlite3.connect(db) as conn:
                stored = conn.execute("SELECT count(*) FROM readings WHERE sensor = 'temperature'").fetchone()[0]
            if stored >= rows:
                break
            assert time.time() < deadline and gateway.poll() is None, f"{stored}/{rows} messages stored"
            time.sleep(0.2)
        gateway.terminate()
        stdout, stderr = gateway.communicate(timeout=30)
    finally:
        for proc in (gateway, inference):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        broker.stop()
    assert "not scoring" not in stderr, stderr
    assert_fired_on_the_fault(db, plant, start)
    assert "pump-anomaly esp32-pump-01/pump-wear" in stdout
