"""Sparkplug B: topics, the protobuf payload, and the per-edge-node session (pure).

The protobuf wire format is read and written here directly (a handful of field
numbers of `org.eclipse.tahu.protobuf.Payload`), so no generated code is needed.

Session rules (Sparkplug 3.0): NBIRTH/DBIRTH declare the metrics and their aliases;
NDATA/DDATA may name a metric by alias only; every message of an edge node carries
`seq` 0..255, +1 per message; a gap means messages were lost, so the host asks for a
rebirth (NCMD `Node Control/Rebirth` = true) and ignores data until the new NBIRTH;
NDEATH/DDEATH (or the broker's will) mark the node or device offline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "spBv1.0"
MESSAGE_TYPES = ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE")
REBIRTH_METRIC = "Node Control/Rebirth"

# Sparkplug datatypes (the ones a sensor reading can be).
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN, STRING = range(1, 13)
DATETIME, TEXT = 13, 14


class SparkplugError(ValueError):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Topic:
    group: str
    message_type: str
    edge_node: str
    device: str | None = None


def parse_topic(topic: str) -> Topic:
    """`spBv1.0/<group>/<type>/<edge node>[/<device>]`."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in MESSAGE_TYPES:
        raise SparkplugError("malformed", f"topic {topic!r} is not {NAMESPACE}/<group>/<message type>/<edge node>[/<device>]")
    return Topic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


def topic(t: Topic) -> str:
    return "/".join([NAMESPACE, t.group, t.message_type, t.edge_node] + ([t.device] if t.device else []))


@dataclass(frozen=True)
class Metric:
    name: str | None
    alias: int | None
    timestamp: int | None
    datatype: int | None
    value: Any
    is_null: bool = False


@dataclass(frozen=True)
class Payload:
    timestamp: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


