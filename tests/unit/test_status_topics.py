"""Node presence: status topics, their `online`/`offline` payloads and Sparkplug births/deaths → the Online condition.

The status vectors (tests/vectors/status.json) are shared with the firmware's host tests:
each goes through a real Pipeline over the sample plant and a real SqliteStore.
"""

from __future__ import annotations

import json

import orjson
import pytest
import yaml

from plantwatch.contracts.topics import status_topic
from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.node_status import online_condition
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.shards import ShardPlan
from plantwatch.ingest.status_topics import Announcement, node_presence, status_owners, topic_problem
from plantwatch.ingest.validate import REASONS, Policy
from plantwatch.plant.load import load_plant, plant_from_documents
from plantwatch.store.sqlite import SqliteStore
from tests.conftest import EXAMPLE_PLANT, ROOT

NOW = 1767254400.0
VECTORS = json.loads((ROOT / "tests" / "vectors" / "status.json").read_text())
ESP32 = "esp32-press-01"
ESP32_STATUS = "sensors/hall-1/esp32-press-01/status"
ESP32_DATA = "sensors/hall-1/esp32-press-01/data"


@pytest.fixture
def plant():
    return load_plant(EXAMPLE_PLANT)


def make_pipeline(plant, tmp_path, sent: list | None = None) -> Pipeline:
    publish = None if sent is None else lambda topic, body: sent.append((topic, body))
    return Pipeline(plant, SqliteStore(tmp_path / "p.db"), publish=publish, now=NOW)


def reading(at: float, temperature: float = 40.0) -> tuple[str, bytes]:
    return ESP32_DATA, orjson.dumps({"device_id": ESP32, "timestamp": at, "temperature_c": temperature})


@pytest.mark.parametrize("case", VECTORS, ids=[c["description"] for c in VECTORS])
def test_status_vectors(plant, tmp_path, case):
    sent: list[tuple[str, bytes]] = []
    p = make_pipeline(plant, tmp_path, sent)
    before = p.presence(NOW)
    prepared = p.prepare([(case["topic"], case["payload"].encode())], NOW)
    p.commit(prepared)
    p.finish(prepared)
    if case["online"] is None:
        (row,) = prepared.dead
        assert row[2] == case["reason"] and case["reason"] in REASONS, row
        (letter,) = [orjson.loads(body) for topic, body in sent if topic.startswith("plantwatch/dead-letter/")]
        assert letter["reason"] == case["reason"] and letter["topic"][:100] == case["topic"][:100]
        assert p.presence(NOW) == before  # a refused status changes no node
        return
    assert prepared.dead == [] and prepared.results["accepted"] == 1
    node = next(n for n in plant.nodes if status_topic(n.spec.payload.topic) == case["topic"])
    state = p.presence(NOW)[node.name]
    assert state.online is case["online"]
    assert state.reason == ("Birth" if case["online"] else "LastWill") and case["topic"] in state.message


def test_the_vectors_cover_what_the_firmware_sends_and_each_refusal():
    assert {(c["payload"], c["online"]) for c in VECTORS if c["online"] is not None} >= {("online", True), ("offline", False)}
    assert {c["reason"] for c in VECTORS if c["online"] is None} == {"malformed", "oversized", "unknown_node", "bad_topic"}


def test_non_utf8_status_payloads_and_topics_are_refused(plant, tmp_path):
    p = make_pipeline(plant, tmp_path)
    prepared = p.prepare([(ESP32_STATUS, b"\xffonline"), (ESP32_STATUS, b"offline\xc3"), ("sensors/hall-1/\ufffd/status", b"offline")], NOW)
    assert [row[2] for row in prepared.dead] == ["malformed", "malformed", "bad_topic"]
    assert "not valid UTF-8" in prepared.dead[2][3]
    assert p.presence(NOW)[ESP32].reason == "NeverSeen"


def test_status_topic_is_the_data_topics_sibling():
    assert status_topic("sensors/hall-1/esp32-press-01/data") == "sensors/hall-1/esp32-press-01/status"
    assert status_topic("sensors/hall-1/rpi-line1-env/environmental") == "sensors/hall-1/rpi-line1-env/status"
    assert status_topic("press") == "press/status" and status_topic("/press") == "/status"


def test_a_status_topic_shared_by_nodes_or_another_nodes_data_topic_names_none():
    owners, ambiguous = status_owners(
        [
            ("a", "esp32-json", "line/a/data"),
            ("b", "esp32-json", "shared/x"),
            ("c", "esp32-json", "shared/y"),
            ("d", "esp32-json", "odd/data"),
            ("e", "esp32-json", "odd/status"),  # d's status topic is e's data topic
            ("f", "sparkplug-b", "spBv1.0/g/NDATA/edge"),
        ]
    )
    assert owners == {"line/a/status": "a"}
    assert ambiguous == {"shared/status": ("b", "c")}


