"""sensor-event: the SensorEvent JSON, one reading per message, its `sensor_type` naming the field."""

from __future__ import annotations

from typing import Any

import orjson

from plantwatch.contracts.times import iso
from plantwatch.ingest.codecs import PayloadFormat, Sample
from plantwatch.ingest.formats.json_object import json_object, require


def default_field(sensor_type: str, sensor_name: str) -> str:
    return sensor_type


def decode(payload: bytes) -> list[Sample]:
    doc = json_object(payload)
    require(doc, "sensor_id", "sensor_type", "value", "timestamp")
    return [Sample({str(doc["sensor_type"]): doc["value"]}, doc["timestamp"], extra={"sensor_id": doc["sensor_id"]})]


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    ((sensor_type, value),) = values.items()
    return orjson.dumps(
        {
            "event_id": f"{device_id}-{int(ts * 1000)}",
            "sensor_id": f"{device_id}-{sensor_type}",
            "sensor_type": sensor_type,
            "value": value,
            "unit": "",
            "timestamp": iso(ts),
            "location": None,
            "metadata": {},
        }
    )


FORMAT = PayloadFormat("sensor-event", default_field, decode, encode, one_value=True)
