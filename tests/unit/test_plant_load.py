"""Reading a plant folder: what cannot run is refused before anything starts, every problem at once,
each naming the file and the resource."""

from __future__ import annotations

import shutil

import pytest
import yaml

from plantwatch.cli import main
from plantwatch.plant.load import PlantError, load_plant
from tests.conftest import EXAMPLE_PLANT

NODE = """apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: press, labels: {line: l1}}
spec:
  hardware: esp32
  payload: {format: esp32-json, topic: sensors/press}
  sensors:
    - {name: temperature, type: temperature}
    - {name: vibration, type: vibration}
"""


def rule(name: str, selector: str, receivers: str = "[console]", condition: str = 'type: Threshold, threshold: {critical: "80"}') -> str:
    return (
        f"apiVersion: plantwatch.io/v1alpha1\nkind: AlertRule\nmetadata: {{name: {name}}}\n"
        f"spec:\n  selector: {selector}\n  condition: {{{condition}}}\n  receivers: {receivers}\n"
    )


def problems(*paths) -> list[str]:
    with pytest.raises(PlantError) as err:
        load_plant(*paths)
    return err.value.problems


def test_an_empty_folder_is_not_a_plant(tmp_path, capsys):
    (tmp_path / "README.md").write_text("not a manifest")
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (problem,) = problems(tmp_path)
    assert str(tmp_path) in problem and "1 YAML file(s)" in problem and "cm.yaml" in problem
    assert "a plant needs at least one SensorNode" in problem
    assert main(["validate", "-f", str(tmp_path)]) == 1
    assert "valid:" not in capsys.readouterr().out


