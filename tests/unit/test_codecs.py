"""Codecs and validation against the shared vectors (tests/vectors), plus edge cases."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest

from plantwatch.contracts.times import parse_timestamp
from plantwatch.ingest.codecs import DecodeError
from plantwatch.ingest.formats import decode, encode
from plantwatch.ingest.validate import CompiledNode, Policy, check_message
from plantwatch.plant.load import load_plant

#: Nodes of vectors that the demo plant has none of (a camera).
CAMERA_PLANT = Path(__file__).parents[2] / "examples" / "camera"
VECTORS = sorted((Path(__file__).parents[1] / "vectors").glob("*/*.json"))
DEFAULT_NOW = 1767254400.0


def test_there_are_vectors_for_every_decodable_format():
    formats = {v.parent.name for v in VECTORS}
    assert {"esp32-json", "rpi-json", "sensor-event", "change-feed", "influx-line"} <= formats


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector(path: Path, plant):
    vector = json.loads(path.read_text())
    node = next(n for n in (*plant.nodes, *load_plant(CAMERA_PLANT).nodes) if n.name == vector["node"])
    assert node.spec.payload.topic == vector["topic"], "vector topic must be the node's topic"
    compiled = CompiledNode.of(node)
    payload = base64.b64decode(vector["payload_base64"]) if "payload_base64" in vector else vector["payload"].encode()
    readings, rejections = check_message(compiled, payload, vector.get("now", DEFAULT_NOW))
    got = [{"sensor": r.sensor, "value": r.value, "ts": r.ts} for r in readings]
    assert got == [{**e, "value": float(e["value"])} for e in vector["expected"]["readings"]]
    assert [r.reason for r in rejections] == vector["expected"].get("rejected", [])


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"timestamp": "2026-01-01T08:00:00Z", "temperature_c": 1}', "missing_field"),
        (b'{"device_id": "esp32-press-01", "timestamp": "yesterday", "temperature_c": 1}', "bad_timestamp"),
        (b'{"device_id": "esp32-press-01", "timestamp": "2026-01-01T08:00:00Z", "temperature_c": "hot"}', "wrong_type"),
        (b'{"device_id": "esp32-press-01", "timestamp": "2026-01-01T08:00:00Z", "temperature_c": true}', "wrong_type"),
        (b'{"device_id": "esp32-press-01", "timestamp": "2026-01-01T08:00:00Z", "temperature_c": 1e400}', "malformed"),
        (b'{"device_id": "esp32-press-01", "timestamp": "2026-01-01T08:00:00Z", "humidity": 3}', "no_known_sensor"),
        (b'{"device_id": "esp32-press-99", "timestamp": "2026-01-01T08:00:00Z", "temperature_c": 1}', "device_mismatch"),
        (b'{"device_id": "esp32-press-01", "timestamp": "2025-01-01T08:00:00Z", "temperature_c": 1}', "timestamp_skew"),
    ],
)
def test_esp32_rejections_name_the_reason(plant, payload, reason):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "esp32-press-01"))
    readings, rejections = check_message(node, payload, DEFAULT_NOW)
    assert readings == []
    assert [r.reason for r in rejections] == [reason]
    assert rejections[0].detail  # says what was wrong


def test_oversized_payload_is_rejected_before_decoding(plant):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "esp32-press-01"))
    readings, rejections = check_message(node, b"{" + b" " * 70000 + b"}", DEFAULT_NOW)
    assert readings == [] and rejections[0].reason == "oversized"
    assert "65536" in rejections[0].detail


def test_encode_decode_round_trip_for_every_node(plant):
    for node in plant.nodes:
        compiled = CompiledNode.of(node)
        field, sensor = next(iter(compiled.sensors.items()))
        payload = encode(compiled.format, compiled.device_id, DEFAULT_NOW, {field: 7.0})
        readings, rejections = check_message(compiled, payload, DEFAULT_NOW)
        assert rejections == [], (node.name, rejections)
        assert [(r.sensor, r.value, r.ts) for r in readings] == [(sensor.name, 7.0, DEFAULT_NOW)]


def test_line_protocol_types_and_errors():
    (s,) = decode("influx-line", b'm,device=a f=1.5,i=3i,b=t,s="x y" 1000000000')
    assert s.fields == {"f": 1.5, "i": 3, "b": True, "s": "x y"} and s.ts == 1.0 and s.device_id == "a"
    with pytest.raises(DecodeError) as err:
        decode("influx-line", b"m f=abc")
    assert err.value.reason == "malformed"


def test_timestamps():
    assert parse_timestamp("2026-01-01T08:00:00Z") == DEFAULT_NOW
    assert parse_timestamp("2026-01-01T09:00:00+01:00") == DEFAULT_NOW
    assert parse_timestamp(DEFAULT_NOW * 1000) == DEFAULT_NOW  # milliseconds
    with pytest.raises(ValueError):
        parse_timestamp(math.inf)


def test_skew_policy_is_configurable(plant):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "esp32-press-01"))
    payload = b'{"device_id": "esp32-press-01", "timestamp": "2026-01-01T08:10:00Z", "temperature_c": 1}'
    assert check_message(node, payload, DEFAULT_NOW)[1][0].reason == "timestamp_skew"
    readings, rejections = check_message(node, payload, DEFAULT_NOW, Policy(max_future_s=3600))
    assert rejections == [] and len(readings) == 1


def test_unknown_sensor_policy(plant):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "esp32-press-01"))
    payload = b'{"device_id": "esp32-press-01", "timestamp": "2026-01-01T08:00:00Z", "temperature_c": 1, "rssi": -60}'
    readings, rejections = check_message(node, payload, DEFAULT_NOW)
    assert len(readings) == 1 and rejections == []  # default: diagnostics fields are ignored
    readings, rejections = check_message(node, payload, DEFAULT_NOW, Policy(unknown_sensor="reject"))
    assert len(readings) == 1 and [(r.reason, r.field) for r in rejections] == [("unknown_sensor", "rssi")]
    with pytest.raises(ValueError, match="accepted: ignore, reject"):
        Policy(unknown_sensor="maybe")


LP = "machine,device=jetson-cell-01 "


@pytest.mark.parametrize(
    "line, reason, says",
    [
        (LP + "spindle_current=²i", "malformed", "is not a number"),  # issue 8: each of these three stopped the gateway
        (LP + "spindle_current=" + "9" * 400 + "i", "out_of_range", "does not fit a signed 64-bit integer"),
        (LP + "spindle_current=1 " + "1" * 5000, "bad_timestamp", "outside the signed 64-bit range"),
        (LP + "spindle_current=9223372036854775808i", "out_of_range", "9223372036854775807i"),
        (LP + "spindle_speed=-1u", "out_of_range", "unsigned"),
        (LP + "spindle_current=1 --5", "bad_timestamp", "not an integer of nanoseconds"),
        (LP + "spindle_current=1 ١٢٣", "bad_timestamp", "not an integer of nanoseconds"),
        (LP + "spindle_current=١٢", "malformed", "is not a number"),
        (LP + "spindle_current=1_0", "malformed", "is not a number"),
        (LP + 'spindle_current="open', "malformed", "closing quote"),
        (LP + "spindle_current=1,spindle_current=2", "malformed", "duplicate field 'spindle_current'"),
    ],
)
def test_influx_line_refuses_what_influxdb_refuses_with_a_reason(plant, line, reason, says):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "jetson-cell-01"))
    readings, rejections = check_message(node, line.encode(), DEFAULT_NOW)
    assert readings == [] and [r.reason for r in rejections] == [reason]
    assert says in rejections[0].detail and len(rejections[0].detail) < 300  # bounded, however long the input


def test_influx_line_takes_the_64_bit_extremes():
    samples = decode(
        "influx-line", (LP + "spindle_current=-9223372036854775808i,spindle_speed=18446744073709551615u 9223372036854775807").encode()
    )
    assert samples[0].fields == {"spindle_current": -(2**63), "spindle_speed": 2**64 - 1}
    assert samples[0].ts == pytest.approx(9223372036.854775807)


@pytest.mark.parametrize(
    "payload, key",
    [
        (b'{"device_id":"esp32-press-01","timestamp":"2026-01-01T08:00:00Z","temperature_c":1,"temperature_c":2}', "temperature_c"),
        (b'{"device_id":"esp32-press-01","timestamp":"2026-01-01T08:00:00Z","temperature_c":1,"temperatur\\u0065_c":2}', "temperature_c"),
        (
            b'{"device_id" : "esp32-press-01", "device_id" : "esp32-press-01", "timestamp":"2026-01-01T08:00:00Z","temperature_c":1}',
            "device_id",
        ),
        (b'{"device_id":"esp32-press-01","timestamp":"2026-01-01T08:00:00Z","temperature_c":1,"x":[{"a":1,"a":1}]}', "a"),
    ],
)
def test_duplicate_json_keys_are_refused_not_resolved(plant, payload, key):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "esp32-press-01"))
    readings, rejections = check_message(node, payload, DEFAULT_NOW)
    assert readings == [] and [r.reason for r in rejections] == ["malformed"]
    assert f"duplicate key {key!r}" in rejections[0].detail


def test_equal_keys_in_different_objects_and_quotes_inside_strings_are_no_duplicates(plant):
    node = CompiledNode.of(next(n for n in plant.nodes if n.name == "rpi-line1-env"))
    payload = (
        b'{"device_id":"rpi-line1-env","timestamp":"2026-01-01T08:00:00Z","note":"say \\"hi\\"",'
        b'"sensors":{"bme280":{"temperature_c":21.5},"mic":{"temperature_c":30}}}'
    )
    readings, rejections = check_message(node, payload, DEFAULT_NOW)
    assert [r.sensor for r in readings] == ["air-temperature"] and rejections == []
