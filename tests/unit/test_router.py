"""Alert routing: maintenance windows suppress notifications; repeats follow repeatInterval."""

from __future__ import annotations

import io

import yaml

from plantwatch.alerts.router import AlertRouter
from plantwatch.plant.load import plant_from_documents
from plantwatch.readings import AlertEvent

DOCS = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: press}
spec:
  hardware: esp32
  payload: {format: esp32-json, topic: sensors/press}
  sensors: [{name: temperature, type: temperature}]
  maintenanceWindows:
    - {name: wo-1234, start: "2026-01-01T08:00:00Z", end: "2026-01-01T09:00:00Z"}
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: hot}
spec:
  selector: {sensorType: temperature}
  condition: {type: Threshold, threshold: {critical: "80"}}
  repeatInterval: 10m
"""
START = 1767254400.0  # 08:00Z, the window's start


def router():
    out = io.StringIO()
    sent = []
    plant = plant_from_documents([(str(i), d) for i, d in enumerate(yaml.safe_load_all(DOCS))])
    return AlertRouter(plant, out=out, notify=lambda e, why: sent.append((e.state, why))), out, sent


def event(ts: float, state: str = "firing") -> AlertEvent:
    return AlertEvent("hot/press/temperature", "hot", "press", "temperature", state, "critical", 85.0, ts, "hot press")


def test_maintenance_window_suppresses_but_keeps_the_alert_active():
    r, out, sent = router()
    r.route([event(START + 60)], START + 60)
    assert sent == [] and out.getvalue() == "" and r.suppressed == 1
    assert "hot/press/temperature" in r.active and r.fired == 1
    r.route([event(START + 3600 + 1, "resolved")], START + 3601)  # after the window: heard
    assert sent == [("resolved", "resolved")] and "RESOLVED" in out.getvalue()


def test_repeat_interval():
    r, out, sent = router()
    r.route([event(START - 7200)], START - 7200)
    r.repeat_due(START - 7200 + 599)
    r.repeat_due(START - 7200 + 600)
    assert sent == [("firing", "new"), ("firing", "repeat")]
    assert out.getvalue().count("(repeat)") == 1
