"""`plantwatch serve ingest` (what the gateway pods run) against a real mosquitto."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from tests.conftest import EXAMPLE_PLANT


def status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def stored(db) -> int:
    try:
        return sqlite3.connect(db).execute("SELECT count(*) FROM readings").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_status(url: str, code: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while status(url) != code:
        assert time.time() < deadline, f"{url} did not answer {code}"
        time.sleep(0.1)


def test_gateway_waits_for_its_broker_then_stores_and_drains_on_sigterm(tmp_path):
    mqtt_port, http_port = free_port(), free_port()
    db = tmp_path / "plant.db"
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "serve",
            "ingest",
            "-f",
            str(EXAMPLE_PLANT),
            "--broker",
            f"mqtt://127.0.0.1:{mqtt_port}",
            "--db",
            str(db),
            "--http-port",
            str(http_port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    broker = None
    try:
        base = f"http://127.0.0.1:{http_port}"
        wait_status(base + "/healthz", 200)
        assert status(base + "/readyz") == 503  # no broker yet: alive, not ready
        broker = start_mosquitto(mqtt_port)
        wait_status(base + "/readyz", 200)
        pub = Publisher(broker.url)
        pub.start()
        now = time.time()
        for i in range(50):
            pub.publish(
                "sensors/hall-1/esp32-press-01/data",
                encode("esp32-json", "esp32-press-01", now - 50 + i, {"temperature_c": 40.0 + i * 0.1}),
            )
        pub.stop()
        deadline = time.time() + 20
        while stored(db) < 50 and time.time() < deadline:
            time.sleep(0.1)
        gateway.terminate()
        assert gateway.wait(20) == 0, gateway.stderr.read()
    finally:
        if gateway.poll() is None:
            gateway.kill()
        if broker:
            broker.stop()
    rows = sqlite3.connect(db).execute("SELECT count(*), min(value), max(value) FROM readings").fetchone()
    assert rows[0] == 50 and round(rows[1], 1) == 40.0 and round(rows[2], 1) == 44.9
