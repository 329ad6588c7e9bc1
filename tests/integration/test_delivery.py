"""Nothing accepted is lost: the gateway killed mid-stream, and the broker restarted.

Real mosquitto, the real gateway process (`plantwatch serve ingest`), a real SQLite file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from tests.conftest import EXAMPLE_PLANT

TOPIC = "sensors/hall-1/esp32-press-01/data"


def readings(db) -> tuple[int, int]:
    """(rows, distinct timestamps) of the press's temperature."""
    try:
        return (
            sqlite3.connect(db)
            .execute("SELECT count(*), count(DISTINCT ts) FROM readings WHERE node = 'esp32-press-01' AND sensor = 'temperature'")
            .fetchone()
        )
    except sqlite3.Error:
        return 0, 0


def inflight(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    line = next((row for row in text.splitlines() if row.startswith("plantwatch_pipeline_inflight_messages ")), None)
    return float(line.split()[1]) if line else 0.0


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except (urllib.error.URLError, OSError):
        return False


class Gateway:
    def __init__(self, broker_url: str, db, client_id: str = "plantwatch-gateway-test"):
        self.args = [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "ingest",
            "-f",
            str(EXAMPLE_PLANT),
            "--broker",
            broker_url,
            "--db",
            str(db),
            "--client-id",
            client_id,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([*self.args, "--http-port", str(self.port)])
        deadline = time.time() + 30
        while not ready(self.port):
            assert time.time() < deadline and self.proc.poll() is None, "the gateway did not become ready"
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(20) == 0


def publish(url: str, t0: float, n: int, per_second: float) -> None:
    pub = Publisher(url, client_id=f"press-{int(t0)}")
    pub.start()
    for i in range(n):
        pub.publish(TOPIC, encode("esp32-json", "esp32-press-01", t0 + i * 0.001, {"temperature_c": 40.0 + (i % 100) / 10}))
        if i % 50 == 49:
            time.sleep(50 / per_second)
    pub.stop()


def wait_for_count(db, n: int, timeout: float = 60.0) -> tuple[int, int]:
    deadline = time.time() + timeout
    while readings(db)[0] < n and time.time() < deadline:
        time.sleep(0.2)
    return readings(db)


@pytest.fixture
def broker(tmp_path):
    data = tmp_path / "broker"
    data.mkdir()
    b = start_mosquitto(data_dir=data)
    yield b
    b.stop()


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(tmp_path, broker):
    """Kill the gateway while thousands of messages are received but not yet stored.

    A backlog queued for the gateway's session while it was away arrives at broker
    speed, and a node keeps publishing; the kill lands right after the first batch is
    committed. Acknowledging on receipt would lose the rest of what was received.
    """
    backlog, live = 10_000, 5_000
    db = tmp_path / "plant.db"
    gateway = Gateway(broker.url, db)
    gateway.start()  # registers the persistent session ...
    gateway.stop()  # ... which the broker keeps while the gateway is away
    t0 = time.time() - 600
    publish(broker.url, t0, backlog, 50_000.0)
    gateway.start()
    sender = threading.Thread(target=publish, args=(broker.url, t0 + 100, live, 2000.0))
    sender.start()
    # the moment to kill: a backlog received and not yet stored, or the first batch committed
    while inflight(gateway.port) < 500 and readings(db)[0] == 0:
        time.sleep(0.002)
    gateway.kill()
    at_kill = readings(db)[0]
    assert at_kill < backlog + live
    gateway.start()
    sender.join(60)
    try:
        rows, distinct = wait_for_count(db, backlog + live)
    finally:
        gateway.stop()
    assert (rows, distinct) == (backlog + live, backlog + live), (
        f"stored {rows} rows ({distinct} distinct) of {backlog + live}; {at_kill} before the kill"
    )


def test_broker_restart_is_survived(tmp_path):
    data = tmp_path / "broker"
    data.mkdir()
    port = free_port()
    broker = start_mosquitto(port, data_dir=data)
    db = tmp_path / "plant.db"
    gateway = Gateway(broker.url, db)
    gateway.start()
    try:
        t0 = time.time() - 60
        publish(broker.url, t0, 500, 2000.0)
        assert wait_for_count(db, 500)[0] == 500
        broker.stop()
        time.sleep(1.0)
        broker = start_mosquitto(port, data_dir=data)
        deadline = time.time() + 30
        while not ready(gateway.port):
            assert time.time() < deadline, "the gateway did not reconnect to the restarted broker"
            time.sleep(0.1)
        publish(broker.url, t0 + 10, 500, 2000.0)
        assert wait_for_count(db, 1000) == (1000, 1000)
    finally:
        gateway.stop()
        broker.stop()
