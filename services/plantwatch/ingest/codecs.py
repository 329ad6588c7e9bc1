"""Payload codecs: bytes a node published → samples (field → raw value), and back.

Pure functions, no I/O. Decoding says nothing about whether a value is acceptable;
that is validation's job (plantwatch.ingest.validate), which knows the SensorNode.
Encoders exist so the simulator, the tests and the benchmarks publish exactly what
real nodes publish.
"""

from __future__ import annotations

import json
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


_BACKSLASH = ord("\\")


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("malformed", f"expected a JSON object, got {type(doc).__name__}")
    # orjson keeps the last of duplicate keys without a word. Without a backslash no string
    # holds a quote character, so the payload has two quotes per key and per string value,
    # and so does the document written back unless a duplicate (key and value) was dropped:
    # a memchr, two byte counts and one orjson.dumps, all in C (about a tenth of the loads),
    # and the slow exact check only when they cannot tell.
    if _BACKSLASH in payload or payload.count(b'"') != orjson.dumps(doc).count(b'"'):
        _reject_duplicate_keys(payload)
    return doc


def _reject_duplicate_keys(payload: bytes) -> None:
    """DecodeError naming the first key that occurs twice in one object of a (valid) JSON document."""
    def pairs(items: list[tuple[str, Any]]) -> None:
        seen = set()
        for key, _ in items:
            if key in seen:
                raise DecodeError("malformed", f"duplicate key {_clip(key)!r} in one JSON object; "
                                               "each key may occur once (which value was meant is unknown)")
            seen.add(key)

    try:
        json.loads(payload, object_pairs_hook=pairs)
    except RecursionError:  # deeper than the interpreter's recursion limit: orjson took it, json cannot check it
        raise DecodeError("malformed", "JSON nested too deeply to check for duplicate keys") from None


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


#: Integer fields as InfluxDB takes them: `i` a signed and `u` an unsigned 64-bit integer.
_LP_INT_RANGES = {"i": (-(1 << 63), (1 << 63) - 1), "u": (0, (1 << 64) - 1)}
#: Nanoseconds since the epoch: a signed 64-bit integer, as in InfluxDB.
_LP_TS_RANGE = _LP_INT_RANGES["i"]


def _clip(text: str, limit: int = 40) -> str:
    """A bounded excerpt of untrusted text for a rejection's detail."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} characters)"


def _lp_integer(text: str) -> int | None:
    """An optionally signed run of ASCII digits as an int (None if it is none); never more than 20 significant digits."""
    magnitude = text[1:] if text[:1] == "-" else text
    # str.isdigit alone takes '²' and other Unicode digits, which int() refuses.
    if not (magnitude.isascii() and magnitude.isdigit()):
        return None
    if len(magnitude.lstrip("0")) > 20:  # beyond any 64-bit integer; int() refuses over 4,300 digits
        return -(1 << 80) if text[:1] == "-" else 1 << 80
    return int(text)


def _lp_value(text: str) -> Any:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise DecodeError("malformed", f"field value {_clip(text)!r}: a string field needs a closing quote")
        return text[1:-1].replace('\\"', '"')
    suffix = text[-1:]
    if suffix in ("i", "u"):
        value = _lp_integer(text[:-1])
        if value is not None:
            low, high = _LP_INT_RANGES[suffix]
            if not low <= value <= high:
                kind = "a signed" if suffix == "i" else "an unsigned"
                raise DecodeError("out_of_range", f"field value {_clip(text)!r} does not fit {kind} 64-bit integer "
                                                  f"(accepted: {low}{suffix} to {high}{suffix})")
            return value
    if text in ("t", "T", "true", "True", "TRUE"):
        return True
    if text in ("f", "F", "false", "False", "FALSE"):
        return False
    try:
        if not text.isascii() or "_" in text:  # float() also takes Unicode digits and 1_000
            raise ValueError
        return float(text)
    except ValueError:
        raise DecodeError("malformed", f"field value {_clip(text)!r} is not a number, integer (1i, 1u), "
                                       "boolean or quoted string") from None


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
                raise DecodeError("malformed", f"line {n}: field {_clip(item)!r} has no '='")
            key, value = item.split("=", 1)
            if key in fields:
                raise DecodeError("malformed", f"line {n}: duplicate field {_clip(key)!r}; each field may occur once per line")
            fields[key] = _lp_value(value)
        ts = None
        if len(parts) == 3:
            nanos = _lp_integer(parts[2])
            if nanos is None:
                raise DecodeError("bad_timestamp", f"line {n}: timestamp {_clip(parts[2])!r} is not an integer of nanoseconds")
            if not _LP_TS_RANGE[0] <= nanos <= _LP_TS_RANGE[1]:
                raise DecodeError("bad_timestamp", f"line {n}: timestamp {_clip(parts[2])!r} is outside the signed 64-bit "
                                                   "range of nanoseconds since 1970 (years 1677 to 2262)")
            ts = nanos / 1e9
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
    decoder = DECODERS.get(fmt)
    if decoder is None:  # looked up apart: a KeyError inside a decoder is a bug, not an unknown format
        raise DecodeError("unsupported_format", f"format {fmt!r}; decodable: {', '.join(DECODABLE)}")
    return decoder(payload)


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
