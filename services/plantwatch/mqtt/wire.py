"""MQTT 3.1.1 packets for the gateway's receive path (pure: bytes in, values out).

Only what a QoS 1 subscriber needs: CONNECT, SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT
out; CONNACK, SUBACK, PUBLISH and PINGRESP in. Parsing works on a whole receive buffer
at once and returns every complete packet, so the gateway handles thousands of
messages per system call instead of one callback per message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
CONNACK_ERRORS = {1: "unacceptable protocol version", 2: "client id rejected", 3: "server unavailable",
                  4: "bad user name or password", 5: "not authorised"}


class ProtocolError(ValueError):
    pass


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _length(len(body)) + body


def connect(client_id: str, keepalive: int, clean: bool, username: str | None = None, password: str | None = None) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username else 0) | (0x40 if password else 0)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id)
    if username:
        body += _string(username)
    if password:
        body += _string(password)
    return _packet(CONNECT << 4, body)


def subscribe(packet_id: int, topics: list[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(t) + bytes([qos]) for t in topics)
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def puback(packet_ids: list[int]) -> bytes:
    """PUBACKs for many messages in one buffer (one system call)."""
    return b"".join(b"\x40\x02" + struct.pack("!H", pid) for pid in packet_ids)


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    packet_id: int
    qos: int


@dataclass(frozen=True, slots=True)
class Control:
    """A packet other than PUBLISH: its type and body."""

    type: int
    body: bytes


def parse(buf: bytearray, topics: dict[bytes, str]) -> tuple[list[Publish], list[Control], int]:
    """Every complete packet at the start of `buf`: (publishes, others, bytes consumed).

    `topics` caches decoded topic names: a plant has few topics and many messages.
    """
    publishes: list[Publish] = []
    controls: list[Control] = []
    pos = 0
    end = len(buf)
    while pos + 2 <= end:
        first = buf[pos]
        length = shift = 0
        i = pos + 1
        while True:
            if i >= end:
                return publishes, controls, pos
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("remaining length longer than 4 bytes")
        if i + length > end:
            break
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 0x03
            tlen = (buf[i] << 8) | buf[i + 1]
            raw_topic = bytes(buf[i + 2:i + 2 + tlen])
            topic = topics.get(raw_topic)
            if topic is None:
                topic = topics[raw_topic] = raw_topic.decode("utf-8", "replace")
            j = i + 2 + tlen
            packet_id = 0
            if qos:
                packet_id = (buf[j] << 8) | buf[j + 1]
                j += 2
            publishes.append(Publish(topic, bytes(buf[j:i + length]), packet_id, qos))
        else:
            controls.append(Control(kind, bytes(buf[i:i + length])))
        pos = i + length
    return publishes, controls, pos
