"""Poison messages against a running `plantwatch serve ingest` with a persistent session and a real mosquitto.

Each payload below once stopped the gateway (the three influx-line ones of issue 8), or
is crafted to reach a corner of its format's decoder. The gateway must stay up, dead-letter
each of them with a reason, store every good message around them, acknowledge the lot, and
after a SIGKILL and a restart under the same client id neither die nor get them again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from tests.conftest import EXAMPLE_PLANT
from tests.integration.test_gateway_service import status, wait_status

SPARKPLUG_CELL = Path(__file__).parent / "plants" / "sparkplug-cell.yaml"
JETSON = "sensors/hall-1/jetson-cell-01/metrics"
ESP32 = "sensors/hall-1/esp32-press-01/data"
RPI = "sensors/hall-1/rpi-line1-env/environmental"
BOILER = "sensors/hall-2/boiler-gateway/events"
COLDROOM = "sensors/coldroom/coldroom-feed/docs"
CELL = "spBv1.0/plant-a/DDATA/edge-7/press-3"
TS = '"2026-01-01T08:00:00Z"'
LP = "machine,device=jetson-cell-01 "


def sparkplug_raw(*fields: tuple[int, int, object]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        sp._put_field(out, number, wire, value)
    return bytes(out)


#: (topic, payload, the reason its dead letter must give).
POISON = [
    (JETSON, (LP + "spindle_current=²i").encode(), "malformed"),  # the three of the issue
    (JETSON, (LP + "spindle_current=" + "9" * 400 + "i").encode(), "out_of_range"),
    (JETSON, (LP + "spindle_current=1 " + "1" * 5000).encode(), "bad_timestamp"),
    (JETSON, (LP + "spindle_current=1 --5").encode(), "bad_timestamp"),
    (JETSON, (LP + "spindle_current=1 ١٢٣").encode(), "bad_timestamp"),
    (JETSON, (LP + "spindle_current=1,spindle_current=2").encode(), "malformed"),
    (JETSON, (LP + "spindle_speed=-1u").encode(), "out_of_range"),
    (JETSON, (LP + 'spindle_current="unterminated').encode(), "malformed"),
    (ESP32, b'{"device_id":"esp32-press-01","timestamp":' + TS.encode() + b',"temperature_c":20,"temperature_c":90}', "malformed"),
    (ESP32, b'{"device_id":"esp32-press-01","timestamp":' + TS.encode() + b',"temperature_c":20,"temperatur\\u0065_c":90}', "malformed"),
    (ESP32, b'{"device_id":"esp32-press-01","timestamp":18446744073709551615,"temperature_c":20}', "timestamp_skew"),
    (ESP32, b'{"device_id":"esp32-press-01","timestamp":"0001-01-01T00:00:00+01:00","temperature_c":20}', "timestamp_skew"),
    (ESP32, b"[" * 5000 + b"]" * 5000, "malformed"),
    (
        RPI,
        b'{"device_id":"rpi-line1-env","timestamp":' + TS.encode() + b',"sensors":{"bme280":{"humidity_percent":1,"humidity_percent":2}}}',
        "malformed",
    ),
    (RPI, b'{"device_id":"rpi-line1-env","timestamp":' + TS.encode() + b',"sensors":[1,2]}', "wrong_type"),
    (BOILER, b'{"sensor_id":"b","sensor_type":"temperature","value":1e400,"timestamp":' + TS.encode() + b"}", "malformed"),
    (BOILER, b'{"sensor_id":"b","sensor_type":"temperature","value":{"a":1,"a":2},"timestamp":' + TS.encode() + b"}", "malformed"),
    (COLDROOM, b'{"id":"1","sensor_id":"s","temperature":4,"temperature":40,"timestamp":' + TS.encode() + b"}", "malformed"),
    (COLDROOM, b'{"id":"1","sensor_id":"s","temperature":4,"timestamp":true}', "bad_timestamp"),
    (CELL, b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "malformed"),  # a length past the end
    (CELL, sparkplug_raw((2, 2, sparkplug_raw((1, 0, 5)))), "malformed"),  # a metric name with the varint wire type
]


def good(topic: str, i: int, now: float) -> bytes:
    t = now - 60 + i * 0.01
    if topic == ESP32:
        return encode("esp32-json", "esp32-press-01", t, {"temperature_c": 30.0 + i % 10})
    return encode("influx-line", "jetson-cell-01", t, {"spindle_current": 10.0 + i % 10})


def rows(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(db) as c:
            return c.execute(sql).fetchall()
    except sqlite3.Error:  # not yet created by the gateway
        return []


def wait_for(db: Path, readings: int, dead: int, gateway: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while True:
        got = (rows(db, "SELECT count(*) FROM readings") or [(0,)])[0][0], (rows(db, "SELECT count(*) FROM dead_letters") or [(0,)])[0][0]
        if got[0] >= readings and got[1] >= dead:
            return
        assert gateway.poll() is None, f"the gateway stopped (exit {gateway.returncode}): {log.read_text()[-3000:]}"
        assert time.time() < deadline, f"(readings, dead letters) = {got}, expected at least ({readings}, {dead})"
        time.sleep(0.1)


def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    pub = Publisher(url, client_id="poison-publisher")
    pub.start()
    for topic, payload in messages:
        pub.publish(topic, payload)
    pub.stop(timeout=30)  # after every PUBACK: the broker holds them all


def mixed(now: float, start: int) -> list[tuple[str, bytes]]:
    """Each poison between two good messages, so that the batches hold both."""
    out = []
    for i, (topic, payload, _) in enumerate(POISON):
        out += [(ESP32, good(ESP32, start + 2 * i, now)), (topic, payload), (JETSON, good(JETSON, start + 2 * i + 1, now))]
    return out


def test_poison_messages_are_dead_lettered_and_acknowledged_and_never_come_back(tmp_path):
    db, log, http_port = tmp_path / "plant.db", tmp_path / "gateway.log", free_port()
    broker = start_mosquitto(data_dir=tmp_path / "broker")
    command = [
        sys.executable,
        "-m",
        "plantwatch.cli",
        "serve",
        "ingest",
        "-f",
        str(EXAMPLE_PLANT),
        "-f",
        str(SPARKPLUG_CELL),
        "--broker",
        broker.url,
        "--db",
        str(db),
        "--http-port",
        str(http_port),
        "--client-id",
        "poison-gateway",
    ]
    health = f"http://127.0.0.1:{http_port}/healthz"
    gateway = None

    def start() -> subprocess.Popen:
        with log.open("a") as err:  # a file, not a pipe nobody reads while the test waits
            process = subprocess.Popen(command, stderr=err, text=True)
        wait_status(f"http://127.0.0.1:{http_port}/readyz", 200)
        return process

    try:
        now, n = time.time(), len(POISON)
        # 1. Published to the running gateway.
        gateway = start()
        publish(broker.url, mixed(now, 0))
        wait_for(db, 2 * n, n, gateway, log)
        assert status(health) == 200
        gateway.kill()  # no drain: what was not yet acknowledged comes again
        gateway.wait(10)
        # 2. Queued for its persistent session while it is down: the restart meets them first
        #    (before the fix, it died on the first one, every time).
        publish(broker.url, mixed(now, 2 * n))
        gateway = start()
        wait_for(db, 4 * n, 2 * n, gateway, log)
        publish(broker.url, [(ESP32, good(ESP32, 10_000, now))])  # after everything queued before it
        wait_for(db, 4 * n + 1, 2 * n, gateway, log)
        assert status(health) == 200
        first = rows(db, "SELECT count(*) FROM dead_letters")[0][0]
        gateway.terminate()
        assert gateway.wait(20) == 0, log.read_text()[-3000:]
        # 3. A restart gets nothing again: a message behind any redelivery is stored with no new dead letter.
        gateway = start()
        publish(broker.url, [(ESP32, good(ESP32, 10_001, now))])
        wait_for(db, 4 * n + 2, 0, gateway, log)
        assert rows(db, "SELECT count(*) FROM dead_letters")[0][0] == first
        assert status(health) == 200
        gateway.terminate()
        assert gateway.wait(20) == 0, log.read_text()[-3000:]
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.kill()
        broker.stop()

    # Every good message stored once; each poison dead-lettered with its reason, in order, once per
    # publication (twice at most for the first round: the SIGKILL may beat a batch's acknowledgement).
    assert rows(db, "SELECT count(DISTINCT node || ts) FROM readings")[0][0] == 4 * n + 2
    letters = rows(db, "SELECT topic, reason, payload FROM dead_letters ORDER BY id")
    expected = [(topic, reason, payload[:64]) for topic, payload, reason in POISON]
    got = [(topic, reason, bytes(payload[:64])) for topic, reason, payload in letters]
    assert got[-n:] == expected  # the second round, queued while the gateway was down
    assert got[:n] == expected and len(got) in range(2 * n, 3 * n + 1)
    assert all(g in expected for g in got)