def test_shared_status_topic_is_refused_with_a_fix(tmp_path):
    docs = [
        (
            name,
            {
                "apiVersion": "plantwatch.io/v1alpha1",
                "kind": "SensorNode",
                "metadata": {"name": name},
                "spec": {
                    "hardware": "esp32",
                    "payload": {"format": "esp32-json", "topic": f"line-9/{name}"},
                    "sensors": [{"name": "temperature", "type": "temperature", "field": "temperature_c"}],
                },
            },
        )
        for name in ("press-a", "press-b")
    ]
    p = make_pipeline(plant_from_documents(docs), tmp_path)
    prepared = p.prepare([("line-9/status", b"offline")], NOW)
    (row,) = prepared.dead
    assert row[2] == "unknown_node" and "press-a, press-b" in row[3] and "its own topic prefix" in row[3]
    assert not any(s.reason == "LastWill" for s in p.presence(NOW).values())


@pytest.mark.parametrize(
    "topic, why",
    [
        ("a/b\x00", "NUL"),
        ("a/+/status", "wildcard"),
        ("a/#", "wildcard"),
        ("a/\ufffd", "UTF-8"),
        ("a/b\r\nforged log line", "control"),
        ("a/\x85", "control"),
        ("a/../b", "`..`"),
        ("a/./b", "`.`"),
        ("a/" + "x" * 600, "characters"),
    ],
)
def test_topics_no_node_can_publish_on(topic, why):
    assert why in (topic_problem(topic) or "")


def test_ordinary_topics_are_no_problem():
    assert topic_problem("sensors/hall-1/esp32-press-01/data") is None
    assert topic_problem("sensors//a/...") is None  # legal MQTT, just no node's: unknown_node decides


def test_bad_topic_is_refused_even_when_unknown_nodes_are_ignored(plant, tmp_path):
    p = Pipeline(plant, SqliteStore(tmp_path / "p.db"), policy=Policy(unknown_node="ignore"), now=NOW)
    prepared = p.prepare([("sensors/a/../b", b"x"), ("sensors/hall-9/ghost/status", b"online")], NOW)
    assert [row[2] for row in prepared.dead] == ["bad_topic"]


def test_lastwill_is_offline_at_once_and_holds_until_the_node_publishes_again(plant, tmp_path):
    p = make_pipeline(plant, tmp_path)
    p.process([(ESP32_STATUS, b"online")], NOW)
    assert p.presence(NOW + 1)[ESP32].online and p.presence(NOW + 1)[ESP32].reason == "Birth"
    p.process([reading(NOW + 2)], NOW + 2)
    assert p.presence(NOW + 2)[ESP32].reason == "Reporting"
    p.process([(ESP32_STATUS, b"offline")], NOW + 3)  # the reading at NOW+2 is fresh; the Will wins
    state = p.presence(NOW + 3)[ESP32]
    assert (state.online, state.reason) == (False, "LastWill") and "Last Will" in state.message
    assert p.presence(NOW + 3600)[ESP32].reason == "LastWill"
    p.process([reading(NOW + 4)], NOW + 4)  # back (a node whose firmware sends no birth)
    assert p.presence(NOW + 4)[ESP32].reason == "Reporting"


def test_a_reading_after_the_will_in_one_batch_wins_and_one_before_does_not(plant, tmp_path):
    p = make_pipeline(plant, tmp_path)
    p.process([(ESP32_STATUS, b"offline"), reading(NOW)], NOW)
    assert p.presence(NOW)[ESP32].online
    p.process([reading(NOW + 1), (ESP32_STATUS, b"offline")], NOW + 1)
    assert not p.presence(NOW + 1)[ESP32].online


def test_birth_holds_for_the_heartbeat_then_silence_says_otherwise(plant, tmp_path):
    p = make_pipeline(plant, tmp_path)
    silence = p.silence[ESP32]  # 1s × 5 missed beats in the sample plant
    p.process([(ESP32_STATUS, b"online")], NOW)
    assert p.online(NOW + silence)[ESP32]
    later = p.presence(NOW + silence + 1)[ESP32]
    assert (later.online, later.reason) == (False, "Silent") and "since `online` on" in later.message


