"""esp32-json: the seed firmware's flat JSON object, `device_id`, `timestamp` and one key per sensor.

The firmware in firmware/ writes it byte for byte as tests/vectors/esp32-json says.
"""

from __future__ import annotations

from typing import Any

import orjson

from plantwatch.contracts.times import iso
from plantwatch.ingest.codecs import PayloadFormat, Sample
from plantwatch.ingest.formats.json_object import json_object, require

#: The seed firmware's keys, by sensor type: the default `field` of a sensor.
ESP32_FIELDS = {
    "temperature": "temperature_c",
    "humidity": "humidity_percent",
    "pressure": "pressure_hpa",
    "vibration": "vibration_g",
    "current": "current_a",
    "noise": "noise_level_db",
    "voltage": "battery_voltage",
}


def default_field(sensor_type: str, sensor_name: str) -> str:
    return ESP32_FIELDS.get(sensor_type, sensor_name)


def decode(payload: bytes) -> list[Sample]:
    doc = json_object(payload)
    if "device_id" not in doc or "timestamp" not in doc:
        require(doc, "device_id", "timestamp")
    # The document is ours (just parsed): taking the two metadata keys out leaves the
    # fields in payload order without building a second dict.
    device, ts = doc.pop("device_id"), doc.pop("timestamp")
    return [Sample(doc, ts, str(device))]


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    return orjson.dumps({"device_id": device_id, "timestamp": iso(ts), **values})


FORMAT = PayloadFormat("esp32-json", default_field, decode, encode, names_device=True)
