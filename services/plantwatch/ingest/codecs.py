"""What a payload codec is: bytes a node published → samples (field → raw value), and back.

The formats themselves are plugins, one module each, in plantwatch.ingest.formats;
this module is what they share. Decoding is pure and says nothing about whether a
value is acceptable; that is validation's job (plantwatch.ingest.validate), which
knows the SensorNode. Encoders exist so the simulator, the tests and the benchmarks
publish exactly what real nodes publish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple


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


def clip(text: str, limit: int = 40) -> str:
    """A bounded excerpt of untrusted text for a rejection's detail."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} characters)"


@dataclass(frozen=True)
class PayloadFormat:
    """One value of a SensorNode's `spec.payload.format`: its codec and its default field mapping."""

    #: The name a SensorNode declares, e.g. `esp32-json`.
    name: str
    #: (sensor type, sensor name) → the payload field a sensor reads when its SensorNode names none.
    default_field: Callable[[str, str], str]
    #: One message → its samples, raising DecodeError; None for a format read in a session (sparkplug-b).
    decode: Callable[[bytes], list[Sample]] | None = None
    #: (device id, epoch seconds, field → value) → one message as a real node sends it; None as for decode.
    encode: Callable[[str, float, dict[str, Any]], bytes] | None = None
    #: A message carries one value, so a node sends one message per sensor.
    one_value: bool = False
    #: The payload names its device, which validation checks against the topic's node (device_mismatch).
    names_device: bool = False
