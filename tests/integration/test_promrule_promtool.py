"""The rendered PrometheusRule in a real Prometheus: `promtool check rules` accepts the groups and
`promtool test rules` evaluates them over series shaped as the gateway exports them, firing and
resolving each level (with hysteresis), an absence (silent and never seen) and anomaly scores,
with the summaries Plantwatch's engine would write for the same readings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plantwatch.alerts.promrule import RATE_NOT_EXPRESSIBLE, render_prometheus_rule
from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.plant.load import load_plant
from plantwatch.rules import summary as summaries
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NS = "plant-a"
STEP = 10  # seconds between samples and between evaluations

EXTRA_RULES = """
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: boiler-pressure-low}
spec:
  selector: {sensor: boiler-pressure}
  condition: {type: Threshold, threshold: {direction: Below, warning: "900", critical: "850"}}
  receivers: [console]
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: temperature-silent}
spec:
  selector: {sensorType: temperature}
  condition: {type: Absence, absence: {after: 30s}}
  severity: warning
  receivers: [console]
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: bearing-anomaly-strict}
spec:
  selector: {}
  condition: {type: AnomalyScore, anomalyScore: {detector: bearing-wear, above: "0.9"}}
  severity: critical
  receivers: [console]
  annotations: {summary: "{node} score {value:.2f} ({level}, {rule})", runbook: "https://runbooks.example/bearing"}
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: spindle-speed-jump}
spec:
  selector: {sensor: spindle-speed}
  condition: {type: RateOfChange, rateOfChange: {maxPerMinute: "100"}}
  receivers: [console]
"""


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plant")
    for f in EXAMPLE_PLANT.glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    (folder / "extra-rules.yaml").write_text(EXTRA_RULES)
    return load_plant(folder)


@pytest.fixture(scope="module")
def rule_file(plant, tmp_path_factory) -> Path:
    manifest, why = render_prometheus_rule(plant, NS)
    assert why["spindle-speed-jump"] == RATE_NOT_EXPRESSIBLE
    assert {g["name"] for g in manifest["spec"]["groups"]} == {r.name for r in plant.rules} - {"spindle-speed-jump"}
    path = tmp_path_factory.mktemp("rules") / "plantwatch.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": manifest["spec"]["groups"]}, sort_keys=False))
    return path


def values(samples: list[float | None]) -> str:
    """promtool's input notation: one sample per step, `_` for none."""
    return " ".join("_" if v is None else format(v, "g") for v in samples)


def clock(until: int, stop: int | None = None, resume: int | None = None) -> list[float | None]:
    """A last-seen series: the reading's time at every step, stuck at `stop` from there until `resume`."""
    out: list[float | None] = []
    for t in range(0, until + 1, STEP):
        stuck = stop is not None and t > stop and (resume is None or t < resume)
        out.append(float(stop) if stuck else float(t))
    return out


def series(node: str, sensor: str, type_: str, unit: str, samples: list[float]) -> dict:
    return {
        "series": f'plantwatch_sensor_value{{namespace="{NS}",node="{node}",sensor="{sensor}",type="{type_}",unit="{unit}"}}',
        "values": values(samples),
    }


def seen(node: str, sensor: str, samples: list[float | None]) -> dict:
    labels = f'namespace="{NS}",node="{node}",sensor="{sensor}"'
    return {"series": f"plantwatch_sensor_last_seen_timestamp_seconds{{{labels}}}", "values": values(samples)}


