"""An AlertRule's summary template: numbers take a format spec, a broken template is a load error, never a lost alert."""

from __future__ import annotations

import pytest

from plantwatch.plant.load import PlantError, load_plant
from plantwatch.readings import Reading
from plantwatch.rules import summary
from plantwatch.rules.engine import RuleEngine
from tests.unit.test_plant_load import NODE


def test_placeholders_render_and_the_value_takes_a_number_format():
    text = summary.render("{rule}: {node}/{sensor} at {value:.1f} °C ({level}), see {runbook}", "hot", "press", "temp", 81.25, "critical")
    assert text == "hot: press/temp at 81.2 °C (critical), see {runbook}"
    assert summary.render(summary.DEFAULT, "hot", "press", "temp", 81.25, "warning") == "hot on press/temp: 81.25 (warning)"
    # An absence alert has no value: the placeholder is empty, whatever its spec.
    assert summary.render("{node} silent {value:.1f}", "quiet", "press", "*", None, "warning") == "press silent "


@pytest.mark.parametrize("template", ["{value:d}", "{value", "{0}", "{node.upper}", "{sensor[0]}", "{level!z}"])
def test_a_template_that_cannot_render_is_refused_at_load_with_the_placeholders(tmp_path, template):
    assert summary.check(template) is not None
    rule = (
        "apiVersion: plantwatch.io/v1alpha1\nkind: AlertRule\nmetadata: {name: hot}\nspec:\n"
        '  selector: {sensorType: temperature}\n  condition: {type: Threshold, threshold: {critical: "80"}}\n'
        f"  annotations: {{summary: {template!r}}}\n"
    )
    (tmp_path / "plant.yaml").write_text(NODE + "---\n" + rule)
    with pytest.raises(PlantError) as err:
        load_plant(tmp_path)
    (problem,) = err.value.problems
    assert "AlertRule hot" in problem and "spec.annotations.summary" in problem and "{value:.1f}" in problem, problem


def test_a_template_that_slipped_through_still_fires_its_alert_with_the_default_summary(tmp_path):
    rule = (
        "apiVersion: plantwatch.io/v1alpha1\nkind: AlertRule\nmetadata: {name: hot}\nspec:\n"
        '  selector: {sensorType: temperature}\n  condition: {type: Threshold, threshold: {critical: "80"}}\n'
        "  annotations: {summary: 'hot at {value:.1f}'}\n"
    )
    (tmp_path / "plant.yaml").write_text(NODE + "---\n" + rule)
    plant = load_plant(tmp_path)
    engine = RuleEngine(plant, 0.0)
    (fired,) = engine.on_reading(Reading("press", "temperature", "temperature", 91.0, 1.0))
    assert fired.summary == "hot at 91.0"
    # The same engine given a template that cannot render (a plant built without load_plant's checks).
    object.__setattr__(engine._compiled["hot"], "summary", "hot at {value:d}")
    (resolved,) = engine.on_reading(Reading("press", "temperature", "temperature", 20.0, 2.0))
    assert resolved.state == "resolved" and resolved.summary == "hot on press/temperature: 20 (critical resolved)"