# --- protobuf wire format ----------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise SparkplugError("malformed", "truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise SparkplugError("malformed", "varint longer than 10 bytes")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise SparkplugError("malformed", "truncated fixed64")
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise SparkplugError("malformed", f"field {number}: length {length} runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise SparkplugError("malformed", "truncated fixed32")
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise SparkplugError("malformed", f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


#: The wire type each field number must have (Payload fields 1-3, Metric fields 1-16).
_PAYLOAD_WIRE = {1: 0, 2: 2, 3: 0, 4: 2, 5: 2}
_METRIC_WIRE = {1: 2, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 2, 9: 2, 10: 0, 11: 0, 12: 5, 13: 1, 14: 0, 15: 2, 16: 2, 17: 2, 18: 2, 19: 2}


def _typed_fields(buf: bytes, wires: dict[int, int], what: str):
    """Fields whose wire type matches the schema; a mismatch is a malformed message, not a crash."""
    for number, wire, value in _fields(buf):
        expected = wires.get(number)
        if expected is None:
            continue  # unknown fields are skipped, as protobuf readers do
        if wire != expected:
            raise SparkplugError("malformed", f"{what} field {number} has wire type {wire}, expected {expected}")
        yield number, value


def _signed(value: int, datatype: int | None) -> int:
    bits = {INT8: 32, INT16: 32, INT32: 32, INT64: 64}.get(datatype or 0)
    if bits and value >= 1 << (bits - 1):
        return value - (1 << bits)
    return value


def _metric(buf: bytes) -> Metric:
    name = alias = ts = datatype = value = None
    is_null = False
    for number, raw in _typed_fields(buf, _METRIC_WIRE, "metric"):
        if number == 1:
            name = raw.decode("utf-8", "replace")
        elif number == 2:
            alias = raw
        elif number == 3:
            ts = raw
        elif number == 4:
            datatype = raw
        elif number == 7:
            is_null = bool(raw)
        elif number in (10, 11):
            value = raw
        elif number == 12:
            value = struct.unpack("<f", raw)[0]
        elif number == 13:
            value = struct.unpack("<d", raw)[0]
        elif number == 14:
            value = bool(raw)
        elif number == 15:
            value = raw.decode("utf-8", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        value = _signed(value, datatype)
    return Metric(name, alias, ts, datatype, value, is_null)


def decode_payload(buf: bytes) -> Payload:
    ts = seq = None
    metrics = []
    for number, raw in _typed_fields(buf, _PAYLOAD_WIRE, "payload"):
        if number == 1:
            ts = raw
        elif number == 2:
            metrics.append(_metric(raw))
        elif number == 3:
            seq = raw
    return Payload(ts, seq, tuple(metrics))


def _put_varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return


def _put_field(out: bytearray, number: int, wire: int, value: Any) -> None:
    _put_varint(out, number << 3 | wire)
    if wire == 0:
        _put_varint(out, value)
    elif wire == 2:
        _put_varint(out, len(value))
        out += value
    else:
        out += value


def encode_metric(m: Metric) -> bytes:
    out = bytearray()
    if m.name is not None:
        _put_field(out, 1, 2, m.name.encode())
    if m.alias is not None:
        _put_field(out, 2, 0, m.alias)
    if m.timestamp is not None:
        _put_field(out, 3, 0, m.timestamp)
    if m.datatype is not None:
        _put_field(out, 4, 0, m.datatype)
    if m.is_null:
        _put_field(out, 7, 0, 1)
    elif m.datatype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
        _put_field(out, 10, 0, m.value & 0xFFFFFFFF)
    elif m.datatype in (INT64, UINT64, DATETIME):
        _put_field(out, 11, 0, m.value)
    elif m.datatype == FLOAT:
        _put_field(out, 12, 5, struct.pack("<f", m.value))
    elif m.datatype == DOUBLE:
        _put_field(out, 13, 1, struct.pack("<d", m.value))
    elif m.datatype == BOOLEAN:
        _put_field(out, 14, 0, int(bool(m.value)))
    elif m.datatype in (STRING, TEXT):
        _put_field(out, 15, 2, str(m.value).encode())
    return bytes(out)


def encode_payload(p: Payload) -> bytes:
    out = bytearray()
    if p.timestamp is not None:
        _put_field(out, 1, 0, p.timestamp)
    for m in p.metrics:
        _put_field(out, 2, 2, encode_metric(m))
    if p.seq is not None:
        _put_field(out, 3, 0, p.seq)
    return bytes(out)


def rebirth_request(t: Topic, now_ms: int) -> tuple[str, bytes]:
    """The NCMD that asks an edge node to publish its births again."""
    cmd = Topic(t.group, "NCMD", t.edge_node)
    return topic(cmd), encode_payload(Payload(now_ms, None, (Metric(REBIRTH_METRIC, None, now_ms, BOOLEAN, True),)))


# --- session state -------------------------------------------------------------------

#: Aliases one edge node's session keeps, over all its devices: a birth that would pass it
#: evicts the tables of the devices born longest ago (and of one birth, keeps the first this many).
MAX_ALIASES = 16384


@dataclass
class EdgeNodeSession:
    """What the host knows about one edge node: online, last seq, metric aliases."""

    online: bool = False
    seq: int | None = None
    #: device (None: the edge node itself) → alias → metric name, from the births, oldest birth first.
    aliases: dict[str | None, dict[int, str]] = field(default_factory=dict)
    alias_count: int = 0
    #: The devices whose aliases are kept (None: every device's). A host needs those of the devices
    #: whose data it stores, and anyone on the network may publish births for any other.
    devices: frozenset[str | None] | None = None


@dataclass(frozen=True)
class Outcome:
    """What one message meant: values by metric name, and what the host must do."""

    values: dict[str, Any]
    timestamp_ms: int | None
    rebirth: bool = False
    offline: bool = False
    problem: str | None = None
    #: Aliases this message's birth made the session forget (MAX_ALIASES).
    evicted: int = 0


def apply(session: EdgeNodeSession, t: Topic, p: Payload) -> Outcome:
    """Advance an edge node's session by one message (NBIRTH resets it)."""
    kind = t.message_type
    if kind == "NDEATH":
        session.online = False
        session.seq = None
        return Outcome({}, p.timestamp, offline=True)
    if kind == "NBIRTH":
        session.online = True
        session.seq = p.seq
        evicted = _learn(session, None, p)
        return Outcome(_values(session, None, p), p.timestamp, evicted=evicted)
    if not session.online:
        return Outcome({}, p.timestamp, rebirth=True, problem="data from an edge node without an NBIRTH")
    expected = (session.seq + 1) % 256 if session.seq is not None else None
    if p.seq is None or (expected is not None and p.seq != expected):
        session.online = False  # ignore data until the rebirth
        return Outcome({}, p.timestamp, rebirth=True, problem=f"seq {p.seq}, expected {expected}: messages were lost")
    session.seq = p.seq
    if kind == "DBIRTH":
        evicted = _learn(session, t.device, p)
        return Outcome(_values(session, t.device, p), p.timestamp, evicted=evicted)
    if kind == "DDEATH":
        return Outcome({}, p.timestamp, offline=True)
    if kind in ("NDATA", "DDATA"):
        return Outcome(_values(session, t.device, p), p.timestamp)
    return Outcome({}, p.timestamp)


def _learn(session: EdgeNodeSession, device: str | None, p: Payload) -> int:
    """Replace the device's alias table with its birth's; how many aliases the session forgot for room."""
    tables = session.aliases
    old = tables.pop(device, None)
    if old:
        session.alias_count -= len(old)
    if session.devices is not None and device not in session.devices:
        return 0
    table = {m.alias: m.name for m in p.metrics if m.name is not None and m.alias is not None}
    evicted = 0
    if len(table) > MAX_ALIASES:
        evicted = len(table) - MAX_ALIASES
        table = dict(list(table.items())[:MAX_ALIASES])
    while tables and session.alias_count + len(table) > MAX_ALIASES:
        oldest = tables.pop(next(iter(tables)))  # dicts keep insertion order: the earliest birth
        session.alias_count -= len(oldest)
        evicted += len(oldest)
    if table:
        tables[device] = table
        session.alias_count += len(table)
    return evicted


def _values(session: EdgeNodeSession, device: str | None, p: Payload) -> dict[str, Any]:
    out: dict[str, Any] = {}
    table = session.aliases.get(device, {})
    for m in p.metrics:
        name = m.name if m.name is not None else table.get(m.alias)
        if name is None or m.is_null:
            continue
        out[name] = m.value
    return out
