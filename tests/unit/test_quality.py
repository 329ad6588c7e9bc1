"""A node's data quality as the pipeline sees it (ingest/quality.py): values out of their declared range,
Sparkplug sequence breaks and clock skew over a sliding window, the conditions judged from them, when
they are worth a status write, and the token bucket that paces those writes."""

from __future__ import annotations

import yaml

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.formats import encode
from plantwatch.ingest.node_status import NodeStatusReporter
from plantwatch.ingest.periodic import TokenBucket
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.quality import Thresholds, change_key, judge
from plantwatch.plant.load import load_plant, plant_from_documents
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT

NOW = 1767254400.0
PRESS, TOPIC = "esp32-press-01", "sensors/hall-1/esp32-press-01/data"
SPARKPLUG = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: cell-plc}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {format: sparkplug-b, topic: spBv1.0/plant-a/DDATA/edge-7/press-3}
  sensors:
    - {name: temperature, type: temperature, field: Press/Temperature, range: {min: "-40", max: "200"}}
"""


def press(ts: float, temperature: float = 45.0) -> tuple[str, bytes]:
    return TOPIC, encode("esp32-json", PRESS, ts, {"temperature_c": temperature, "vibration_g": 0.5, "current_a": 10.0})


def example(tmp_path) -> Pipeline:
    return Pipeline(load_plant(str(EXAMPLE_PLANT)), SqliteStore(tmp_path / "p.db"), now=NOW)


def test_out_of_range_values_are_counted_per_sensor_with_their_declared_range(tmp_path):
    p = example(tmp_path)
    # 10 messages of 3 values each; 2 temperatures above the declared 125 celsius
    p.prepare([press(NOW + i, 130.0 if i in (3, 7) else 45.0) for i in range(10)], NOW + 10)
    f = p.quality(NOW + 10)[PRESS]
    assert (f.checked, f.out_of_range) == (30, 2)
    assert f.by_sensor == (("temperature", 2, "[-40, 125] celsius"),)
    in_range, sequential, clock = judge(f, Thresholds())
    assert (in_range.status, in_range.reason) == ("False", "OutOfRange")
    assert in_range.message.startswith(
        "6.7 % of readings out of range in the last 5 min (2 of 30; temperature outside [-40, 125] celsius: 2)"
    )
    assert (sequential.status, sequential.reason) == ("Unknown", "NoSequenceNumbers")
    assert f.status()["outOfRangePercent"] == "6.7" and "sequencedMessages" not in f.status()
    # under a looser limit the same figures are in range
    assert judge(f, Thresholds(max_out_of_range_percent=10.0))[0].status == "True"


def test_the_window_slides_out_old_figures(tmp_path):
    p = example(tmp_path)
    p.prepare([press(NOW, 130.0)], NOW)
    p.prepare([press(NOW + 200)], NOW + 200)
    assert p.quality(NOW + 200)[PRESS].out_of_range == 1
    late = p.quality(NOW + 400)[PRESS]  # the first message's bucket is past the 300 s window, the second's is not
    assert (late.checked, late.out_of_range) == (3, 0)
    assert judge(p.quality(NOW + 600)[PRESS], Thresholds())[0].reason == "NoReadings"


def test_clock_skew_is_the_median_and_worst_payload_minus_receive_time(tmp_path):
    p = example(tmp_path)
    # the press's clock runs 30 s ahead, once 200 s; one message 400 s ahead is refused (--max-future 300 s)
    p.prepare([press(NOW + i + 30) for i in range(8)] + [press(NOW + 200)], NOW)
    p.prepare([press(NOW + 400)], NOW)
    f = p.quality(NOW)[PRESS]
    assert (f.skew_median, f.skew_worst, f.timestamped, f.refused_skew) == (34.0, 200.0, 9, 1)
    verdict = judge(f, Thresholds())[2]
    assert (verdict.status, verdict.reason) == ("False", "ClockSkew")
    assert verdict.message == (
        "median skew +34.0s, worst +200.0s over 9 messages in the last 5 min; 1 messages refused for their timestamp "
        "(payload time minus receive time; limit ±10s)"
    )
    in_sync = example(tmp_path)
    in_sync.prepare([press(NOW + i) for i in range(5)], NOW + 5)
    assert judge(in_sync.quality(NOW + 5)[PRESS], Thresholds())[2].status == "True"


def test_a_node_without_timestamps_says_nothing_about_its_clock(tmp_path):
    p = example(tmp_path)
    p.prepare([("sensors/hall-1/jetson-cell-01/metrics", b"spindle spindle_current=4.5,spindle_speed=1200")], NOW)
    f = p.quality(NOW)["jetson-cell-01"]
    assert f.checked == 2 and f.skew_median is None
    assert judge(f, Thresholds())[2].reason == "NoTimestamps"


def sparkplug_message(kind: str, seq: int, value: float | None = None) -> tuple[str, bytes]:
    device = "press-3" if kind.startswith("D") else None
    metrics = () if value is None else (sp.Metric("Press/Temperature", None, None, sp.DOUBLE, value),)
    return sp.topic(sp.Topic("plant-a", kind, "edge-7", device)), sp.encode_payload(sp.Payload(int(NOW * 1000), seq, metrics))


def test_sparkplug_sequence_breaks_make_the_node_not_sequential(tmp_path):
    p = Pipeline(plant_from_documents([("node", yaml.safe_load(SPARKPLUG))]), SqliteStore(tmp_path / "p.db"), now=NOW)
    in_order = [sparkplug_message("NBIRTH", 0), *(sparkplug_message("DDATA", s, 20.0) for s in range(1, 9))]
    p.prepare(in_order, NOW)
    f = p.quality(NOW)["cell-plc"]
    assert (f.messages, f.breaks) == (8, 0)  # the NBIRTH names the edge node, not the device
    assert judge(f, Thresholds())[1].reason == "InSequence"
    # seq 9 and 10 lost: 11 breaks the sequence, and 12 (before the rebirth) too
    p.prepare([sparkplug_message("DDATA", 11, 20.0), sparkplug_message("DDATA", 12, 20.0)], NOW + 1)
    f = p.quality(NOW + 1)["cell-plc"]
    assert (f.messages, f.breaks, f.status()["sequenceBreakPercent"]) == (10, 2, "20.0")
    verdict = judge(f, Thresholds())[1]
    assert (verdict.status, verdict.reason) == ("False", "SequenceGaps")
    assert verdict.message.startswith("20.0 % of Sparkplug messages out of sequence in the last 5 min (2 of 10")
    assert judge(f, Thresholds(max_gap_percent=25.0))[1].status == "True"


def test_a_write_is_due_when_a_condition_or_a_figure_bucket_changes_not_on_every_count(tmp_path):
    p = example(tmp_path)
    for i in range(100):
        p.prepare([press(NOW + i)], NOW + i)
    before = p.quality(NOW + 100)[PRESS]
    for i in range(101, 151):
        p.prepare([press(NOW + i)], NOW + i)
    more = p.quality(NOW + 150)[PRESS]
    assert more.checked != before.checked
    assert change_key(more, judge(more, Thresholds())) == change_key(before, judge(before, Thresholds()))
    p.prepare([press(NOW + 151, 130.0)], NOW + 151)  # 1 of 453 values: 0.2 %, a new bucket, still True
    one = p.quality(NOW + 151)[PRESS]
    assert judge(one, Thresholds())[0].status == "True"
    assert change_key(one, judge(one, Thresholds())) != change_key(more, judge(more, Thresholds()))


def test_the_reporter_writes_flipped_conditions_first_then_changed_figures_then_refreshes(tmp_path):
    p = example(tmp_path)
    reporter = NodeStatusReporter(p, "plant", refresh_s=60.0)
    first = reporter.due(NOW, p.quality(NOW))
    assert len(first) == 5  # every node once, at first
    for node, conditions, key in first:
        assert {c["type"] for c in conditions} == {"Online", "InRange", "Sequential", "ClockInSync"}
        reporter.written(node, conditions, key, NOW)
    assert reporter.due(NOW + 5, p.quality(NOW + 5)) == []  # nothing changed: nothing written
    p.prepare([press(NOW + 6, 130.0)], NOW + 6)  # the press reports (Online flips) with a temperature out of range
    (node, conditions, key), *rest = reporter.due(NOW + 7, p.quality(NOW + 7))
    assert node == PRESS and rest == []
    statuses = {c["type"]: c["status"] for c in conditions}
    assert statuses == {"Online": "True", "InRange": "False", "Sequential": "Unknown", "ClockInSync": "True"}
    reporter.written(node, conditions, key, NOW + 7)
    # A minute on: the press fell silent (a flip, first), the others are due for their refresh, oldest first
    later = reporter.due(NOW + 61, p.quality(NOW + 61))
    assert [n for n, _, _ in later] == [PRESS, *sorted(n for n in p.silence if n != PRESS)]
    assert later[0][1][0]["reason"] == "Silent"


def test_the_token_bucket_allows_its_rate_after_its_burst():
    bucket = TokenBucket(20.0, 20.0, 0.0)
    now, taken = 0.0, 0
    while now < 10.0:  # 10 s of a writer that never stops
        wait = bucket.wait(now)
        if wait:
            now += wait
            continue
        bucket.take(now)
        taken += 1
    assert taken == 20 + 199  # the burst at 0, then one every 1/20 s from 0.05 to 9.95
