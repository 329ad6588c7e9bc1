"""The payload formats a SensorNode may declare (`spec.payload.format`): one module each, one registry.

Each module holds its format's decoder, encoder and default field mapping as a
`FORMAT` (plantwatch.ingest.codecs.PayloadFormat); its test vectors are in
tests/vectors/<format>/. FORMATS is what validation, the simulator and
tools/generate.py (the CRD's enum) read, so adding a format is a module here, a
line below, and its vectors. Validation resolves a node's decoder once
(CompiledNode), not per message.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from plantwatch.ingest.codecs import DecodeError, PayloadFormat, Sample
from plantwatch.ingest.formats import change_feed, esp32_json, influx_line, jpeg_frame, rpi_json, sensor_event, sparkplug_b

#: Every format by name, in the order of the SensorNode CRD's enum.
FORMATS: dict[str, PayloadFormat] = {
    m.FORMAT.name: m.FORMAT for m in (esp32_json, rpi_json, sensor_event, change_feed, influx_line, sparkplug_b, jpeg_frame)
}

#: Formats of which one message decodes on its own (sparkplug-b needs its session, see ingest/sparkplug.py).
DECODABLE = tuple(name for name, fmt in FORMATS.items() if fmt.decode is not None)


def default_field(fmt: str, sensor_type: str, sensor_name: str) -> str:
    """The payload field a sensor reads when its SensorNode does not say."""
    known = FORMATS.get(fmt)
    return known.default_field(sensor_type, sensor_name) if known else sensor_name


def decoder(fmt: str) -> Callable[[bytes], list[Sample]]:
    """The decoder of `fmt`; for a format without one, a decoder that refuses every message as unsupported_format."""
    known = FORMATS.get(fmt)
    if known is not None and known.decode is not None:
        return known.decode
    return partial(_undecodable, fmt)


def _undecodable(fmt: str, payload: bytes) -> list[Sample]:
    raise DecodeError("unsupported_format", f"format {fmt!r}; decodable: {', '.join(DECODABLE)}")


def decode(fmt: str, payload: bytes) -> list[Sample]:
    """Decode one message of a node's format; raises DecodeError with a reason code."""
    return decoder(fmt)(payload)


def encode(fmt: str, device_id: str, ts: float, values: dict[str, Any]) -> bytes:
    """Build one message of `fmt` from field → value (fields as in the SensorNode), as a real node sends it."""
    known = FORMATS.get(fmt)
    if known is None or known.encode is None:
        raise ValueError(f"cannot encode {fmt!r}; encodable: {', '.join(n for n, f in FORMATS.items() if f.encode)}")
    return known.encode(device_id, ts, values)
