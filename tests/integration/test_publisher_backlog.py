"""A publisher without a bound loses nothing when more messages wait than QoS 1 has packet ids.

paho refuses a QoS 1 message while all 65,535 packet ids are taken by messages not yet
acknowledged; the publisher then waits for one rather than dropping the message. A real
mosquitto holds the backlog for a persistent session that is offline meanwhile, as a
gateway's is while it restarts; the session then takes every message, once.
"""

from __future__ import annotations

import subprocess

import pytest

from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import PACKET_IDS, Publisher

MESSAGES = PACKET_IDS + 4_465  # 70,000: past the packet ids, well within the broker's queue


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


def test_a_backlog_past_the_packet_ids_reaches_an_offline_session_whole(broker):
    session = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-c", "-i", "backlog-reader", "-q", "1", "-t", "backlog/#"]
    subprocess.run([*session, "-E"], check=True, timeout=30)  # the session exists, then goes offline
    pub = Publisher(broker.url, client_id="backlog-writer")
    pub.start()
    for i in range(MESSAGES):
        pub.publish(f"backlog/{i % 7}", b"%d" % i)
    assert pub.flushed(120)
    pub.stop()
    assert pub.dropped == 0
    read = subprocess.run([*session, "-C", str(MESSAGES), "-W", "120"], capture_output=True, text=True, timeout=180)
    received = read.stdout.split()
    assert len(received) == MESSAGES and sorted(map(int, received)) == list(range(MESSAGES))