def test_some_resources_of_a_plant_validate_but_do_not_run(tmp_path, capsys):
    """A published DetectorModel is checked on its own; running it alone is refused (nothing to subscribe to)."""
    (tmp_path / "detector.yaml").write_text(
        "apiVersion: plantwatch.io/v1alpha1\nkind: DetectorModel\nmetadata: {name: pump-wear}\n"
        "spec:\n  source: {configMap: {name: pump-wear-model, key: model.onnx}}\n"
        "  features: {sensors: [temperature]}\n"
    )
    assert main(["validate", "-f", str(tmp_path)]) == 0
    assert "valid: 0 SensorNodes, 0 AlertRules, 1 DetectorModels (not a plant to run" in capsys.readouterr().out
    (problem,) = problems(tmp_path)
    assert "a plant needs at least one SensorNode" in problem


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text (byte 0x89 at offset 0); a plant file must be UTF-8 YAML"),
        ("metadata: {name: caf\u00e9}\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 20)"),
        (b"kind: x\x00\n", "offset 7: not valid YAML: character 0x0000 is not allowed"),
        (b"kind: [\n", "line 2, column 1: not valid YAML"),
    ],
)
def test_an_unreadable_file_is_named_with_what_is_accepted(tmp_path, content, expected):
    shutil.copytree(EXAMPLE_PLANT, tmp_path, dirs_exist_ok=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yaml").write_bytes(content)
    (problem,) = problems(tmp_path)
    assert problem.startswith(f"{tmp_path / 'sub' / 'bad.yaml'}: ") and expected in problem, problem


def test_duplicate_keys_are_refused_with_file_line_and_resource(tmp_path):
    (tmp_path / "node.yaml").write_text(NODE.replace("  hardware: esp32\n", "  hardware: esp32\n  hardware: jetson\n"))
    (tmp_path / "rules.yaml").write_text(rule("hot", "{sensorType: temperature, sensorType: vibration}"))
    found = problems(tmp_path)
    assert f"{tmp_path / 'node.yaml'} (SensorNode press): line 6, column 3: duplicate key 'hardware' (first at line 5)" in found[0]
    assert f"{tmp_path / 'rules.yaml'} (AlertRule hot): line 5, column 39: duplicate key 'sensorType' (first at line 5)" in found[1]
    assert len(found) == 2


def test_merge_keys_are_not_duplicates(tmp_path):
    (tmp_path / "node.yaml").write_text(
        NODE.replace("metadata: {name: press, labels: {line: l1}}", "metadata:\n  <<: {name: base, labels: {line: l1}}\n  name: press")
    )
    assert [n.name for n in load_plant(tmp_path).nodes] == ["press"]


def test_rules_that_watch_nothing_or_notify_nobody_are_all_listed(tmp_path):
    (tmp_path / "node.yaml").write_text(NODE)
    (tmp_path / "rules.yaml").write_text(
        "---\n".join(
            [
                rule("typo", "{sensor: temprature}"),
                rule("other-line", "{sensorType: temperature, nodeSelector: {matchLabels: {line: l2}}}"),
                rule("wrong-type", "{sensorType: humidity}", receivers="[console, pager]"),
                rule("fine", "{sensorType: vibration}"),
                rule("silent", "{}", condition="type: Absence, absence: {after: 10s}"),
            ]
        )
    )
    where = tmp_path / "rules.yaml"
    assert problems(tmp_path) == [
        f"{where} (AlertRule typo): spec.selector matches no sensor of any SensorNode: nothing has sensor 'temprature' "
        "(sensors: temperature, vibration)",
        f"{where}#1 (AlertRule other-line): spec.selector matches no sensor of any SensorNode: nothing has sensorType "
        "'temperature' (types: temperature, vibration) and its nodeSelector",
        f"{where}#2 (AlertRule wrong-type): spec.selector matches no sensor of any SensorNode: nothing has sensorType "
        "'humidity' (types: temperature, vibration)",
        f"{where}#2 (AlertRule wrong-type): spec.receivers: no AlertReceiver named 'pager' in the plant (known: console); "
        "define an AlertReceiver of that name or use one of these",
    ]


def test_an_anomaly_rule_needs_a_detector_that_scores_some_node(tmp_path):
    shutil.copytree(EXAMPLE_PLANT, tmp_path, dirs_exist_ok=True)
    detectors = tmp_path / "detectors.yaml"
    detectors.write_text(detectors.read_text().replace("plantwatch.io/line: line-1", "plantwatch.io/line: line-9"))
    lonely, problem = problems(tmp_path)
    assert lonely.startswith(
        f"{detectors} (DetectorModel bearing-wear): spec.features.nodeSelector (plantwatch.io/line=line-9) selects none"
    )
    assert problem.startswith(f"{tmp_path / 'rules.yaml'}#3 (AlertRule bearing-anomaly): spec.selector matches no sensor")
    assert "the scores of DetectorModel 'bearing-wear', which it scores on 0 node(s)" in problem


def test_a_detector_naming_a_sensor_no_node_has_is_refused_naming_what_each_node_lacks(tmp_path, capsys):
    """Otherwise it would be served, report itself healthy, and never score a reading."""
    shutil.copytree(EXAMPLE_PLANT, tmp_path, dirs_exist_ok=True)
    detectors = tmp_path / "detectors.yaml"
    detectors.write_text(detectors.read_text().replace("[temperature, vibration, current]", "[temperature, vibration, motor_current]"))
    assert main(["validate", "-f", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{detectors} (DetectorModel bearing-wear): spec.features.sensors: no SensorNode its nodeSelector selects has all of "
        "temperature, vibration, motor_current, so the DetectorModel scores nothing (esp32-press-01 lacks motor_current, "
        "jetson-cell-01 lacks temperature, vibration, motor_current, rpi-line1-env lacks temperature, vibration, motor_current)"
    ) in err
    # published alone, the same DetectorModel has no plant to be checked against
    assert main(["validate", "-f", str(detectors)]) == 0


def test_the_shipped_plants_validate(capsys):
    assert main(["validate", "-f", str(EXAMPLE_PLANT)]) == 0
    assert capsys.readouterr().out.startswith("valid: 5 SensorNodes, 4 AlertRules")


def test_the_operator_refuses_the_rules_the_gateway_would_refuse():
    """The operator keeps a refused rule out of the gateway's config (Accepted=False with the reason),
    so `serve ingest`'s load_plant never meets it."""
    from plantwatch.plant.load import plant_series
    from plantwatch_operator.verdicts import parse, rule_verdict

    node = yaml.safe_load(NODE)
    series = plant_series([parse(node)], [])
    verdict = lambda text: rule_verdict(yaml.safe_load(text), set(), series)[:2]  # noqa: E731
    assert verdict(rule("fine", "{sensorType: vibration}")) == ("True", "Loaded")
    assert verdict(rule("typo", "{sensor: temprature}")) == ("False", "NoMatchingSeries")
    assert verdict(rule("paged", "{sensorType: vibration}", receivers="[pager]")) == ("False", "UnknownReceiver")
