"""Soak: hostile input through a real mosquitto to a running `plantwatch serve ingest`; its RSS stays flat.

Distinct topics under the plant's prefixes (unknown nodes, each one new to the subscriber's
topic cache), births of Sparkplug edge nodes nobody declared, and births of devices nobody
declared under the plant's own edge node (in sequence, so that the session takes them), each
with many aliases. Every one is dead-lettered. Before the caps, the topic cache, the alias
tables and the dead letters grew with every such message.

Bounded: SOAK_MESSAGES (default 200,000) messages in chunks, each chunk waited for until the
gateway has processed it (plantwatch_messages_total), so the broker never drops any and RSS
is sampled at known points. `make soak` runs millions.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from plantwatch.ingest import sparkplug as sp
from plantwatch.mqtt import wire
from plantwatch.mqtt.broker import free_port, start_mosquitto

PLANTS = (Path(__file__).parent / "plants", Path(__file__).parents[2] / "examples" / "plant")
MESSAGES = int(os.environ.get("SOAK_MESSAGES", "200000"))
CHUNK = 20_000
#: RSS may rise this much in the second half over the second quarter's highest sample
#: (allocator and SQLite page cache settling, the dead-letter publisher's queue filling to
#: its cap); unbounded, the same run grows by hundreds of MB (50 MB per 20,000 messages measured).
ALLOWED_GROWTH_KIB = 32 * 1024
#: Aliases per birth: enough that each birth kept would cost about a kilobyte (decoding them is the gateway's main cost here).
ALIASES = 8


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH: no acknowledgement to wait for; the chunks pace the stream."""
    return wire._packet(wire.PUBLISH << 4, struct.pack("!H", len(topic)) + topic.encode() + payload)


def births(seq: int, prefix: str) -> bytes:
    return sp.encode_payload(
        sp.Payload(
            1767254400000 + seq, seq % 256, tuple(sp.Metric(f"{prefix}/metric-{k}", k, None, sp.DOUBLE, float(k)) for k in range(ALIASES))
        )
    )


class HostileStream:
    """The i-th hostile message; the plant's edge node edge-7 gets its own births in sequence."""

    def __init__(self) -> None:
        self.seq = 0

    def packet(self, i: int) -> bytes:
        kind = i % 4
        if kind < 2:
            return publish_packet(f"sensors/soak/node-{i}/data", b'{"t": 1}')
        if kind == 2:
            return publish_packet(sp.topic(sp.Topic("plant-a", "NBIRTH", f"stranger-{i % 5000}")), births(0, f"s{i}"))
        # Devices nobody declared under the plant's edge node, seq in order (an NBIRTH every
        # 256), as an attacker who knows the edge node's id would send them.
        if self.seq % 256 == 0:
            self.seq += 1
            return publish_packet("spBv1.0/plant-a/NBIRTH/edge-7", births(0, "node"))
        seq, self.seq = self.seq, self.seq + 1
        return publish_packet(f"spBv1.0/plant-a/DBIRTH/edge-7/fake-{i}", births(seq, f"d{i}"))


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for lab, v in pattern.findall(text) if labels in (lab or ""))


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def test_rss_is_flat_under_hostile_topics_and_births(tmp_path):
    broker = start_mosquitto()
    port = free_port()
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "ingest",
            *sum((["-f", str(p)] for p in PLANTS), []),
            "--broker",
            broker.url,
            "--db",
            str(tmp_path / "soak.db"),
            "--client-id",
            "soak-gw",
            "--http-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            assert gateway.poll() is None, f"gateway exited with {gateway.returncode}"
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        sock = socket.create_connection(("127.0.0.1", broker.port))
        sock.sendall(wire.connect("soak-attacker", 60, clean=True))
        assert sock.recv(4)[:2] == bytes([wire.CONNACK << 4, 2])
        stream = HostileStream()
        samples: list[tuple[int, int]] = []
        sent = 0
        while sent < MESSAGES:
            n = min(CHUNK, MESSAGES - sent)
            sock.sendall(b"".join(stream.packet(i) for i in range(sent, sent + n)))
            sent += n
            deadline = time.time() + 120
            while metric(port, "plantwatch_messages_total") < sent:
                assert gateway.poll() is None, f"gateway exited with {gateway.returncode}"
                assert time.time() < deadline, f"the gateway processed {metric(port, 'plantwatch_messages_total'):.0f} of {sent}"
                time.sleep(0.05)
            samples.append((sent, rss_kib(gateway.pid)))
        sock.sendall(wire.DISCONNECT_PACKET)
        sock.close()
        assert metric(port, "plantwatch_messages_total") == MESSAGES
        assert metric(port, "plantwatch_rejected_total", 'reason="unknown_node"') >= MESSAGES * 0.99
        # the caps were reached, and what they dropped was counted
        assert metric(port, "plantwatch_state_evictions_total", 'structure="mqtt_topic_cache"') > 0
        assert metric(port, "plantwatch_state_evictions_total", 'structure="sparkplug_stranger_sessions"') > 0
        dropped = metric(port, "plantwatch_state_evictions_total", 'structure="mqtt_publish_queue"')
        print(f"soak: dead letters not republished (publish queue full): {dropped:.0f} of {MESSAGES}")
    finally:
        gateway.terminate()
        gateway.wait(30)
        broker.stop()
    # Flat after warm-up: the second half never rises past the highest RSS of the second quarter
    # by more than the allowance. A batch of thousands of dead letters is held until it is stored,
    # so single samples swing by tens of MiB; a cap that leaks would climb chunk after chunk.
    warm = max(rss for count, rss in samples if MESSAGES // 4 <= count <= MESSAGES // 2)
    after = [rss for count, rss in samples if count > MESSAGES // 2]
    print(f"soak: {MESSAGES} messages; RSS KiB after each chunk: {[rss for _, rss in samples]}")
    assert max(after) - warm <= ALLOWED_GROWTH_KIB, f"RSS grew from {warm} KiB to {max(after)} KiB: {samples}"
