"""Validation: decoded samples + the SensorNode → accepted readings and reasoned rejections.

Pure. Every rejection carries a stable reason code (the DLQ and the metrics are keyed
by it) and a detail that says what was wrong and what is accepted. A message may be
partly accepted: one sensor out of range does not cost the other sensors' readings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plantwatch.contracts.times import parse_timestamp
from plantwatch.ingest.codecs import DecodeError, Sample
from plantwatch.ingest.formats import decoder, default_field
from plantwatch.plant.model import SensorNode, device_id
from plantwatch.readings import Reading

REASONS = (
    "malformed",
    "missing_field",
    "wrong_type",
    "not_finite",
    "out_of_range",
    "bad_timestamp",
    "timestamp_skew",
    "oversized",
    "unknown_node",
    #: A topic no node can publish on: MQTT forbids it (NUL, a wildcard, not UTF-8), or it is
    #: overlong, has control characters or a `.`/`..` level (ingest/status_topics.py); refused whatever the policy.
    "bad_topic",
    "device_mismatch",
    "no_known_sensor",
    "unsupported_format",
    "sequence_gap",
    "unknown_sensor",
    #: A reading whose node, sensor and timestamp already have another value (ingest/conflicts.py).
    "conflict",
    #: The gateway failed on the message (a bug): refused alone, the traceback in the log.
    "internal_error",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why (part of) a message was refused."""

    reason: str
    detail: str
    field: str | None = None


@dataclass(frozen=True)
class Policy:
    """How strict the gateway is about time and about what the plant does not describe."""

    #: Readings stamped further in the future than this (clock drift) are refused.
    max_future_s: float = 300.0
    #: Readings older than this (a node replaying a huge backlog) are refused.
    max_past_s: float = 7 * 86400.0
    #: Messages on the plant's topics from no SensorNode: `reject` (dead-letter them) or `ignore`.
    unknown_node: str = "reject"
    #: Payload fields that are no sensor of the node: `ignore` (a node may send diagnostics) or `reject`.
    unknown_sensor: str = "ignore"

    def __post_init__(self) -> None:
        for name, value, accepted in (
            ("unknown_node", self.unknown_node, ("reject", "ignore")),
            ("unknown_sensor", self.unknown_sensor, ("ignore", "reject")),
        ):
            if value not in accepted:
                raise ValueError(f"{name} policy {value!r}; accepted: {', '.join(accepted)}")


@dataclass(frozen=True, slots=True)
class SensorSpec:
    name: str
    type: str
    unit: str
    low: float
    high: float


@dataclass(frozen=True)
class CompiledNode:
    """A SensorNode prepared for the hot path: its format's decoder, field → sensor lookups, numeric ranges."""

    name: str
    device_id: str
    format: str
    topic: str
    max_bytes: int
    sensors: dict[str, SensorSpec]
    decode: Callable[[bytes], list[Sample]] = field(repr=False, compare=False)

    @classmethod
    def of(cls, node: SensorNode) -> CompiledNode:
        spec = node.spec
        fmt = spec.payload.format
        sensors = {}
        for s in spec.sensors:
            f = s.field or default_field(fmt, s.type, s.name)
            low, high = (s.range.min, s.range.max) if s.range else (-math.inf, math.inf)
            sensors[f] = SensorSpec(s.name, s.type, s.unit or "", low, high)
        return cls(node.meta.name, device_id(node), fmt, spec.payload.topic, spec.payload.max_bytes, sensors, decoder(fmt))


def check_message(node: CompiledNode, payload: bytes, now: float, policy: Policy = Policy()) -> tuple[list[Reading], list[Rejection]]:
    """Decode and validate one message of `node`: accepted readings, rejections."""
    if len(payload) > node.max_bytes:
        return [], [Rejection("oversized", f"{len(payload)} bytes; this node's payload.maxBytes is {node.max_bytes}")]
    try:
        samples = node.decode(payload)
    except DecodeError as exc:
        return [], [Rejection(exc.reason, exc.detail)]
    readings: list[Reading] = []
    rejections: list[Rejection] = []
    for sample in samples:
        check_sample(node, sample, now, policy, readings, rejections)
    return readings, rejections


def check_sample(
    node: CompiledNode, sample: Sample, now: float, policy: Policy, readings: list[Reading], rejections: list[Rejection]
) -> None:
    """Validate one decoded sample of `node`, appending to `readings` and `rejections`."""
    if sample.device_id is not None and sample.device_id != node.device_id:
        rejections.append(
            Rejection(
                "device_mismatch", f"payload says device_id {sample.device_id!r} but topic {node.topic!r} belongs to {node.device_id!r}"
            )
        )
        return
    ts = now
    if sample.ts is not None:
        try:
            ts = parse_timestamp(sample.ts)
        except (ValueError, TypeError) as exc:
            rejections.append(
                Rejection(
                    "bad_timestamp",
                    f"timestamp {sample.ts!r}: {exc}; accepted: ISO 8601 text (e.g. 2026-01-31T08:00:00Z)"
                    " or a JSON number of epoch seconds or milliseconds",
                    "timestamp",
                )
            )
            return
        if ts - now > policy.max_future_s:
            rejections.append(
                Rejection(
                    "timestamp_skew",
                    f"timestamp is {ts - now:.0f}s in the future; accepted up to {policy.max_future_s:.0f}s (check the node's clock/NTP)",
                    "timestamp",
                )
            )
            return
        if now - ts > policy.max_past_s:
            rejections.append(
                Rejection(
                    "timestamp_skew", f"timestamp is {now - ts:.0f}s in the past; accepted up to {policy.max_past_s:.0f}s", "timestamp"
                )
            )
            return
    known = 0
    sensors, name, append = node.sensors, node.name, readings.append
    for key, raw in sample.fields.items():
        sensor = sensors.get(key)
        if sensor is None:
            if policy.unknown_sensor == "reject":
                rejections.append(
                    Rejection("unknown_sensor", f"{key} is no sensor of {node.name}; expected one of {sorted(node.sensors)}", key)
                )
            continue
        known += 1
        kind = type(raw)
        value = raw if kind is float else float(raw) if kind is int else _number(raw)  # the common cases without a call
        if value is None:
            rejections.append(Rejection("wrong_type", f"{key}={raw!r} is not a number", key))
        elif not isfinite(value):
            rejections.append(Rejection("not_finite", f"{key}={raw!r}: NaN and infinities are not readings", key))
        elif not sensor.low <= value <= sensor.high:
            rejections.append(
                Rejection(
                    "out_of_range", f"{key}={value:g} is outside {sensor.name}'s physical range [{sensor.low:g}, {sensor.high:g}]", key
                )
            )
        else:
            append(_new_tuple(Reading, (name, sensor.name, sensor.type, value, ts, sensor.unit)))
    if known == 0:
        rejections.append(
            Rejection(
                "no_known_sensor",
                f"none of the fields {sorted(sample.fields)} is a sensor of {node.name}; expected one of {sorted(node.sensors)}",
            )
        )


#: Builds a Reading without the keyword handling of its generated __new__ (four per message).
_new_tuple = tuple.__new__
isfinite = math.isfinite


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, bytes):  # a camera's frame (formats/jpeg_frame.py): its reading is its size
        return float(len(raw))
    if isinstance(raw, str) and raw.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(raw)
    return None
