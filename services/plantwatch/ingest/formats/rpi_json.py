"""rpi-json: `device_id`, `timestamp` and `sensors`, one object per physical sensor; fields are dotted paths."""

from __future__ import annotations

from typing import Any

import orjson

from plantwatch.contracts.times import iso
from plantwatch.ingest.codecs import DecodeError, PayloadFormat, Sample
from plantwatch.ingest.formats.esp32_json import ESP32_FIELDS
from plantwatch.ingest.formats.json_object import json_object, require


def default_field(sensor_type: str, sensor_name: str) -> str:
    return ESP32_FIELDS.get(sensor_type, sensor_name)


def decode(payload: bytes) -> list[Sample]:
    doc = json_object(payload)
    require(doc, "device_id", "timestamp", "sensors")
    sensors = doc["sensors"]
    if not isinstance(sensors, dict):
        raise DecodeError("wrong_type", f"sensors must be an object of objects, got {type(sensors).__name__}")
    fields: dict[str, Any] = {}
    for part, values in sensors.items():
        if isinstance(values, dict):
            for key, value in values.items():
                fields[f"{part}.{key}"] = value
        else:
            fields[part] = values
    return [Sample(fields, doc["timestamp"], str(doc["device_id"]))]


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    sensors: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        part, _, leaf = key.partition(".")
        sensors.setdefault(part, {})[leaf] = value
    return orjson.dumps({"device_id": device_id, "timestamp": iso(ts), "sensors": sensors})


FORMAT = PayloadFormat("rpi-json", default_field, decode, encode, names_device=True)
