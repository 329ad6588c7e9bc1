"""Payload codecs: bytes a node published → samples (field → raw value), and back.

Pure functions, no I/O. Decoding says nothing about whether a value is acceptable;
that is validation's job (plantwatch.ingest.validate), which knows the SensorNode.
Encoders exist so the simulator, the tests and the benchmarks publish exactly what
real nodes publish.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

import orjson

#: Stateless formats: one message decodes on its own (sparkplug-b needs a session, see sparkplug.py).
DECODABLE = ("esp32-json", "rpi-json", "sensor-event", "change-feed", "influx-line")


class DecodeError(ValueError):
    """The payload cannot be read at all; `reason` is a stable code for metrics and the DLQ."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class Sample(NamedTuple):
    """What one message (or one line of it) carries: values by field, with its time and sender.

    A named tuple because one is made per message on the gateway's hot path (a frozen
    dataclass with a default factory costs four times as much to build).
    """

    fields: dict[str, Any]
    #: Raw timestamp as sent (ISO-8601 text, epoch number) or None when absent.
    ts: Any = None
    #: The node id written in the payload, for formats that carry one.
    device_id: str | None = None
    #: Fields that the message itself says are invalid (e.g. a failed sensor); read-only.
    extra: Mapping[str, Any] = MappingProxyType({})


# The seed firmware's flat-JSON keys, by sensor type: the default `field` of a sensor.
ESP32_FIELDS = {
    "temperature": "temperature_c",
    "humidity": "humidity_percent",
    "pressure": "pressure_hpa",
    "vibration": "vibration_g",
    "current": "current_a",
    "noise": "noise_level_db",
    "voltage": "battery_voltage",
}


def default_field(fmt: str, sensor_type: str, sensor_name: str) -> str:
    """The payload field a sensor reads when its SensorNode does not say."""
    if fmt in ("esp32-json", "rpi-json"):
        return ESP32_FIELDS.get(sensor_type, sensor_name)
    if fmt in ("sensor-event", "change-feed"):
        return sensor_type
    return sensor_name  # influx-line field, Sparkplug metric name


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("malformed", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _require(doc: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in doc]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}; this format needs {', '.join(names)}")


def decode_esp32(payload: bytes) -> list[Sample]:
    doc = _json_object(payload)
    if "device_id" not in doc or "timestamp" not in doc:
        _require(doc, "device_id", "timestamp")
    # The document is ours (just parsed): taking the two metadata keys out leaves the
    # fields in payload order without building a second dict.
    device, ts = doc.pop("device_id"), doc.pop("timestamp")
    return [Sample(doc, ts, str(device))]


def decode_rpi(payload: bytes) -> list[Sample]:
    doc = _json_object(payload)
    _require(doc, "device_id", "timestamp", "sensors")
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


def decode_sensor_event(payload: bytes) -> list[Sample]:
    doc = _json_object(payload)
    _require(doc, "sensor_id", "sensor_type", "value", "timestamp")
    return [Sample({str(doc["sensor_type"]): doc["value"]}, doc["timestamp"], extra={"sensor_id": doc["sensor_id"]})]


def decode_change_feed(payload: bytes) -> list[Sample]:
    doc = _json_object(payload)
    _require(doc, "sensor_id", "timestamp")
    fields = {k: v for k, v in doc.items() if k not in ("id", "sensor_id", "timestamp")}
    return [Sample(fields, doc["timestamp"], extra={"sensor_id": doc["sensor_id"]})]


def _lp_split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes and not escaped with a backslash."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _lp_value(text: str) -> Any:
    if text.startswith('"'):
        return text[1:-1].replace('\\"', '"')
    if text[-1:] in ("i", "u") and text[:-1].lstrip("-").isdigit():
        return int(text[:-1])
    if text in ("t", "T", "true", "True", "TRUE"):
        return True
    if text in ("f", "F", "false", "False", "FALSE"):
        return False
    try:
        return float(text)
    except ValueError:
        raise DecodeError("malformed", f"field value {text!r} is not a number, integer, boolean or quoted string") from None


