"""`plantwatch up --broker ... --db ...` is as durable as `serve ingest`: killed mid-stream, restarted, nothing lost.

Real mosquitto started by the test, the real `plantwatch up` process, killed with SIGKILL
(no handler runs), restarted with the same arguments on the same store.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from tests.conftest import EXAMPLE_PLANT
from tests.integration.test_delivery import TOPIC, publish, readings, ready, wait_for_count

OVERHEAT = "machine-overtemperature/esp32-press-01/temperature"


class Up:
    """One `plantwatch up` command line, started, killed and restarted as a user would."""

    def __init__(self, tmp_path, broker_url: str):
        self.tmp_path = tmp_path
        self.db = tmp_path / "plant.db"
        self.summary = tmp_path / "summary.json"
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "up",
            "-f",
            str(EXAMPLE_PLANT),
            "--broker",
            broker_url,
            "--db",
            str(self.db),
            "--http-port",
            str(self.port),
            "--summary-json",
            str(self.summary),
            "--status-every",
            "3600",
        ]
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.runs += 1
        self.stdout = self.tmp_path / f"up-{self.runs}.out"
        with open(self.stdout, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not ready(self.port):
            assert time.time() < deadline and self.proc.poll() is None, f"up did not become ready: {self.output()}"
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> dict:
        """SIGTERM, as Ctrl-C would: drains, writes its summary and exits 0."""
        self.proc.terminate()
        assert self.proc.wait(30) == 0, self.output()
        return json.loads(self.summary.read_text())

    def output(self) -> str:
        return self.stdout.read_text()


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


def alert_rows(db, fingerprint: str | None = None) -> list[tuple[str, str, str]]:
    """(fingerprint, state, severity) of the stored alert events, oldest first."""
    where, params = ("WHERE fingerprint = ?", (fingerprint,)) if fingerprint else ("", ())
    try:
        return sqlite3.connect(db).execute(f"SELECT fingerprint, state, severity FROM alert_events {where} ORDER BY id", params).fetchall()
    except sqlite3.Error:
        return []


def wait_for_alert(db, state: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while (OVERHEAT, state, "warning") not in alert_rows(db, OVERHEAT):
        assert time.time() < deadline, f"no {state} row for {OVERHEAT}: {alert_rows(db)}"
        time.sleep(0.1)


def press_temperatures(url: str, t0: float, values: list[float]) -> None:
    """The press's temperature at 10 readings a second of event time, from t0."""
    pub = Publisher(url, client_id=f"press-{t0:.0f}-{len(values)}")
    pub.start()
    for i, value in enumerate(values):
        pub.publish(TOPIC, encode("esp32-json", "esp32-press-01", t0 + i * 0.1, {"temperature_c": value}))
    pub.stop()


def test_sigkill_mid_stream_stores_every_reading_exactly_once(tmp_path, broker):
    n = 20_000
    up = Up(tmp_path, broker.url)
    up.start()  # subscribes: from here on the broker keeps what up has not acknowledged
    t0 = time.time() - 600
    sender = threading.Thread(target=publish, args=(broker.url, t0, n, 4000.0))
    sender.start()
    while readings(up.db)[0] < 2_000:
        assert up.proc.poll() is None, up.output()
        time.sleep(0.01)
    up.kill()
    at_kill = readings(up.db)[0]
    assert at_kill < n, "the stream ended before the kill: nothing was tested"
    up.start()
    sender.join(120)
    try:
        rows, distinct = wait_for_count(up.db, n)
    finally:
        summary = up.stop()
    assert (rows, distinct) == (n, n), f"stored {rows} rows ({distinct} distinct) of {n}; {at_kill} before the kill"
    assert summary["broker"]["persistent_session"] is True
    assert summary["broker"]["client_id"].startswith("plantwatch-up-")
    assert f"session {summary['broker']['client_id']} (persistent)" in (tmp_path / "up-1.out").read_text()


def test_an_alert_firing_at_the_kill_is_carried_not_fired_again(tmp_path, broker):
    up = Up(tmp_path, broker.url)
    up.start()
    t0 = time.time() - 120
    press_temperatures(broker.url, t0, [75.0] * 40)  # above the warning level for 4 s: fires after 2 s
    wait_for_alert(up.db, "firing")
    # killed once the console receiver has told someone (an alert not yet delivered at the kill is
    # delivered after the restart: at least once, which this test does not look at)
    deadline = time.time() + 30
    while "ALERT WARNING   machine-overtemperature" not in up.output():
        assert time.time() < deadline, f"the firing alert was never delivered: {up.output()}"
        time.sleep(0.1)
    up.kill()
    up.start()
    press_temperatures(broker.url, t0 + 4.0, [75.0] * 40 + [40.0] * 10)  # still hot for 4 s, then cool
    wait_for_alert(up.db, "resolved")
    summary = up.stop()
    # one episode: one firing row (not a second one from rules restarted from scratch), one resolved row
    assert [(state, severity) for _, state, severity in alert_rows(up.db, OVERHEAT)] == [("firing", "warning"), ("resolved", "warning")]
    assert OVERHEAT not in summary["alerts_firing"] and summary["alerts_carried"] >= 1
    second_run = up.output()
    assert "ALERT WARNING   machine-overtemperature" not in second_run
    assert "ALERT RESOLVED  machine-overtemperature esp32-press-01/temperature" in second_run
    # the same holds for every alert of the plant (the silent nodes' absence alerts too):
    # no alert fires twice at one severity without resolving in between
    last: dict[str, tuple[str, str]] = {}
    for fingerprint, state, severity in alert_rows(up.db):
        assert last.get(fingerprint) != ("firing", severity) or state != "firing", f"{fingerprint} fired twice"
        last[fingerprint] = (state, severity)
