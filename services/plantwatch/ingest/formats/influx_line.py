"""influx-line: InfluxDB line protocol, one `measurement[,tags] fields [unix-ns]` per line.

The tag `device` (or `device_id`) names the node. What InfluxDB refuses is refused
here too, with a reason: integers past 64 bits, timestamps past int64 nanoseconds,
non-ASCII digits.
"""

from __future__ import annotations

from typing import Any

from plantwatch.ingest.codecs import DecodeError, PayloadFormat, Sample, clip


def default_field(sensor_type: str, sensor_name: str) -> str:
    return sensor_name


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
            raise DecodeError("malformed", f"field value {clip(text)!r}: a string field needs a closing quote")
        return text[1:-1].replace('\\"', '"')
    suffix = text[-1:]
    if suffix in ("i", "u"):
        value = _lp_integer(text[:-1])
        if value is not None:
            low, high = _LP_INT_RANGES[suffix]
            if not low <= value <= high:
                kind = "a signed" if suffix == "i" else "an unsigned"
                raise DecodeError(
                    "out_of_range",
                    f"field value {clip(text)!r} does not fit {kind} 64-bit integer (accepted: {low}{suffix} to {high}{suffix})",
                )
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
        raise DecodeError("malformed", f"field value {clip(text)!r} is not a number, integer (1i, 1u), boolean or quoted string") from None


def decode(payload: bytes) -> list[Sample]:
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
                raise DecodeError("malformed", f"line {n}: field {clip(item)!r} has no '='")
            key, value = item.split("=", 1)
            if key in fields:
                raise DecodeError("malformed", f"line {n}: duplicate field {clip(key)!r}; each field may occur once per line")
            fields[key] = _lp_value(value)
        ts = None
        if len(parts) == 3:
            nanos = _lp_integer(parts[2])
            if nanos is None:
                raise DecodeError("bad_timestamp", f"line {n}: timestamp {clip(parts[2])!r} is not an integer of nanoseconds")
            if not _LP_TS_RANGE[0] <= nanos <= _LP_TS_RANGE[1]:
                raise DecodeError(
                    "bad_timestamp",
                    f"line {n}: timestamp {clip(parts[2])!r} is outside the signed 64-bit "
                    "range of nanoseconds since 1970 (years 1677 to 2262)",
                )
            ts = nanos / 1e9
        samples.append(Sample(fields, ts, tag_map.get("device") or tag_map.get("device_id")))
    if not samples:
        raise DecodeError("malformed", "no line protocol lines")
    return samples


def encode(device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    fields = ",".join(f"{k}={v}i" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}" for k, v in values.items())
    return f"machine,device={device_id} {fields} {int(ts * 1e9)}".encode()


FORMAT = PayloadFormat("influx-line", default_field, decode, encode, names_device=True)