def test_online_condition_says_why(plant, tmp_path):
    p = make_pipeline(plant, tmp_path)
    never = online_condition(p.presence(NOW)[ESP32], None, NOW)
    assert (never["status"], never["reason"]) == ("False", "NeverSeen")
    p.process([(ESP32_STATUS, b"online")], NOW + 1)
    born = online_condition(p.presence(NOW + 1)[ESP32], never, NOW + 1)
    assert (born["status"], born["reason"]) == ("True", "Birth") and ESP32_STATUS in born["message"]
    assert born["lastTransitionTime"] == "2026-01-01T08:00:01Z"
    p.process([(ESP32_STATUS, b"offline")], NOW + 2)
    will = online_condition(p.presence(NOW + 2)[ESP32], born, NOW + 2)
    assert (will["status"], will["reason"]) == ("False", "LastWill")
    assert will["message"] == f"`offline` on {ESP32_STATUS} (the node's Last Will: the broker lost its connection)"


def test_presence_is_pure_and_an_offline_announcement_outranks_fresh_readings():
    will = Announcement(False, NOW, "LastWill", "`offline` on x/status")
    assert node_presence(NOW + 1, 5.0, NOW + 1, will).reason == "LastWill"
    birth = Announcement(True, NOW, "Birth", "`online` on x/status")
    assert node_presence(NOW + 1, 5.0, None, birth).online
    assert node_presence(NOW + 1, 5.0, NOW + 1, birth).reason == "Reporting"
    assert node_presence(NOW + 60, 5.0, NOW + 1, None).message == "no reading for 59s (heartbeat allows 5s)"


def test_announcements_follow_a_shard_to_its_next_owner(plant, tmp_path):
    p = make_pipeline(plant, tmp_path)
    p.process([(ESP32_STATUS, b"offline")], NOW)
    state = orjson.loads(orjson.dumps(p.snapshot()))
    successor = Pipeline(plant, SqliteStore(tmp_path / "q.db"), now=NOW)
    successor.restore(state)
    assert successor.presence(NOW + 1)[ESP32] == p.presence(NOW + 1)[ESP32]
    successor.process([reading(NOW + 2)], NOW + 2)
    assert successor.presence(NOW + 2)[ESP32].reason == "Reporting"
    del state["announced"]  # a checkpoint written before announcements were kept
    Pipeline(plant, SqliteStore(tmp_path / "r.db"), now=NOW).restore(state)


def test_a_nodes_status_topic_is_in_its_shard(plant):
    plan = ShardPlan.of([(n.name, n.spec.payload.format, n.spec.payload.topic) for n in plant.nodes], 4)
    shard = plan.node_shard[ESP32]
    assert ESP32_STATUS in plan.filters[shard] and plan.shard_of_topic(ESP32_STATUS) == shard
    assert plan.shard_of_topic("sensors/hall-9/ghost/status") is None


SPARKPLUG_NODES = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: cell-plc}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {format: sparkplug-b, topic: spBv1.0/plant-a/DDATA/edge-7/press-3}
  sensors:
    - {name: temperature, type: temperature, field: Press/Temperature}
---
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: edge-plc}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {format: sparkplug-b, topic: spBv1.0/plant-a/NDATA/edge-7}
  sensors:
    - {name: temperature, type: temperature, field: Edge/Temperature}
"""


def spb(kind: str, seq: int, *metrics: sp.Metric) -> tuple[str, bytes]:
    t = sp.Topic("plant-a", kind, "edge-7", "press-3" if kind.startswith("D") else None)
    return sp.topic(t), sp.encode_payload(sp.Payload(int(NOW * 1000), seq, metrics))


def test_sparkplug_births_and_deaths_map_to_online_the_same_way(tmp_path):
    plant = plant_from_documents([(f"doc{i}", d) for i, d in enumerate(yaml.safe_load_all(SPARKPLUG_NODES))])
    p = make_pipeline(plant, tmp_path)
    p.process([spb("NBIRTH", 0)], NOW)  # a birth without metrics: Online by the birth alone
    edge = p.presence(NOW)["edge-plc"]
    assert (edge.online, edge.reason) == (True, "Birth") and "NBIRTH" in edge.message
    assert p.presence(NOW)["cell-plc"].reason == "NeverSeen"  # its device is born by its DBIRTH
    p.process([spb("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 61.0))], NOW)
    assert p.presence(NOW)["cell-plc"].reason == "Reporting"
    p.process([spb("DDEATH", 2)], NOW + 1)
    assert (p.presence(NOW + 1)["cell-plc"].reason, p.presence(NOW + 1)["edge-plc"].online) == ("DeviceDeath", True)
    p.process([spb("NDEATH", 0)], NOW + 2)  # the edge node's Will takes its devices with it
    for name in ("edge-plc", "cell-plc"):
        state = p.presence(NOW + 2)[name]
        assert (state.online, state.reason) == (False, "LastWill") and "NDEATH" in state.message
    p.process([spb("NBIRTH", 0), spb("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 62.0))], NOW + 3)
    assert p.online(NOW + 3) == {"edge-plc": True, "cell-plc": True}
