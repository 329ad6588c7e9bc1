"""A node's data quality through a real mosquitto and a running gateway: what its SensorNode's conditions say.

Readings out of their declared range, a node whose clock runs a minute ahead (and one message beyond the
gateway's --max-future, refused), and a Sparkplug B edge node that loses messages are published over MQTT
as nodes would; the conditions are read through the very function the gateway's node status writer
applies (node_status.node_conditions), from the running pipeline's own figures.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.formats import encode
from plantwatch.ingest.node_status import node_conditions
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.quality import Thresholds
from plantwatch.ingest.runner import IngestService
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.support.process import wait_for

PRESS, PRESS_TOPIC = "press-4", "sensors/hall-4/press-4/data"
CLOCK, CLOCK_TOPIC = "dryer-2", "sensors/hall-4/dryer-2/data"
PLC = "cell-plc"
PLANT = f"""
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {{name: {PRESS}}}
spec:
  hardware: esp32
  payload: {{format: esp32-json, topic: {PRESS_TOPIC}}}
  sensors:
    - {{name: temperature, type: temperature, unit: celsius, field: temperature_c, range: {{min: "-40", max: "125"}}}}
---
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {{name: {CLOCK}}}
spec:
  hardware: esp32
  payload: {{format: esp32-json, topic: {CLOCK_TOPIC}}}
  sensors:
    - {{name: temperature, type: temperature, unit: celsius, field: temperature_c}}
---
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {{name: {PLC}}}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {{format: sparkplug-b, topic: spBv1.0/plant-a/DDATA/edge-7/press-3}}
  sensors:
    - {{name: temperature, type: temperature, field: Press/Temperature, range: {{min: "-40", max: "200"}}}}
"""


@pytest.fixture
def gateway(tmp_path):
    """mosquitto, a gateway on it (the pipeline and its MQTT service, as `serve ingest` runs them) and a publisher."""
    (tmp_path / "plant.yaml").write_text(PLANT)
    broker = start_mosquitto()
    pipeline = Pipeline(load_plant(str(tmp_path / "plant.yaml")), SqliteStore(tmp_path / "gw.db"))
    service = IngestService(pipeline, broker.url, client_id="gw-quality")
    service.start()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="nodes")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        yield pipeline, client
    finally:
        client.loop_stop()
        client.disconnect()
        service.stop()
        broker.stop()


def publish(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1, in order, each acknowledged by the broker: what reaches the gateway is exactly these."""
    for topic, body in messages:
        client.publish(topic, body, qos=1).wait_for_publish(10)


def conditions(pipeline: Pipeline, node: str, thresholds: Thresholds | None = None) -> dict[str, dict]:
    now = time.time()
    listed, _ = node_conditions(pipeline.presence(now)[node], pipeline.quality(now)[node], thresholds or Thresholds(), {}, now)
    return {c["type"]: c for c in listed}


def received(pipeline: Pipeline, node: str, readings: int, rejected: int) -> Callable[[], bool]:
    def check() -> bool:
        f = pipeline.quality(time.time())[node]
        return f.checked >= readings and f.out_of_range + f.refused_skew + f.breaks >= rejected

    return check


def test_values_outside_their_declared_range_turn_in_range_false_with_the_rate(gateway):
    pipeline, client = gateway
    now = time.time()
    # 20 readings, 10 ms apart, 3 of them above the declared 125 celsius: 15 %
    publish(
        client,
        [(PRESS_TOPIC, encode("esp32-json", PRESS, now - i / 100, {"temperature_c": 130.0 if i % 7 == 0 else 60.0})) for i in range(20)],
    )
    wait_for("the gateway counts all 20 values", received(pipeline, PRESS, 20, 3))
    c = conditions(pipeline, PRESS)
    assert (c["InRange"]["status"], c["InRange"]["reason"]) == ("False", "OutOfRange")
    assert c["InRange"]["message"] == (
        "15.0 % of readings out of range in the last 5 min (3 of 20; temperature outside [-40, 125] celsius: 3); limit 1 %"
    )
    assert (c["Sequential"]["status"], c["Sequential"]["reason"]) == ("Unknown", "NoSequenceNumbers")
    assert (c["ClockInSync"]["status"], c["ClockInSync"]["reason"]) == ("True", "InSync")  # stamped now: no skew
    assert c["Online"]["status"] == "True"
    # the same figures under an operator's looser limit are within range, with the same rate
    loose = conditions(pipeline, PRESS, Thresholds(max_out_of_range_percent=20.0))["InRange"]
    assert (loose["status"], loose["reason"]) == ("True", "WithinRange") and loose["message"].startswith("15.0 % of readings")


