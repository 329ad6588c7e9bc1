"""Streaming scores end to end on a real mosquitto: a trained detector, published as YAML, fires an AnomalyScore rule.

train (plantwatch detector train) -> publish (DetectorModel + ConfigMap) -> plantwatch validate ->
plantwatch up on mosquitto -> ESP32 messages, normal then a fault -> the anomaly_score series the
pipeline computes fires the AnomalyScore AlertRule, after the fault starts and not before.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request

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


def test_anomaly_score_rule_fires_from_a_fault_in_the_stream(tmp_path):
    normal = tmp_path / "normal.csv"
    normal.write_text("temperature,vibration,current\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in pump(500, 0)))
    trained = cli("detector", "train", "--csv", str(normal), "--out", str(tmp_path / "model"), "--train-rows", "500")
    assert trained.returncode == 0, trained.stderr
    plant = tmp_path / "plant"
    plant.mkdir()
    published = cli("detector", "publish", "--model", str(tmp_path / "model"), "--name", "pump-wear",
                    "--node-selector", "plantwatch.io/line=line-9", "--out", str(plant / "pump-wear.yaml"))
    assert published.returncode == 0, published.stderr
    (plant / "pump.yaml").write_text(NODE)
    validated = cli("validate", "-f", str(plant))
    assert validated.returncode == 0, validated.stdout + validated.stderr

    broker = start_broker("mosquitto")
    port = free_port()
    db = tmp_path / "plant.db"
    up = subprocess.Popen([sys.executable, "-m", "plantwatch.cli", "up", "-f", str(plant), "--broker", broker.url,
                           "--duration", "12", "--http-port", str(port), "--db", str(db),
                           "--summary-json", str(tmp_path / "summary.json")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline and up.poll() is None, f"plantwatch up did not become ready: {up.stderr.read() if up.poll() is not None else ''}"
            time.sleep(0.1)
        values = pump(240, 1)
        fault_from = 180  # bearing fault: hotter, shaking, drawing more current
        values[fault_from:] += [6.0, 1.2, 2.5]
        start = int(time.time()) - len(values) - 5
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        for i, (t, v, c) in enumerate(values):
            publisher.publish(TOPIC, orjson.dumps({"device_id": "esp32-pump-01", "timestamp": start + i,
                                                   "temperature_c": round(float(t), 3), "vibration_g": round(float(v), 3),
                                                   "current_a": round(float(c), 3)}), qos=1).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()
        stdout, stderr = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
        broker.stop()
    assert up.returncode == 0, stderr
    assert "not scoring" not in stderr, stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    with sqlite3.connect(db) as conn:
        scores = conn.execute("SELECT ts, value FROM readings WHERE sensor = 'pump-wear' ORDER BY ts").fetchall()
        fired = conn.execute("SELECT ts, value FROM alert_events WHERE rule = 'pump-anomaly' AND state = 'firing' ORDER BY ts").fetchall()
    (detector,) = [d for d in yaml.safe_load_all((plant / "pump-wear.yaml").read_text()) if d["kind"] == "DetectorModel"]
    threshold = float(detector["spec"]["threshold"])
    # every row after the features' warm-up is scored, as the anomaly_score series of the node
    assert len(scores) >= 200 and summary["readings_stored"] >= 3 * len(values) + len(scores)
    assert all(v <= threshold for ts, v in scores if ts < start + fault_from), "normal rows scored above the threshold"
    assert fired, f"the AnomalyScore rule never fired; max score {max(v for _, v in scores):.3g}, threshold {threshold}"
    assert fired[0][0] >= start + fault_from + 3  # fires on the fault, after the rule's `for: 3s`
    assert "ALERT" in stdout and "pump-anomaly esp32-pump-01/pump-wear" in stdout
    assert summary["alerts_fired"] >= 1
