"""render_prometheus_rule: which AlertRules become which PromQL, and why the others cannot (pure)."""

from __future__ import annotations

import yaml

from plantwatch.alerts.promrule import API_VERSION, KIND, RATE_NOT_EXPRESSIBLE, render_prometheus_rule
from plantwatch.plant.load import Plant, load_plant
from plantwatch.plant.model import parse_resource
from tests.conftest import EXAMPLE_PLANT

SAMPLE = load_plant(EXAMPLE_PLANT)


def with_rules(plant: Plant, *docs: str, nodes: tuple = ()) -> Plant:
    rules = tuple(parse_resource(yaml.safe_load(d)) for d in docs)
    return Plant(nodes=plant.nodes + nodes, rules=rules, detectors=plant.detectors)


def rule(name: str, spec: str) -> str:
    return f"apiVersion: plantwatch.io/v1alpha1\nkind: AlertRule\nmetadata: {{name: {name}}}\nspec:\n  receivers: [console]\n{spec}"


def test_the_sample_plant_renders_every_rule_as_one_group():
    manifest, why = render_prometheus_rule(SAMPLE, "plant-a")
    assert manifest["apiVersion"] == API_VERSION and manifest["kind"] == KIND
    assert manifest["metadata"] == {"name": "plantwatch-plant-a-rules", "namespace": "plant-a"}
    assert [g["name"] for g in manifest["spec"]["groups"]] == sorted(r.name for r in SAMPLE.rules)
    assert why == {r.name: "" for r in SAMPLE.rules}
    for group in manifest["spec"]["groups"]:
        assert {a["alert"] for a in group["rules"]} == {group["name"]}
        assert all(a["labels"]["namespace"] == "plant-a" for a in group["rules"])


def test_threshold_levels_most_severe_first_each_muting_the_lower_ones():
    manifest, _ = render_prometheus_rule(SAMPLE, "plant-a")
    group = next(g for g in manifest["spec"]["groups"] if g["name"] == "machine-overtemperature")
    assert [a["labels"]["severity"] for a in group["rules"]] == ["emergency", "critical", "warning"]
    emergency, critical, warning = (a["expr"] for a in group["rules"])
    # the nodeSelector (line-1) resolved to node names: Prometheus knows no SensorNode labels
    assert 'node=~"esp32-press-01|rpi-line1-env",type="temperature"' in warning
    assert "unless" not in emergency
    assert critical.endswith(
        'unless on(node, sensor) ALERTS{alertname="machine-overtemperature",alertstate="firing",namespace="plant-a",severity="emergency"}'
    )
    assert warning.endswith('severity=~"critical|emergency"}')
    # hysteresis 2: a firing level holds above its level less 2
    assert ">= 70 or (" in warning and "> 68 and on(node, sensor) ALERTS{" in warning
    assert all(a["for"] == "2s" for a in group["rules"])
    assert group["rules"][0]["annotations"] == {
        "summary": '{{ $labels.node }} {{ $labels.sensor }} at {{ printf "%g" $value }} celsius (emergency)',
        "runbook_url": "https://plantwatch.example/runbooks/overtemperature",
    }


def test_below_levels_compare_downwards_and_hold_upwards():
    plant = with_rules(
        SAMPLE,
        rule(
            "pressure-low",
            "  selector: {sensor: boiler-pressure}\n  for: 1m30s\n"
            '  condition: {type: Threshold, threshold: {direction: Below, warning: "900", critical: "850", hysteresis: "5"}}\n'
            '  annotations: {summary: "{rule}: {node} at {value:.1f} {unit} ({level}) {unknown}"}',
        ),
    )
    manifest, _ = render_prometheus_rule(plant, "p")
    critical, warning = manifest["spec"]["groups"][0]["rules"]
    assert critical["expr"].startswith('(plantwatch_sensor_value{namespace="p",node="boiler-gateway",sensor="boiler-pressure"} <= 850 or (')
    assert "< 855 and on(node, sensor)" in critical["expr"]
    assert warning["for"] == "1m30s"
    assert warning["annotations"]["summary"] == (
        'pressure-low: {{ $labels.node }} at {{ printf "%.1f" $value }} {{ $labels.unit }} (warning) {unknown}'
    )


