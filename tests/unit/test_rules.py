"""The rules engine: threshold levels with hysteresis and `for` (across escalation), absence, rate of change,
and what every event carries for the person who reads it (unit, limit, equipment, location, since)."""

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
  equipment: press-3
  location: hall-1/line-2
  payload: {format: esp32-json, topic: sensors/press}
  sensors:
    - {name: temperature, type: temperature, unit: celsius}
    - {name: pressure, type: pressure, unit: hpa}
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


LEVELS_FOR_3S = rule("""
  selector: {sensor: temperature}
  condition:
    type: Threshold
    threshold: {warning: "70", critical: "80", emergency: "95", hysteresis: "2"}
  for: 3s
""")


def fire(e: RuleEngine, value: float, ts: float):
    return e.on_reading(Reading("press", "temperature", "temperature", value, ts, "celsius"))


def test_for_applies_once_whatever_level_the_series_is_at():
    # Warning, then critical within `for`: one firing event, at critical, `for` after the warning began.
    e = engine(LEVELS_FOR_3S)
    assert feed(e, [71, 85, 86]) == []
    (fired,) = fire(e, 87, 3.0)
    assert (fired.state, fired.severity, fired.since, fired.threshold) == ("firing", "critical", 0.0, 80.0)
    # Critical straight away waits for `for` like any level: no firing on the first reading past it.
    e = engine(LEVELS_FOR_3S)
    assert feed(e, [85, 86, 87]) == []
    assert feed(e, [88], t0=3) == [("firing", "critical")]
    # A spike to critical that fell back within `for` is a transient: the alert fires at the level it is at.
    e = engine(LEVELS_FOR_3S)
    assert feed(e, [71, 85, 72, 73]) == [("firing", "warning")]


def test_once_firing_levels_change_at_once_and_resolve_past_the_hysteresis():
    e = engine(LEVELS_FOR_3S)
    assert feed(e, [71, 72, 73, 74]) == [("firing", "warning")]
    events = [x for t, v in enumerate([96, 94, 79, 78.5, 69, 67.9], start=4) for x in fire(e, v, float(t))]
    assert [(x.state, x.severity, x.threshold) for x in events] == [
        ("firing", "emergency", 95.0),  # escalation while firing: no second wait
        ("firing", "critical", 80.0),  # 94 < 95 - 2
        ("firing", "warning", 70.0),  # 78.5 < 80 - 2 (79 still held critical)
        ("resolved", "warning", 68.0),  # 67.9 < 70 - 2 (69 still held warning): resolved past 68
    ]
    assert {x.since for x in events} == {0.0}, "since is when the condition began, across every level"
    assert events[0].summary == "temperature 96 celsius on press (press-3 at hall-1/line-2) above the emergency level 95, ongoing for 4s"
    assert events[-1].summary == "temperature 67.9 celsius on press (press-3 at hall-1/line-2) back below 68 after 9s"
    # A new excursion waits for `for` again and counts from its own start.
    assert feed(e, [75, 76, 77], t0=10) == []
    (again,) = fire(e, 78, 13.0)
    assert (again.severity, again.since) == ("warning", 10.0)


def test_events_carry_unit_limit_and_since_for_every_condition():
    e = engine(
        rule(
            """
  selector: {sensor: pressure}
  condition: {type: RateOfChange, rateOfChange: {maxPerMinute: "30"}}
  for: 2s
""",
            "fast",
        ),
        rule(
            """
  selector: {}
  condition: {type: Absence, absence: {after: 10s}}
  severity: critical
""",
            "silent",
        ),
    )
    events = [
        x
        for t, v in enumerate([1000, 1002, 1004, 1006, 1006.1])
        for x in e.on_reading(Reading("press", "pressure", "pressure", v, t, "hpa"))
    ]
    assert [(x.state, x.unit, x.threshold, x.since) for x in events] == [("firing", "hpa", 30.0, 1.0), ("resolved", "hpa", 30.0, 1.0)]
    assert (
        events[0].summary == "pressure 1006 hpa on press (press-3 at hall-1/line-2) changing faster than 30 hpa per minute, ongoing for 2s"
    )
    assert events[1].summary == "pressure 1006.1 hpa on press (press-3 at hall-1/line-2) back under 30 hpa per minute after 3s"
    (quiet,) = e.tick(15.0)  # last reading at 4: silent for 11s
    assert (quiet.value, quiet.unit, quiet.threshold, quiet.since) == (11.0, "s", 10.0, 4.0)
    assert quiet.summary == "no reading from press (press-3 at hall-1/line-2) for 11s (limit 10s)"
    (back,) = e.on_reading(Reading("press", "temperature", "temperature", 20.5, 49.0, "celsius"))
    assert (back.state, back.value, back.unit, back.since) == ("resolved", 20.5, "celsius", 4.0)
    assert back.summary == "press (press-3 at hall-1/line-2) reporting again after 45s without a reading"


def test_a_snapshot_from_before_since_still_restores():
    # Written by the previous version: a firing alert's second element was always None.
    old = {"alerts": {"r/press/temperature": ["critical", None, 85.0, 5.0]}, "watches": {}}
    e = engine(THRESHOLD)
    e.restore(old)
    assert fire(e, 86, 6.0) == []  # still firing, not fired again
    (resolved,) = fire(e, 60, 7.0)
    assert (resolved.state, resolved.severity, resolved.since) == ("resolved", "critical", None)
    assert resolved.summary == "temperature 60 celsius on press (press-3 at hall-1/line-2) back below 68"
    # A snapshot of a firing alert keeps its start, so a new owner reports the whole duration.
    first = engine(LEVELS_FOR_3S)
    feed(first, [71, 72, 73, 74])
    second = engine(LEVELS_FOR_3S)
    second.restore(first.snapshot())
    (done,) = fire(second, 60, 10.0)
    assert (done.since, done.summary.endswith("after 10s")) == (0.0, True)
