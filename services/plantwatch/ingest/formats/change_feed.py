"""change-feed: the change-feed generator's documents, `id`, `sensor_id`, `timestamp` and the values."""

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
    require(doc, "sensor_id", "timestamp")
    fields = {k: v for k, v in doc.items() if k not in ("id", "sensor_id", "timestamp")}
    return [Sample(fields, doc["timestamp"], extra={"sensor_id": doc["sensor_id"]})]


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": f"{device_id}-{int(ts * 1000)}", "sensor_id": device_id, **values, "timestamp": iso(ts)})


FORMAT = PayloadFormat("change-feed", default_field, decode, encode)
