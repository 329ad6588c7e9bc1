"""MQTT 3.1.1 packets for the gateway's receive path (pure: bytes in, values out).

Only what a QoS 1 subscriber needs: CONNECT, SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT
out; CONNACK, SUBACK, PUBLISH and PINGRESP in. Parsing works on a whole receive buffer
at once and returns every complete packet, so the gateway handles thousands of
messages per system call instead of one callback per message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
CONNACK_ERRORS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


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


#: Decoded topic names a receive loop keeps (mqtt.subscriber): a plant has a few hundred topics, and
#: anyone may publish under its prefixes, so the cache is emptied when it holds this many.
TOPIC_CACHE_SIZE = 4096


class TopicCache(dict):
    """Topic names by their raw bytes (`parse` empties it at TOPIC_CACHE_SIZE); `evicted` counts names dropped."""

    __slots__ = ("evicted",)

    def __init__(self) -> None:
        super().__init__()
        self.evicted = 0

    def clear(self) -> None:
        self.evicted += len(self)
        super().clear()


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


class Publish(NamedTuple):
    """One received PUBLISH (a named tuple: one is made per message, and a tuple is the cheapest object)."""

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

    `topics` caches decoded topic names: a plant has few topics and many messages. Full
    (TOPIC_CACHE_SIZE), it is emptied: the plant's own topics come back with their next
    message, and a flood of distinct topics costs a decode each, never memory.
    """
    publishes: list[Publish] = []
    controls: list[Control] = []
    # One copy of the buffer as bytes, so that each payload is sliced out with a single copy
    # (a bytearray slice would be copied twice: once to a bytearray, once to bytes).
    data = bytes(buf)
    new_publish = tuple.__new__
    append = publishes.append
    last_raw, last_topic = b"", ""
    pos = 0
    end = len(data)
    while pos + 2 <= end:
        first = data[pos]
        length = data[pos + 1]
        i = pos + 2
        if length & 0x80:  # remaining length over 127: up to four bytes, seven bits each
            length &= 0x7F
            shift = 7
            while True:
                if i >= end:
                    return publishes, controls, pos
                b = data[i]
                i += 1
                length |= (b & 0x7F) << shift
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
        if i + length > end:
            break
        if first >> 4 == PUBLISH:
            qos = (first >> 1) & 0x03
            tlen = (data[i] << 8) | data[i + 1]
            j = i + 2 + tlen
            # Consecutive messages mostly share a topic: compare in place before slicing it out.
            if tlen == len(last_raw) and data.startswith(last_raw, i + 2):
                topic = last_topic
            else:
                last_raw = data[i + 2 : j]
                topic = topics.get(last_raw)
                if topic is None:
                    if len(topics) >= TOPIC_CACHE_SIZE:
                        topics.clear()
                    topic = topics[last_raw] = last_raw.decode("utf-8", "replace")
                last_topic = topic
            packet_id = 0
            if qos:
                packet_id = (data[j] << 8) | data[j + 1]
                j += 2
            append(new_publish(Publish, (topic, data[j : i + length], packet_id, qos)))
        else:
            controls.append(Control(first >> 4, data[i : i + length]))
        pos = i + length
    return publishes, controls, pos
