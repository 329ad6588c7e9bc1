"""Plant manifests are validated locally by the same CRD files the API server enforces."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from plantwatch.plant.load import PlantError, load_plant, plant_from_documents
from plantwatch.plant.model import ManifestError, parse_resource
from plantwatch.plant.schema import crd_schemas
from tests.conftest import EXAMPLE_PLANT, ROOT


def docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((EXAMPLE_PLANT / name).read_text()))


def errors_of(doc: dict) -> list[str]:
    with pytest.raises(ManifestError) as err:
        parse_resource(doc)
    return [str(e) for e in err.value.errors]


def test_sample_plant_is_valid_and_complete(plant):
    formats = {n.spec.payload.format for n in plant.nodes}
    assert {"esp32-json", "rpi-json", "sensor-event"} <= formats and len(plant.nodes) >= 4
    kinds = {r.spec.condition.type for r in plant.rules}
    assert {"Threshold", "Absence"} <= kinds
    assert len(plant.detectors) == 1


def test_defaults_come_from_the_schema():
    node = copy.deepcopy(docs("nodes.yaml")[1])
    del node["spec"]["heartbeat"]
    parsed = parse_resource(node)
    assert parsed.spec.heartbeat.interval == "10s" and parsed.spec.heartbeat.missed_beats == 3
    assert parsed.spec.payload.max_bytes == 65536
    rule = parse_resource(docs("rules.yaml")[1])
    assert rule.spec.receivers == ("console",) and rule.spec.for_ == "0s"
    assert rule.spec.condition.threshold.direction == "Above"


def test_unknown_sensor_type_names_the_field_and_the_accepted_values():
    node = copy.deepcopy(docs("nodes.yaml")[0])
    node["spec"]["sensors"][0]["type"] = "smell"
    (msg,) = errors_of(node)
    assert msg.startswith('spec.sensors[0].type: Unsupported value: "smell": supported values: "temperature"')


def test_warning_above_critical_is_rejected():
    rule = copy.deepcopy(docs("rules.yaml")[0])
    rule["spec"]["condition"]["threshold"]["warning"] = "90"
    (msg,) = errors_of(rule)
    assert msg.startswith("spec.condition.threshold.warning: Invalid value")
    assert "less severe than the critical level" in msg


def _levels(warning, critical) -> dict:
    rule = copy.deepcopy(docs("rules.yaml")[0])
    rule["spec"]["condition"]["threshold"].update(warning=warning, critical=critical)
    del rule["spec"]["condition"]["threshold"]["emergency"]
    rule["spec"]["receivers"] = ["console"]
    return rule


@pytest.mark.parametrize("warning, critical", [(70, 80), ("70", 80), (70, "80"), ("70", "80"), (70.0, "80.0"), (-40, "-39.5")])
def test_levels_are_numbers_written_plainly_or_as_decimal_strings(warning, critical):
    spec = parse_resource(_levels(warning, critical)).spec.condition.threshold
    assert (spec.warning, spec.critical) == (float(warning), float(critical))
    # The order rule compares the values whatever their form.
    assert any("less severe than the critical level" in m for m in errors_of(_levels(critical, warning)))


def test_a_level_renders_alike_in_either_form():
    from plantwatch.alerts.promrule import render_prometheus_rule
    from plantwatch.rules.engine import CompiledRule

    plain, quoted = parse_resource(_levels(70, 80)), parse_resource(_levels("70", "80.0"))
    assert CompiledRule.of(plain, {}) == CompiledRule.of(quoted, {})
    rendered = [
        render_prometheus_rule(plant_from_documents([("t", d) for d in (rule, *docs("nodes.yaml"))]), "ns")[0]
        for rule in (_levels(70, 80), _levels("70", "80.0"))
    ]
    assert rendered[0] == rendered[1]
    exprs = [r["expr"] for g in rendered[0]["spec"]["groups"] for r in g["rules"]]
    assert any(">= 70 " in e or e.endswith(">= 70") for e in exprs) and not any("70.0" in e for e in exprs), exprs


@pytest.mark.parametrize(
    "value, shown", [(85.5, '"number"'), (True, '"boolean"'), ([1], '"array"'), ({}, '"object"'), ("abc", '"abc"'), ("8e1", '"8e1"')]
)
def test_a_bad_level_names_the_field_and_what_is_accepted(value, shown):
    rule = _levels(70, 80)
    rule["spec"]["condition"]["threshold"]["warning"] = value
    (msg,) = errors_of(rule)
    assert msg.startswith(f"spec.condition.threshold.warning: Invalid value: {shown}: "), msg
    assert "decimal string such as" in msg or "should match" in msg


def test_detector_without_source_is_rejected():
    model = copy.deepcopy(docs("detectors.yaml")[0])
    del model["spec"]["source"]
    assert errors_of(model) == ["spec.source: Required value"]
    model["spec"]["source"] = {"configMap": {"name": "a"}, "pvc": {"claimName": "b", "path": "m.onnx"}}
    (msg,) = errors_of(model)
    assert msg.startswith("spec.source: Invalid value") and "exactly one of configMap, url, pvc" in msg


def test_a_shadow_model_comes_from_one_mountable_source():
    model = copy.deepcopy(docs("detectors.yaml")[0])
    model["spec"]["shadow"] = {"configMap": {"name": "candidate"}}
    assert parse_resource(model).spec.shadow.config_map.key == "model.onnx"
    model["spec"]["shadow"] = {"configMap": {"name": "a"}, "pvc": {"claimName": "b", "path": "m.onnx"}}
    (msg,) = errors_of(model)
    assert msg.startswith("spec.shadow: Invalid value") and "exactly one of configMap, pvc" in msg
    # The service scores a shadow read from a path only; a download is no shadow source.
    model["spec"]["shadow"] = {"url": {"url": "https://models.example/c.onnx", "sha256": "a" * 64}}
    assert any(m.startswith("spec.shadow.url: ") for m in errors_of(model))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["spec"].update(bogus=1), "spec.bogus: unknown field"),
        (lambda d: d["spec"]["sensors"].append(dict(d["spec"]["sensors"][0])), "spec.sensors[4]: Duplicate value"),
        (lambda d: d["spec"]["sensors"][0].update(range={"min": "10", "max": "1"}), "spec.sensors[0].range.min: Invalid value"),
        (lambda d: d["spec"]["payload"].update(topic="sensors/#"), "spec.payload.topic: Invalid value"),
        (lambda d: d["spec"]["heartbeat"].update(interval="soon"), 'spec.heartbeat.interval: Invalid value: "soon"'),
        (lambda d: d["spec"].update(hardware=3), "spec.hardware: Invalid value: 3: must be of type string"),
        (lambda d: d["metadata"].update(name="Press_1"), "metadata.name: Invalid value"),
        (
            lambda d: d["spec"].update(maintenanceWindows=[{"name": "w", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}]),
            "spec.maintenanceWindows[0].end: Invalid value",
        ),
    ],
)
def test_sensor_node_errors(mutate, expected):
    node = copy.deepcopy(docs("nodes.yaml")[0])
    mutate(node)
    assert any(e.startswith(expected) for e in errors_of(node)), errors_of(node)


def test_plant_cross_checks_report_every_problem():
    nodes = docs("nodes.yaml")
    twin = copy.deepcopy(nodes[1])
    twin["metadata"]["name"] = "twin"
    twin["spec"]["payload"]["topic"] = nodes[0]["spec"]["payload"]["topic"]
    rule = copy.deepcopy(docs("rules.yaml")[3])
    rule["spec"]["condition"]["anomalyScore"]["detector"] = "missing"
    with pytest.raises(PlantError) as err:
        plant_from_documents([("a", nodes[0]), ("b", twin), ("c", rule), ("d", ["not", "a", "mapping"])])
    text = str(err.value)
    assert "already used by SensorNode esp32-press-01" in text
    assert "names no DetectorModel" in text
    assert "d: not a Kubernetes object" in text


def test_load_plant_reports_missing_paths_and_bad_yaml(tmp_path):
    with pytest.raises(PlantError, match="no such file"):
        load_plant(tmp_path / "nope")
    (tmp_path / "bad.yaml").write_text("kind: [")
    with pytest.raises(PlantError, match="not valid YAML"):
        load_plant(tmp_path)


def test_crds_are_the_package_schemas():
    """One source of truth: the package reads crds/ itself (no copy that could drift)."""
    shipped = {s.kind for s in crd_schemas().values()}
    assert shipped == {"SensorNode", "AlertRule", "DetectorModel", "AlertReceiver"}
    on_disk = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in (ROOT / "crds").glob("*.yaml")}
    assert shipped == on_disk


def schema_nodes():
    """(path, name, schema) of every property and list item of every CRD."""

    def walk(schema, path):
        for name, sub in schema.get("properties", {}).items():
            yield f"{path}.{name}", name, sub
            yield from walk(sub, f"{path}.{name}")
        if "items" in schema:
            yield path + "[]", None, schema["items"]
            yield from walk(schema["items"], path + "[]")

    for s in crd_schemas().values():
        yield from walk(s.root, s.kind)


def test_every_crd_field_is_described():
    for path, name, sub in schema_nodes():
        if name is not None and name != "metadata":
            assert sub.get("description"), f"{path} has no description"


def test_every_default_is_valid_against_its_own_schema():
    """The API server refuses a CRD whose defaults break its own rules; find that here first."""
    from plantwatch.plant.schema import _validate

    defaults = [(path, sub) for path, _name, sub in schema_nodes() if "default" in sub]
    assert len(defaults) > 10
    for path, sub in defaults:
        errors = []
        _validate(sub, sub["default"], path, errors)
        assert errors == [], errors


def test_generated_spec_classes_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
