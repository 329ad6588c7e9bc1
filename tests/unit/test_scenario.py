"""The simulator's planner (sim/scenario.py): the default exercises the plant's own rules; choices are checked against the plant."""

from __future__ import annotations

import pytest
import yaml

from plantwatch.plant.load import load_plant, plant_from_documents
from plantwatch.rules.engine import CompiledRule
from plantwatch.sim.scenario import Interval, ScenarioError, parse_interval, plan
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.support.bench_plant import BENCH_PLANT

ABSENCE = """\
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: bench-silent}
spec:
  selector: {nodeSelector: {matchLabels: {site: bench}}}
  condition: {type: Absence, absence: {after: 15s}}
  receivers: [console]
"""


def bench(*extra: str, replace: tuple[str, str] = ("", "")):
    text = "---\n".join([BENCH_PLANT.replace(*replace), *extra])
    return plant_from_documents((f"bench[{i}]", d) for i, d in enumerate(yaml.safe_load_all(text)))


def readings(p, node: str, sensor: str, until: float, step: float = 0.25) -> list[tuple[float, float]]:
    """The series' mean at every `step` seconds: what the fleet draws its readings around."""
    return [(t * step, p.mean(node, sensor, t * step)[0]) for t in range(int(until / step))]


def rule(plant, name: str) -> CompiledRule:
    return CompiledRule.of(next(r for r in plant.rules if r.name == name), {})


def fired_levels(plant, p, node: str, sensor: str, name: str) -> list[str | None]:
    """The levels the rule's engine logic reaches along the series' path (consecutive repeats folded)."""
    compiled, seen, level = rule(plant, name), [None], None
    for _, v in readings(p, node, sensor, 60):
        level = compiled.level(v, level)
        if level != seen[-1]:
            seen.append(level)
    return seen


def test_the_default_fires_each_threshold_rule_of_a_users_plant_past_every_level_and_back():
    plant = bench()
    p = plan(plant)
    excursions = {(f.node, f.sensor): f for f in p.faults if f.kind == "excursion"}
    assert set(excursions) == {("chiller-1", "water-temperature"), ("compressor-1", "line-pressure")}
    # Above: up through warning to critical and back; Below: down (a pressure rule watching for a drop)
    for node, sensor, name in (("chiller-1", "water-temperature", "chiller-warm"), ("compressor-1", "line-pressure", "air-pressure-low")):
        levels = fired_levels(plant, p, node, sensor, name)
        assert levels[:3] == [None, "warning", "critical"] and levels[-1] is None, (name, levels)
    pressure = readings(p, "compressor-1", "line-pressure", 60)
    assert min(v for _, v in pressure) < 4 < 6 < pressure[0][1]
    # no Absence rule: no node falls silent
    assert not [f for f in p.faults if f.kind == "silence"]


def test_a_series_rests_on_the_good_side_of_the_rules_that_watch_it():
    """The chiller's rule warns at 8 °C, far below the simulator's usual 45 °C: it must not fire from the first reading."""
    p = plan(bench())
    mean, noise = p.resting[("chiller-1", "water-temperature")]
    assert mean + 4 * noise < 8 - 0.5  # below the level less the hysteresis
    mean, noise = p.resting[("compressor-1", "line-pressure")]
    assert 6 < mean - 4 * noise and mean + 4 * noise < 16


def test_the_first_level_is_held_past_the_rules_for():
    plant = bench(replace=("for: 3s", "for: 30s"))
    p = plan(plant)
    (excursion,) = [f for f in p.faults if f.sensor == "water-temperature"]
    past = [t for t, v in readings(p, "chiller-1", "water-temperature", excursion.end_s) if v >= 8]
    # held at least `for` plus a heartbeat beyond it, so a reading completes the 30 seconds
    assert past[-1] - past[0] >= 30 + 1
    assert "for 30s" in excursion.describe()


def test_silence_only_with_an_absence_rule_and_it_resolves():
    p = plan(bench(ABSENCE))
    (silence,) = [f for f in p.faults if f.kind == "silence"]
    assert silence.end_s - silence.start_s > 15  # longer than the rule's `after`: it fires, then the node is back
    assert "bench-silent" in silence.describe()
    excursion_nodes = {f.node: f.end_s for f in p.faults if f.kind == "excursion"}
    # both nodes carry an excursion: the silence waits for its node's to end, so that one still resolves
    assert silence.start_s >= excursion_nodes[silence.node]


def test_bad_payloads_stay_a_small_fraction_of_the_readings():
    p = plan(bench())
    (bad,) = [f for f in p.faults if f.kind == "bad"]
    assert bad.amount >= 10 / 2  # two readings a second: at most one bad message per ten readings
    (slow,) = [f for f in plan(bench(), interval="random:1-10").faults if f.kind == "bad"]
    assert slow.amount > bad.amount