def test_a_clock_a_minute_ahead_turns_clock_in_sync_false_with_the_median_skew(gateway):
    pipeline, client = gateway
    publish(client, [(CLOCK_TOPIC, encode("esp32-json", CLOCK, time.time() + 60.0, {"temperature_c": 40.0})) for _ in range(10)])
    wait_for("the gateway reads the 10 skewed readings", received(pipeline, CLOCK, 10, 0))
    c = conditions(pipeline, CLOCK)["ClockInSync"]
    assert (c["status"], c["reason"]) == ("False", "ClockSkew")
    m = re.fullmatch(
        r"median skew \+(\S+)s, worst \+(\S+)s over 10 messages in the last 5 min \(payload time minus receive time; limit ±10s\)",
        c["message"],
    )
    assert m, c["message"]
    assert 55.0 <= float(m.group(1)) <= 60.0 and 55.0 <= float(m.group(2)) <= 60.0  # ahead by a minute, less the delivery
    assert conditions(pipeline, CLOCK, Thresholds(max_clock_skew_s=120.0))["ClockInSync"]["status"] == "True"
    # one message an hour ahead, beyond the gateway's --max-future (5 min): refused, and the clock is out
    # of sync under any skew limit, since that reading was lost
    publish(client, [(CLOCK_TOPIC, encode("esp32-json", CLOCK, time.time() + 3600.0, {"temperature_c": 40.0}))])
    wait_for("the gateway refuses the hour-ahead reading", received(pipeline, CLOCK, 10, 1))
    c = conditions(pipeline, CLOCK, Thresholds(max_clock_skew_s=120.0))["ClockInSync"]
    assert (c["status"], c["reason"]) == ("False", "ClockSkew")
    assert "; 1 messages refused for their timestamp (payload time minus receive time; limit ±120s)" in c["message"]
    assert pipeline.quality(time.time())[CLOCK].status()["clockSkewRefused"] == 1


def sparkplug(kind: str, seq: int, *metrics: sp.Metric) -> tuple[str, bytes]:
    """A message of edge-7 (device press-3); a millisecond apart per seq, as two readings may not share a time."""
    t = sp.Topic("plant-a", kind, "edge-7", "press-3" if kind.startswith("D") else None)
    return sp.topic(t), sp.encode_payload(sp.Payload(int(time.time() * 1000) + seq, seq, tuple(metrics)))


def test_a_sparkplug_sequence_break_turns_sequential_false_with_the_rate(gateway):
    pipeline, client = gateway
    birth = [sparkplug("NBIRTH", 0), sparkplug("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 61.0))]
    data = [sparkplug("DDATA", seq, sp.Metric(None, 1, None, sp.DOUBLE, 61.0 + seq)) for seq in range(2, 10)]
    publish(client, birth + data)  # the device's messages: its birth and data (NBIRTH is the edge node's)
    wait_for("the gateway stores the birth and 8 readings", received(pipeline, PLC, 9, 0))
    c = conditions(pipeline, PLC)["Sequential"]
    assert (c["status"], c["reason"]) == ("True", "InSequence")
    assert c["message"] == "0.0 % of Sparkplug messages out of sequence in the last 5 min (0 of 9); limit 0 %"
    publish(client, [sparkplug("DDATA", 14, sp.Metric(None, 1, None, sp.DOUBLE, 70.0))])  # seq 10..13 were lost
    wait_for("the gateway counts the break", received(pipeline, PLC, 9, 1))
    c = conditions(pipeline, PLC)["Sequential"]
    assert (c["status"], c["reason"]) == ("False", "SequenceGaps")
    assert c["message"] == (
        "10.0 % of Sparkplug messages out of sequence in the last 5 min (1 of 10: messages lost, rebirth requested); limit 0 %"
    )
    q = pipeline.quality(time.time())[PLC].status()
    assert (q["sequencedMessages"], q["sequenceBreaks"], q["sequenceBreakPercent"]) == (10, 1, "10.0")