def decode_influx_line(payload: bytes) -> list[Sample]:
    """InfluxDB line protocol: `measurement[,tag=v...] field=v[,field=v...] [unix-ns]`, one per line."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("malformed", "line protocol must be UTF-8") from None
    samples = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p for p in _lp_split(line, " ") if p]
        if len(parts) not in (2, 3):
            raise DecodeError("malformed", f"line {n}: expected 'measurement[,tags] fields [timestamp]'")
        _measurement, *tags = parts[0].split(",")
        tag_map = dict(t.split("=", 1) for t in tags if "=" in t)
        fields = {}
        for item in _lp_split(parts[1], ","):
            if "=" not in item:
                raise DecodeError("malformed", f"line {n}: field {item!r} has no '='")
            key, value = item.split("=", 1)
            fields[key] = _lp_value(value)
        ts = None
        if len(parts) == 3:
            if not parts[2].lstrip("-").isdigit():
                raise DecodeError("bad_timestamp", f"line {n}: timestamp {parts[2]!r} is not an integer of nanoseconds")
            ts = int(parts[2]) / 1e9
        samples.append(Sample(fields, ts, tag_map.get("device") or tag_map.get("device_id")))
    if not samples:
        raise DecodeError("malformed", "no line protocol lines")
    return samples


DECODERS: dict[str, Callable[[bytes], list[Sample]]] = {
    "esp32-json": decode_esp32,
    "rpi-json": decode_rpi,
    "sensor-event": decode_sensor_event,
    "change-feed": decode_change_feed,
    "influx-line": decode_influx_line,
}


def decode(fmt: str, payload: bytes) -> list[Sample]:
    """Decode one message of a node's format; raises DecodeError with a reason code."""
    try:
        return DECODERS[fmt](payload)
    except KeyError:
        raise DecodeError("unsupported_format", f"format {fmt!r}; decodable: {', '.join(DECODABLE)}") from None


def parse_timestamp(raw: Any) -> float:
    """ISO-8601 text (naive means UTC) or epoch seconds/milliseconds → epoch seconds."""
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(raw, (int, float)):
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("timestamp is not finite")
        return value / 1000.0 if value > 1e11 else value
    if isinstance(raw, str):
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise ValueError(f"expected ISO-8601 text or epoch seconds, got {type(raw).__name__}")


def iso(ts: float) -> str:
    """Epoch seconds → ISO-8601 UTC with a Z, as the seed firmware writes it."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


# --- encoders: what real nodes send -------------------------------------------------

def encode(fmt: str, device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    """Build one message of `fmt` from field → value (fields as in the SensorNode)."""
    if fmt == "esp32-json":
        return orjson.dumps({"device_id": device_id, "timestamp": iso(ts), **values})
    if fmt == "rpi-json":
        sensors: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            part, _, leaf = key.partition(".")
            sensors.setdefault(part, {})[leaf] = value
        return orjson.dumps({"device_id": device_id, "timestamp": iso(ts), "sensors": sensors})
    if fmt == "sensor-event":
        (sensor_type, value), = values.items()
        return orjson.dumps({
            "event_id": f"{device_id}-{int(ts * 1000)}", "sensor_id": f"{device_id}-{sensor_type}",
            "sensor_type": sensor_type, "value": value, "unit": "", "timestamp": iso(ts),
            "location": None, "metadata": {},
        })
    if fmt == "change-feed":
        return orjson.dumps({"id": f"{device_id}-{int(ts * 1000)}", "sensor_id": device_id, **values, "timestamp": iso(ts)})
    if fmt == "influx-line":
        fields = ",".join(f"{k}={v}i" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}" for k, v in values.items())
        return f"machine,device={device_id} {fields} {int(ts * 1e9)}".encode()
    raise ValueError(f"cannot encode {fmt!r}; encodable: {', '.join(DECODABLE)}")