def test_the_sample_plant_still_shows_escalation_silence_and_dead_letters():
    plant = load_plant(EXAMPLE_PLANT)
    p = plan(plant)
    levels = fired_levels(plant, p, "esp32-press-01", "temperature", "machine-overtemperature")
    assert levels[:4] == [None, "warning", "critical", "emergency"] and levels[-1] is None  # down through the levels, resolved
    (silence,) = [f for f in p.faults if f.kind == "silence"]
    assert silence.node == "coldroom-feed" and silence.start_s == 4
    assert [f.amount for f in p.faults if f.kind == "bad"] == [2.0]


def test_choices_name_node_sensor_value_and_time():
    p = plan(bench(), ["excursion:compressor-1/line-pressure@1+10", "drift:chiller-1=-2@5", "skew:chiller-1=30", "dropouts"])
    excursion, drift, skew, dropouts = p.faults
    assert (excursion.start_s, excursion.end_s) == (1, 11)
    assert drift.amount == -2 and p.mean("chiller-1", "water-temperature", 65)[0] == pytest.approx(
        p.resting[("chiller-1", "water-temperature")][0] - 2
    )
    assert skew.amount == 30 and skew.sensor is None
    assert dropouts.node is None and dropouts.amount == 0.3
    assert p.active("dropouts", "compressor-1", 3.0, "line-pressure") is dropouts
    assert p.active("skew", "compressor-1", 3.0) is None  # only chiller-1's clock is off
    assert plan(bench(), ["none"]).faults == ()
    assert "overheat" not in {f.kind for f in plan(bench(), ["overheat:chiller-1"]).faults}  # an alias of excursion


@pytest.mark.parametrize(
    ("choice", "said"),
    [
        ("overhaet", "unknown kind 'overhaet'; accepted: excursion, silence, bad, drift, dropouts, skew, duplicates, overheat"),
        ("silence:press-1", "no SensorNode 'press-1' in the plant; its nodes: chiller-1, compressor-1"),
        ("excursion:chiller-1/temp", "node chiller-1 has no sensor 'temp'; its sensors: water-temperature"),
        ("skew:chiller-1/water-temperature", "skew acts on a node's whole messages, not one sensor"),
        ("dropouts:chiller-1=1.5", "the VALUE of dropouts is the fraction affected, > 0 and <= 1; got 1.5"),
        ("silence:chiller-1@soon", "START 'soon': expected seconds (5, 2.5) or a duration (30s, 1m30s)"),
        ("silence:chiller-1@5+", "expected KIND[:NODE[/SENSOR]][=VALUE][@START[+DURATION]]"),
    ],
)
def test_a_wrong_choice_says_what_and_what_is_accepted(choice, said):
    with pytest.raises(ScenarioError) as err:
        plan(bench(), [choice])
    assert said in str(err.value) and repr(choice) in str(err.value)


def test_none_goes_alone():
    with pytest.raises(ScenarioError, match="--scenario none means clean readings: it cannot go with silence"):
        plan(bench(), ["none", "silence"])


def test_intervals():
    assert parse_interval("heartbeat") == Interval()
    assert parse_interval("random:1-10").bounds(2.0) == (1.0, 10.0)
    assert parse_interval("2").bounds(5.0) == (2.0, 2.0)
    with pytest.raises(ValueError, match="accepted: heartbeat"):
        parse_interval("random:10-1")


def test_a_dropped_sparkplug_reading_leaves_the_other_metrics_under_their_born_aliases():
    from plantwatch.ingest import sparkplug
    from plantwatch.sim.fleet import Fleet

    cell = load_plant(ROOT / "tests" / "integration" / "plants" / "sparkplug-cell.yaml")
    node = cell.nodes[0]
    fleet = Fleet(cell, "mqtt://127.0.0.1:1", "t", plan(cell, ["dropouts:cell-plc/temperature=1"]))  # never connected
    (birth,) = fleet.messages(node, 0.0, 1000.0)[-1:]
    born = {m.name: m.alias for m in sparkplug.decode_payload(birth[1]).metrics}
    (_, data), *_ = fleet.messages(node, 5.0, 1001.0)
    sent = sparkplug.decode_payload(data).metrics
    assert [m.alias for m in sent] == [born["Press/Current"]]  # the temperature dropped out; current keeps its alias


@pytest.mark.parametrize("choice", ["excursion:cam-hall-1", "drift:cam-hall-1"])
def test_a_camera_named_alone_is_refused_in_words(choice):
    cameras = load_plant(EXAMPLE_PLANT, ROOT / "examples" / "camera")
    with pytest.raises(ScenarioError, match="cam-hall-1 has no sensor with values \\(only images\\)"):
        plan(cameras, [choice])
