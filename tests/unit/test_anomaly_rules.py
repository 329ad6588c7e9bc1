"""AnomalyScore rules: fire on their own detector's anomaly_score series, above its threshold, after `for`."""

from __future__ import annotations

import yaml

from plantwatch.plant.load import plant_from_documents
from plantwatch.readings import Reading
from plantwatch.rules.engine import RuleEngine

DOCS = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: press}
spec:
  hardware: esp32
  payload: {format: esp32-json, topic: sensors/press}
  sensors: [{name: temperature, type: temperature}]
---
apiVersion: plantwatch.io/v1alpha1
kind: DetectorModel
metadata: {name: bearing-wear}
spec:
  source: {configMap: {name: m}}
  features: {sensors: [temperature]}
  threshold: "0.6"
---
apiVersion: plantwatch.io/v1alpha1
kind: DetectorModel
metadata: {name: seal-leak}
spec:
  source: {configMap: {name: n}}
  features: {sensors: [temperature]}
  threshold: "5"
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: bearing}
spec:
  selector: {sensorType: anomaly_score}
  condition: {type: AnomalyScore, anomalyScore: {detector: bearing-wear}}
  for: 2s
"""


def test_a_rule_fires_on_its_detectors_scores_only():
    engine = RuleEngine(plant_from_documents([(f"doc{i}", d) for i, d in enumerate(yaml.safe_load_all(DOCS))]), now=0.0)
    events = []
    for t in range(6):
        events += engine.on_reading(Reading("press", "seal-leak", "anomaly_score", 1.0, t))  # above 0.6, but not its detector
    assert events == []
    for t, score in enumerate([0.5, 0.9, 0.9, 0.9, 0.2], start=10):
        events += engine.on_reading(Reading("press", "bearing-wear", "anomaly_score", score, t))
    assert [(e.state, e.rule, e.sensor, e.ts) for e in events] == [
        ("firing", "bearing", "bearing-wear", 13),
        ("resolved", "bearing", "bearing-wear", 14),
    ]