def test_promtool_checks_the_rendered_rules(rule_file):
    result = subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_fires_and_resolves_what_plantwatch_would(plant, rule_file, tmp_path):
    nodes = {n.name: n for n in plant.nodes}
    rules = {r.name: r for r in plant.rules}

    def alert(rule: str, severity: str, node: str, sensor: str | None, facts: dict, **labels: str) -> dict:
        """An expected alert: its labels, and the summary Plantwatch's engine writes for the same facts."""
        spec = rules[rule].spec
        template = spec.annotations.summary if spec.annotations and spec.annotations.summary else None
        n = nodes[node].spec
        text = summaries.render_or_default(
            template,
            summaries.Facts(
                rule=rule,
                node=node,
                sensor=sensor or "*",
                state="firing",
                severity=severity,
                equipment=n.equipment,
                location=n.location,
                **facts,
            ),
        )
        annotations = {"summary": text}
        if spec.annotations and spec.annotations.runbook:
            annotations["runbook_url"] = spec.annotations.runbook
        own = {"namespace": NS, "node": node, "severity": severity, **({"sensor": sensor} if sensor else {}), **labels}
        return {"exp_labels": own, "exp_annotations": annotations}

    def temperature(severity: str, value: float, level: float) -> dict:
        facts = dict(condition="Threshold", value=value, unit="celsius", threshold=level, direction="above")
        return alert("machine-overtemperature", severity, "esp32-press-01", "temperature", facts, type="temperature", unit="celsius")

    def vibration(severity: str, value: float, level: float) -> dict:
        facts = dict(condition="Threshold", value=value, unit="g", threshold=level, direction="above")
        return alert("vibration-high", severity, "esp32-press-01", "vibration", facts, type="vibration", unit="g")

    def pressure(severity: str, value: float, level: float) -> dict:
        facts = dict(condition="Threshold", value=value, unit="hpa", threshold=level, direction="below")
        return alert("boiler-pressure-low", severity, "boiler-gateway", "boiler-pressure", facts, type="pressure", unit="hpa")

    def score(rule: str, severity: str, value: float, above: float) -> dict:
        facts = dict(condition="AnomalyScore", value=value, threshold=above, direction="above")
        return alert(rule, severity, "esp32-press-01", "bearing-wear", facts, type="anomaly_score")  # unit="" is no label

    def silent(node: str, seconds: float) -> dict:
        return alert("node-silent", "critical", node, None, dict(condition="Absence", value=seconds, threshold=10.0), absence="silent")

    def temperature_silent(node: str, sensor: str) -> dict:
        facts = dict(condition="Absence", value=None, threshold=30.0)
        return alert("temperature-silent", "warning", node, sensor, facts, absence="silent")

    end = 300
    hot = [60, 72, 72, 85, 85, 79, 79, 75, 75, 69, 67, 98, 98, 93.5, 92, 92]
    inputs = [
        # machine-overtemperature (70/80/95, hysteresis 2, for 2s): up through every level and back
        series("esp32-press-01", "temperature", "temperature", "celsius", hot + [60] * (end // STEP + 1 - len(hot))),
        series("rpi-line1-env", "air-temperature", "temperature", "celsius", [20] * (end // STEP + 1)),
        series("boiler-gateway", "boiler-temperature", "temperature", "celsius", [20] * (end // STEP + 1)),
        series("coldroom-feed", "temperature", "temperature", "celsius", [2] * (end // STEP + 1)),
        # vibration-high (5/8, hysteresis 0.5, for 0s)
        series("esp32-press-01", "vibration", "vibration", "g", [3, 6, 9, 7.6, 7.4, 4.6, 4.4] + [3] * 24),
        # boiler-pressure-low (Below 900/850)
        series("boiler-gateway", "boiler-pressure", "pressure", "hpa", [1000, 880, 840, 1000] + [1000] * 27),
        # the bearing-wear detector's scores (threshold 0.6; the strict rule: above 0.9)
        series("esp32-press-01", "bearing-wear", "anomaly_score", "", [0.2, 0.7, 0.7, 0.95, 0.95, 0.3] + [0.3] * 25),
        # last seen: esp32 goes silent after 50s and is back at 80s; jetson is never seen until 30s;
        # the cold room's only sensor stops at 100s and is back at 210s
        seen("esp32-press-01", "temperature", clock(end, stop=50, resume=80)),
        seen("rpi-line1-env", "air-temperature", clock(end)),
        seen("boiler-gateway", "boiler-temperature", clock(end)),
        seen("coldroom-feed", "temperature", clock(end, stop=100, resume=210)),
        seen("jetson-cell-01", "spindle-current", [None] * 3 + clock(end)[3:]),
    ]
    checks: list[tuple[int, str, list[dict]]] = [
        (10, "machine-overtemperature", []),  # pending: for 2s
        (20, "machine-overtemperature", [temperature("warning", 72, 70)]),
        (30, "machine-overtemperature", [temperature("warning", 85, 70)]),  # critical pending: warning goes on
        (40, "machine-overtemperature", [temperature("critical", 85, 80)]),  # only the most severe fires
        (60, "machine-overtemperature", [temperature("critical", 79, 80)]),  # held: 79 is within the hysteresis
        (70, "machine-overtemperature", []),  # critical clears; warning waits its `for` again
        (80, "machine-overtemperature", [temperature("warning", 75, 70)]),
        (90, "machine-overtemperature", [temperature("warning", 69, 70)]),  # held
        (100, "machine-overtemperature", []),  # resolved
        (120, "machine-overtemperature", [temperature("emergency", 98, 95)]),
        (130, "machine-overtemperature", [temperature("emergency", 93.5, 95)]),
        (150, "machine-overtemperature", [temperature("critical", 92, 80)]),
        (170, "machine-overtemperature", []),
        (10, "vibration-high", [vibration("warning", 6, 5)]),
        (20, "vibration-high", [vibration("critical", 9, 8)]),
        (30, "vibration-high", [vibration("critical", 7.6, 8)]),
        (40, "vibration-high", [vibration("warning", 7.4, 5)]),
        (50, "vibration-high", [vibration("warning", 4.6, 5)]),
        (60, "vibration-high", []),
        (10, "boiler-pressure-low", [pressure("warning", 880, 900)]),
        (20, "boiler-pressure-low", [pressure("critical", 840, 850)]),
        (30, "boiler-pressure-low", []),
        (10, "bearing-anomaly", []),  # pending: for 5s
        (20, "bearing-anomaly", [score("bearing-anomaly", "warning", 0.7, 0.6)]),
        (30, "bearing-anomaly-strict", [score("bearing-anomaly-strict", "critical", 0.95, 0.9)]),
        (50, "bearing-anomaly", []),
        (50, "bearing-anomaly-strict", []),
        (0, "node-silent", []),  # jetson never seen: pending for absence.after
        (
            10,
            "node-silent",
            [
                {
                    "exp_labels": {"namespace": NS, "node": "jetson-cell-01", "severity": "critical", "absence": "unseen"},
                    "exp_annotations": {"summary": "jetson-cell-01 *: no reading for 10s (node offline?)"},
                }
            ],
        ),
        (30, "node-silent", []),
        (60, "node-silent", [silent("esp32-press-01", 10)]),
        (80, "node-silent", []),
        (130, "node-silent", [silent("coldroom-feed", 30)]),
        (130, "temperature-silent", [temperature_silent("coldroom-feed", "temperature")]),
        (120, "temperature-silent", []),
        (210, "temperature-silent", []),
        (210, "node-silent", []),
    ]
    for rule in (r.name for r in plant.rules if r.name != "spindle-speed-jump"):
        assert any(name == rule and expected for _, name, expected in checks), f"no check sees {rule} fire"
    test = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": f"{STEP}s",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": inputs,
                "alert_rule_test": [{"eval_time": f"{t}s", "alertname": name, "exp_alerts": exp} for t, name, exp in checks],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_select_the_series_the_gateway_exports(plant, rule_file, tmp_path):
    """A Pipeline stores a batch; its /metrics exposition (with the namespace label a ServiceMonitor
    adds) is what Prometheus evaluates: one series per declared sensor, the newest reading of each."""
    now = 1_700_000_000.0
    pipeline = Pipeline(plant, SqliteStore(tmp_path / "p.db"), now=now)
    topic = "sensors/hall-1/esp32-press-01/data"
    batch = [
        (topic, encode("esp32-json", "esp32-press-01", now - 2, {"temperature_c": 60.0, "vibration_g": 1.0})),
        (topic, encode("esp32-json", "esp32-press-01", now - 1, {"temperature_c": 72.0, "vibration_g": 1.0, "spare_c": 9.0})),
        (topic, encode("esp32-json", "esp32-press-01", now - 3, {"temperature_c": 99.0})),  # late: stored, not the newest
    ]
    pipeline.process(batch, now)
    exported = [
        s
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for s in family.samples
        if s.name in ("plantwatch_sensor_value", "plantwatch_sensor_last_seen_timestamp_seconds") and s.labels["node"] == "esp32-press-01"
    ]
    values = {(s.name, s.labels["sensor"]): s.value for s in exported}
    assert values == {
        ("plantwatch_sensor_value", "temperature"): 72.0,
        ("plantwatch_sensor_value", "vibration"): 1.0,
        ("plantwatch_sensor_last_seen_timestamp_seconds", "temperature"): now - 1,
        ("plantwatch_sensor_last_seen_timestamp_seconds", "vibration"): now - 1,
    }  # no series for the undeclared field
    inputs = []
    for s in exported:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted({**s.labels, "namespace": NS}.items()))
        inputs.append({"series": f"{s.name}{{{labels}}}", "values": values_of(s.value, 3)})
    test = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": f"{STEP}s",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": inputs,
                "alert_rule_test": [
                    {
                        "eval_time": "20s",
                        "alertname": "machine-overtemperature",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "namespace": NS,
                                    "node": "esp32-press-01",
                                    "sensor": "temperature",
                                    "type": "temperature",
                                    "unit": "celsius",
                                    "severity": "warning",
                                },
                                "exp_annotations": {
                                    "summary": "esp32-press-01 temperature at 72 celsius (warning)",
                                    "runbook_url": "https://plantwatch.example/runbooks/overtemperature",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "exported.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def values_of(value: float, steps: int) -> str:
    return " ".join([format(value, "g")] * steps)
