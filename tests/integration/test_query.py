"""A plant engineer's bench: `up --broker-port` on real mosquitto, readings sent with the real `mosquitto_pub`
(the README's own lines, one per timestamp form), then `plantwatch query` with no --db reads what was stored
from the default store under $XDG_STATE_HOME (each test's own, tests/conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from plantwatch.mqtt.broker import free_port
from plantwatch.query import read
from plantwatch.readings import AlertEvent, Reading
from tests.conftest import ROOT
from tests.integration.test_postgres_store import db, open_store  # noqa: F401 (the fixture: a SQLite file or a PostgreSQL database)
from tests.support.postgres import password, server  # noqa: F401 (fixtures)

PLANT = """\
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: bench-01}
spec:
  hardware: esp32
  payload: {format: esp32-json, topic: sensors/bench/bench-01/data}
  sensors:
    - {name: temperature, type: temperature, unit: celsius, field: temperature_c, range: {min: "-40", max: "125"}}
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: bench-hot}
spec:
  selector: {sensorType: temperature}
  condition: {type: Threshold, threshold: {warning: "70", critical: "80", hysteresis: "2"}}
  receivers: [console]
"""
TOPIC = "sensors/bench/bench-01/data"
MOSQUITTO_PUB = shutil.which("mosquitto_pub")


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.cli", *args], capture_output=True, text=True, timeout=60, check=check)


def _query(what: str, *args: str) -> list[dict]:
    return json.loads(_cli("query", what, "--json", *args).stdout)


def _readme_pub_lines(port: int) -> list[str]:
    """The README's copy-paste mosquitto_pub lines, pointed at this test's broker port."""
    block = re.search(r"One `mosquitto_pub` per form.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md: the mosquitto_pub example block after 'One `mosquitto_pub` per form' is gone"
    return [line.replace("-p 1883", f"-p {port}") for line in block[1].splitlines() if line.startswith("mosquitto_pub")]


def _pub(port: int, payload: str) -> None:
    subprocess.run([MOSQUITTO_PUB, "-p", str(port), "-q", "1", "-t", TOPIC, "-m", payload], check=True, timeout=10)


def _wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := predicate():
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(MOSQUITTO_PUB is None, reason="mosquitto_pub is not installed (apt-get install mosquitto-clients)")
def test_readings_sent_to_a_fixed_broker_port_are_queried_from_the_default_store(tmp_path, _state_home):
    plant = tmp_path / "bench-plant"
    plant.mkdir()
    (plant / "plant.yaml").write_text(PLANT)
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "plantwatch.cli", "up", "-f", str(plant), "--broker-kind", "mosquitto", "--broker-port", str(port),
         "--http-port", "0", "--status-every", "3600", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        banner = [up.stdout.readline() for _ in range(3)]
        assert f"broker: mqtt://127.0.0.1:{port}\n" in banner, banner
        store = _state_home / "plantwatch" / "bench-plant.db"
        assert f"store: {store}\n" in banner, banner

        for line in _readme_pub_lines(port):  # ISO 8601, epoch seconds, epoch milliseconds
            subprocess.run(["bash", "-c", line], check=True, timeout=10)
            time.sleep(1.1)  # as the README says: stamped to the second, two in one second would conflict
        now = time.time()
        # Stamped after the README's readings, so the rule sees them in event time:
        # warning fires, escalates to critical, resolves.
        for dt, value in ((0.1, 75.0), (0.2, 85.0), (0.3, 20.0)):
            _pub(port, json.dumps({"device_id": "bench-01", "timestamp": round((now + dt) * 1000), "temperature_c": value}))
        _pub(port, '{"device_id": "bench-01", "timestamp": "1767600000", "temperature_c": 20}')  # epoch in a string: refused
        _pub(port, "not json")

        _wait_for(lambda: len(_query("readings")) == 6 and len(_query("dead-letters")) == 2, "6 readings and 2 dead letters")
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, up.stderr.read()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

    readings = _query("readings", "--node", "bench-01", "--sensor", "temperature")
    assert [r["value"] for r in readings] == [21.5, 21.6, 21.7, 75.0, 85.0, 20.0]  # in time order
    assert all(r["unit"] == "celsius" for r in readings)
    assert len(_query("readings", "--from", "1h", "--limit", "2")) == 2
    assert _query("readings", "--node", "no-such-node") == []

    events = [(a["event"], a["severity"], a["rule"], a["value"]) for a in _query("alerts")]
    assert events == [
        ("fired", "warning", "bench-hot", 75.0),
        ("escalated", "critical", "bench-hot", 85.0),
        ("resolved", "critical", "bench-hot", 20.0),
    ]

    letters = {d["reason"]: d for d in _query("dead-letters")}
    assert set(letters) == {"bad_timestamp", "malformed"}
    assert letters["malformed"]["payload_excerpt"] == "not json" and letters["malformed"]["topic"] == TOPIC
    assert _query("dead-letters", "--reason", "malformed")[0]["payload_bytes"] == 8

    (series,) = _query("summary")
    assert (series["node"], series["sensor"], series["count"], series["min"], series["max"], series["last"]) == (
        "bench-01", "temperature", 6, 20.0, 85.0, 20.0,
    )  # fmt: skip
    assert len(series["sparkline"]) == 24 and "█" in series["sparkline"] and "▁" in series["sparkline"]

    table = _cli("query", "readings", "--summary").stdout
    assert table.splitlines()[0].split() == ["NODE", "SENSOR", "COUNT", "MIN", "MEAN", "MAX", "LAST", "SINCE", "TREND"]
    assert "bench-01" in table and "20 celsius" in table

    # The same default store again: the run continues it (the alert stays resolved, nothing is lost).
    again = _cli("up", "-f", str(plant), "--broker-port", str(port), "--http-port", "0", "--duration", "1")
    assert f"store: {store}" in again.stdout
    assert len(_query("readings")) == 6 and len(_query("alerts")) == 3


def test_a_broker_port_in_use_is_refused_naming_it(tmp_path):
    plant = tmp_path / "bench-plant"
    plant.mkdir()
    (plant / "plant.yaml").write_text(PLANT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _cli("up", "-f", str(plant), "--broker-port", str(port), "--http-port", "0", "--duration", "1", check=False)
    assert run.returncode == 1
    assert f"--broker-port {port} is in use" in run.stderr and f"--broker mqtt://127.0.0.1:{port}" in run.stderr


def test_query_without_any_store_says_where_it_looked(_state_home):
    run = _cli("query", "readings", check=False)
    assert run.returncode == 1
    assert f"no `plantwatch up` has written one under {_state_home / 'plantwatch'}" in run.stderr


def test_both_engines_answer_the_same(db):  # noqa: F811 (the fixture)
    store = open_store(db)
    t = 1767600000.0
    event = AlertEvent("bench-hot/n1/temp", "bench-hot", "n1", "temp", "firing", "warning", 75.0, t + 2, "hot")
    store.write(
        [Reading("n1", "temp", "temperature", float(v), t + i, "celsius") for i, v in enumerate((20, 75, 85, 20))]
        + [Reading("n2", "temp", "temperature", 5.0, t, "celsius")],
        [
            event,
            replace(event, severity="critical", value=85.0, ts=t + 3),
            replace(event, state="resolved", severity="critical", value=20.0, ts=t + 4),
        ],
        [(t + 1, "x/y", "malformed", "not valid JSON", b"\x00garbage")],
    )
    store.close()
    f = read.Filter(node="n1", since=t + 1)
    assert [(r["ts"], r["value"]) for r in read.readings(db, f)] == [(t + 1, 75.0), (t + 2, 85.0), (t + 3, 20.0)]
    assert [(a["event"], a["severity"]) for a in read.alerts(db, f)] == [
        ("fired", "warning"),
        ("escalated", "critical"),
        ("resolved", "critical"),
    ]
    # Under a range that starts mid-alert, the escalation is still one (its previous event is looked up outside the range).
    assert [a["event"] for a in read.alerts(db, read.Filter(since=t + 3))] == ["escalated", "resolved"]
    (letter,) = read.dead_letters(db, read.Filter())
    assert (letter["reason"], letter["payload_excerpt"], letter["payload_bytes"]) == ("malformed", "\\x00garbage", 8)
    n1, n2 = read.summary(db, read.Filter())
    assert (n1["count"], n1["min"], n1["mean"], n1["max"], n1["last"], n2["count"]) == (4, 20.0, 50.0, 85.0, 20.0, 1)
    assert n1["sparkline"][0] == "▁" and "█" in n1["sparkline"] and n1["sparkline"][-1] == "▁"
