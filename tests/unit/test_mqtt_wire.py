"""MQTT 3.1.1 packets of the gateway's receive path: partial reads, QoS, big messages."""

from __future__ import annotations

import struct

import pytest

from plantwatch.mqtt import wire


def publish(topic: str, payload: bytes, qos: int = 1, packet_id: int = 7, dup: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + (struct.pack("!H", packet_id) if qos else b"") + payload
    return wire._packet(wire.PUBLISH << 4 | qos << 1 | (0x08 if dup else 0), body)


def test_many_packets_in_one_read_and_a_split_one_kept_for_later():
    stream = publish("a/b", b"x" * 10, packet_id=1) + publish("a/c", b"", qos=0) + publish("a/b", b"y" * 300, packet_id=3, dup=True)
    buf = bytearray(stream[:-5])
    topics: dict[bytes, str] = {}
    pubs, controls, used = wire.parse(buf, topics)
    assert [(p.topic, len(p.payload), p.qos, p.packet_id) for p in pubs] == [("a/b", 10, 1, 1), ("a/c", 0, 0, 0)]
    assert controls == [] and used == len(publish("a/b", b"x" * 10, packet_id=1) + publish("a/c", b"", qos=0))
    rest = bytearray(stream[used:])
    (p,), _, consumed = wire.parse(rest, topics)
    assert (p.payload, p.packet_id, consumed) == (b"y" * 300, 3, len(rest))
    assert topics == {b"a/b": "a/b", b"a/c": "a/c"}


def test_remaining_length_of_large_messages():
    big = publish("t", b"z" * 2_000_000)
    (p,), _, _ = wire.parse(bytearray(big), {})
    assert len(p.payload) == 2_000_000


def test_controls_and_acks():
    _, (ack,), _ = wire.parse(bytearray(b"\x90\x03\x00\x01\x01"), {})
    assert ack.type == wire.SUBACK and ack.body == b"\x00\x01\x01"
    assert wire.puback([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert wire.connect("gw", 30, clean=False)[:2] == b"\x10\x0e"
    with pytest.raises(wire.ProtocolError):
        wire.parse(bytearray(b"\x30\xff\xff\xff\xff\x01"), {})


def test_the_topic_cache_is_bounded_and_names_stay_right():
    topics = wire.TopicCache()
    n = 3 * wire.TOPIC_CACHE_SIZE + 5
    names = [f"sensors/h/node-{i}/data" for i in range(n)]
    pubs, _, _ = wire.parse(bytearray(b"".join(publish(name, b"{}", qos=0) for name in names)), topics)
    assert [pub.topic for pub in pubs] == names
    assert 0 < len(topics) <= wire.TOPIC_CACHE_SIZE and topics.evicted == n - len(topics)
    # the plant's own topic is cached again at once
    wire.parse(bytearray(publish("sensors/h/mine/data", b"{}", qos=0) * 2), topics)
    assert topics[b"sensors/h/mine/data"] == "sensors/h/mine/data"
