"""An AlertRule's summary template: numbers take a format spec, a broken template is a load error, never a lost alert."""

from __future__ import annotations

from dataclasses import replace

import pytest

from plantwatch.plant.load import PlantError, load_plant
from plantwatch.readings import Reading
from plantwatch.rules import summary
from plantwatch.rules.engine import RuleEngine
from tests.unit.test_plant_load import NODE

HOT = summary.Facts(
    "hot", "Threshold", "press", "temp", "firing", "critical", 81.25, "celsius", 80.0, "above", "press-3", "hall-1/line-2", 130.0
)


def test_placeholders_render_and_numbers_take_a_format():
    text = summary.render("{rule}: {node}/{sensor} at {value:.1f} °C ({level}), see {runbook}", HOT)
    assert text == "hot: press/temp at 81.2 °C (critical), see {runbook}"
    text = summary.render("{value} {unit} {direction} {threshold:.0f} on {equipment} at {location} for {duration}", HOT)
    assert text == "81.25 celsius above 80 on press-3 at hall-1/line-2 for 2m 10s"
    resolved = replace(HOT, state="resolved", value=77.5, threshold=78.0, direction="below", duration=300.0)
    assert (
        summary.render("{level}: {value} {direction} {threshold} after {duration}", resolved) == "critical resolved: 77.5 below 78 after 5m"
    )
    # An absence alert has no value, a node without equipment none: the placeholders are empty, whatever their spec.
    quiet = summary.Facts("quiet", "Absence", "press", "*", "resolved", "warning", None)
    assert summary.render("{node} silent {value:.1f}{equipment}{duration}", quiet) == "press silent "


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (0.46, "0.5s"), (9.96, "10s"), (130.2, "2m 10s"), (300, "5m"), (3605, "1h"), (3725, "1h 2m"), (90061, "1d 1h")],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert summary.human_duration(seconds) == text


def test_the_default_summary_names_value_unit_limit_equipment_location_and_duration():
    assert summary.default(HOT) == "temp 81.25 celsius on press (press-3 at hall-1/line-2) above the critical level 80, ongoing for 2m 10s"
    back = replace(HOT, state="resolved", value=77.5, threshold=78.0, direction="below", duration=300.0)
    assert summary.default(back) == "temp 77.5 celsius on press (press-3 at hall-1/line-2) back below 78 after 5m"
    low = replace(HOT, value=799.0, unit="hpa", threshold=800.0, direction="below", sensor="pressure")
    assert summary.default(low) == "pressure 799 hpa on press (press-3 at hall-1/line-2) below the critical level 800, ongoing for 2m 10s"
    rate = replace(HOT, condition="RateOfChange", severity="warning", threshold=30.0, duration=12.0)
    assert (
        summary.default(rate)
        == "temp 81.25 celsius on press (press-3 at hall-1/line-2) changing faster than 30 celsius per minute, ongoing for 12s"
    )
    assert summary.default(replace(rate, state="resolved", direction="below")) == (
        "temp 81.25 celsius on press (press-3 at hall-1/line-2) back under 30 celsius per minute after 12s"
    )
    score = replace(HOT, condition="AnomalyScore", sensor="press-iforest", value=0.93, unit="", threshold=0.8, duration=45.0)
    assert summary.default(score) == "anomaly score 0.93 from press-iforest on press (press-3 at hall-1/line-2) above 0.8, ongoing for 45s"
    assert summary.default(replace(score, state="resolved", value=0.2, direction="below")) == (
        "anomaly score 0.2 from press-iforest on press (press-3 at hall-1/line-2) back below 0.8 after 45s"
    )
    silent = replace(HOT, condition="Absence", sensor="temperature", value=10.0, unit="s", threshold=10.0, duration=10.0)
    assert summary.default(silent) == "no reading from press/temperature (press-3 at hall-1/line-2) for 10s (limit 10s)"
    assert (
        summary.default(replace(silent, sensor="*", duration=75.0))
        == "no reading from press (press-3 at hall-1/line-2) for 1m 15s (limit 10s)"
    )
    assert summary.default(replace(silent, state="resolved", value=20.0, unit="celsius", duration=45.0)) == (
        "press/temperature (press-3 at hall-1/line-2) reporting again after 45s without a reading"
    )


def test_the_default_summary_leaves_out_what_is_not_known():
    bare = replace(HOT, unit="", equipment=None, location=None, duration=0.2)
    assert summary.default(bare) == "temp 81.25 on press above the critical level 80"  # fired on its first reading
    assert summary.default(replace(bare, equipment="press-3")) == "temp 81.25 on press (press-3) above the critical level 80"
    assert summary.default(replace(bare, location="hall-1")) == "temp 81.25 on press (at hall-1) above the critical level 80"
    # Restored from a snapshot that predates `since`: the duration is unknown, not invented.
    assert summary.default(replace(bare, state="resolved", direction="below", duration=None)) == "temp 81.25 on press back below 80"


def test_the_new_placeholders_pass_the_load_check():
    assert summary.check("{sensor} {value:.1f} {unit} {direction} {threshold:.0f} at {equipment}/{location} for {duration}") is None


@pytest.mark.parametrize(
    "template", ["{value:d}", "{value", "{0}", "{node.upper}", "{sensor[0]}", "{level!z}", "{duration:.1f}", "{threshold:d}"]
)
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
    assert resolved.state == "resolved" and resolved.summary == "temperature 20 on press back below 80 after 1s"
