"""The rules engine: threshold levels with hysteresis and `for`, absence, rate of change."""

from __future__ import annotations

import yaml

from plantwatch.plant.load import plant_from_documents
from plantwatch.readings import Reading
from plantwatch.rules.engine import RuleEngine

NODE = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: press, labels: {line: l1}}
spec:
  hardware: esp32
  payload: {format: esp32-json, topic: sensors/press}
  sensors:
    - {name: temperature, type: temperature}
    - {name: pressure, type: pressure}
"""


def rule(spec: str, name: str = "r") -> str:
    return f"apiVersion: plantwatch.io/v1alpha1\nkind: AlertRule\nmetadata: {{name: {name}}}\nspec:\n{spec}"


def engine(*rules: str) -> RuleEngine:
    docs = [("node", yaml.safe_load(NODE))] + [(f"rule{i}", yaml.safe_load(r)) for i, r in enumerate(rules)]
    return RuleEngine(plant_from_documents(docs), now=0.0)


def feed(e: RuleEngine, values: list[float], sensor: str = "temperature", type_: str = "temperature", t0: float = 0.0):
    out = []
    for i, v in enumerate(values):
        out += [(x.state, x.severity) for x in e.on_reading(Reading("press", sensor, type_, v, t0 + i))]
    return out


THRESHOLD = rule("""
  selector: {sensorType: temperature}
  condition:
    type: Threshold
    threshold: {warning: "70", critical: "80", emergency: "95", hysteresis: "2"}
""")


def test_threshold_escalates_and_resolves_past_hysteresis():
    e = engine(THRESHOLD)
    events = feed(e, [60, 71, 79, 81, 96, 94, 79.5, 78.5, 69, 67.9])
    assert events == [
        ("firing", "warning"),  # 71
        ("firing", "critical"),  # 81
        ("firing", "emergency"),  # 96
        ("firing", "critical"),  # 94 is below 95 - 2: back to critical
        ("firing", "warning"),  # 78.5 < 80 - 2 (79.5 still held critical)
        ("resolved", "warning"),  # 67.9 < 70 - 2 (69 still held warning)
    ]


def test_for_keeps_the_alert_pending():
    e = engine(
        rule("""
  selector: {sensor: temperature}
  condition: {type: Threshold, threshold: {critical: "80"}}
  for: 3s
""")
    )
    assert feed(e, [81, 82, 83]) == []  # held 2s only
    assert feed(e, [84], t0=3) == [("firing", "critical")]
    e2 = engine(
        rule("""
  selector: {sensor: temperature}
  condition: {type: Threshold, threshold: {critical: "80"}}
  for: 3s
""")
    )
    assert feed(e2, [81, 82, 70, 81, 82, 83]) == []  # the dip restarted the clock


def test_below_direction():
    e = engine(
        rule("""
  selector: {sensorType: pressure}
  condition: {type: Threshold, threshold: {direction: Below, warning: "900", critical: "800"}}
""")
    )
    assert feed(e, [1000, 850, 799, 950], "pressure", "pressure") == [
        ("firing", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
    ]


def test_selector_limits_series():
    e = engine(
        rule("""
  selector: {sensorType: temperature, nodeSelector: {matchLabels: {line: l2}}}
  condition: {type: Threshold, threshold: {critical: "80"}}
""")
    )
    assert feed(e, [99]) == []


def test_absence_fires_on_silence_and_resolves_on_data():
    e = engine(
        rule("""
  selector: {}
  condition: {type: Absence, absence: {after: 10s}}
  severity: critical
""")
    )
    assert e.tick(5.0) == []
    (fired,) = e.tick(10.0)
    assert (fired.state, fired.severity, fired.node, fired.sensor) == ("firing", "critical", "press", "*")
    assert e.tick(11.0) == []  # fires once
    assert e.silent_nodes() == {"press"}
    (resolved,) = e.on_reading(Reading("press", "temperature", "temperature", 20.0, 12.0))
    assert resolved.state == "resolved" and e.silent_nodes() == set()


def test_rate_of_change():
    e = engine(
        rule("""
  selector: {sensor: temperature}
  condition: {type: RateOfChange, rateOfChange: {maxPerMinute: "30"}}
""")
    )
    # +1/s = 60/min is too fast; +0.25/s = 15/min is fine
    assert feed(e, [20, 21, 22, 22.25]) == [("firing", "warning"), ("resolved", "warning")]


def test_summary_is_rendered():
    e = engine(
        rule("""
  selector: {sensor: temperature}
  condition: {type: Threshold, threshold: {critical: "80"}}
  annotations: {summary: "{node}/{sensor} is {value} ({level}) {unknown}"}
""")
    )
    (event,) = e.on_reading(Reading("press", "temperature", "temperature", 85.5, 1.0))
    assert event.summary == "press/temperature is 85.5 (critical) {unknown}"
    assert event.fingerprint == "r/press/temperature"