def test_absence_is_rendered_as_silent_and_unseen_per_node_or_per_series():
    manifest, _ = render_prometheus_rule(SAMPLE, "plant-a")
    silent, unseen = next(g for g in manifest["spec"]["groups"] if g["name"] == "node-silent")["rules"]
    assert silent["expr"].startswith('time() - max by (node) (plantwatch_sensor_last_seen_timestamp_seconds{namespace="plant-a",node=~"')
    assert silent["expr"].endswith(">= 10") and silent["for"] == "0s" and silent["labels"]["absence"] == "silent"
    assert unseen["for"] == "10s" and unseen["labels"]["absence"] == "unseen"
    assert unseen["expr"].count("absent(") == len(SAMPLE.nodes)
    assert 'absent(plantwatch_sensor_last_seen_timestamp_seconds{namespace="plant-a",node="coldroom-feed"})' in unseen["expr"]

    plant = with_rules(
        SAMPLE, rule("temp-silent", "  selector: {sensorType: temperature}\n  condition: {type: Absence, absence: {after: 2m}}")
    )
    silent, unseen = render_prometheus_rule(plant, "p")[0]["spec"]["groups"][0]["rules"]
    # last-seen series carry no type: joined with the value series of the same node and sensor
    assert "max by (node, sensor) (" in silent["expr"] and "and on(node, sensor) plantwatch_sensor_value{" in silent["expr"]
    assert silent["expr"].endswith(">= 120")
    assert (
        'absent(plantwatch_sensor_last_seen_timestamp_seconds{namespace="p",node="rpi-line1-env",sensor="air-temperature"})'
        in unseen["expr"]
    )


def test_anomaly_score_reads_its_detectors_scores_with_the_detectors_threshold_or_its_own():
    manifest, _ = render_prometheus_rule(SAMPLE, "plant-a")
    (alert,) = next(g for g in manifest["spec"]["groups"] if g["name"] == "bearing-anomaly")["rules"]
    assert alert["expr"] == (
        'plantwatch_sensor_value{namespace="plant-a",node="esp32-press-01",sensor="bearing-wear",type="anomaly_score"} > 0.6'
    )
    assert alert["labels"]["severity"] == "warning" and alert["for"] == "5s"
    plant = with_rules(
        SAMPLE, rule("strict", '  selector: {}\n  condition: {type: AnomalyScore, anomalyScore: {detector: bearing-wear, above: "0.9"}}')
    )
    (alert,) = render_prometheus_rule(plant, "p")[0]["spec"]["groups"][0]["rules"]
    assert alert["expr"].endswith("> 0.9")


def test_rules_prometheus_cannot_express_say_why():
    plant = with_rules(
        SAMPLE,
        rule("jump", '  selector: {sensor: spindle-speed}\n  condition: {type: RateOfChange, rateOfChange: {maxPerMinute: "100"}}'),
        rule("typo", '  selector: {sensor: spindel-speed}\n  condition: {type: Threshold, threshold: {warning: "1"}}'),
        rule("vib", '  selector: {sensorType: vibration}\n  condition: {type: Threshold, threshold: {warning: "5"}}'),
    )
    manifest, why = render_prometheus_rule(plant, "p")
    assert why["jump"] == RATE_NOT_EXPRESSIBLE and "consecutive readings" in why["jump"]
    assert "matches no series" in why["typo"]
    assert why["vib"] == ""
    assert [g["name"] for g in manifest["spec"]["groups"]] == ["vib"]


def test_node_names_are_escaped_in_the_regex_and_a_plant_without_rules_renders_nothing():
    node = yaml.safe_load((EXAMPLE_PLANT / "nodes.yaml").read_text().split("---")[0])
    node["metadata"]["name"] = "press.2"
    plant = with_rules(
        SAMPLE,
        rule("hot", '  selector: {sensor: temperature}\n  condition: {type: Threshold, threshold: {warning: "70"}}'),
        nodes=(parse_resource(node),),
    )
    (alert,) = render_prometheus_rule(plant, "p")[0]["spec"]["groups"][0]["rules"]
    assert 'node=~"coldroom-feed|esp32-press-01|press\\\\.2"' in alert["expr"]
    assert render_prometheus_rule(Plant(nodes=SAMPLE.nodes), "p") == (None, {})
