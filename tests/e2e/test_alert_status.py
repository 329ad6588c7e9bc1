"""The gateway's alert report on a real control plane: alert events in a real SQLite store become each
AlertRule's firingCount and lastFired and an Event on the SensorNode per firing and resolve.

The reporter runs as its own process, authenticated only by the gateway's ServiceAccount with the
Role the operator renders for it (applied here from render_ingestion), so the Role is shown to be
enough; it writes at most 3 objects a round, so the plant's four rules and their Events take
several rounds. A restarted reporter replays its recent rows and posts no Event twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plantwatch.contracts.times import iso
from plantwatch.readings import AlertEvent
from plantwatch.store.sqlite import SqliteStore
from plantwatch_operator.config import Config
from plantwatch_operator.render import plant_manifest, render_ingestion
from tests.conftest import EXAMPLE_PLANT
from tests.e2e.host_pods import service_account_kubeconfig
from tests.e2e.test_operator import crds, get, wait_for  # noqa: F401 (fixtures)

REPORTER = """
import sys
from plantwatch.ingest.alert_status import AlertStatusReporter
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore

reporter = AlertStatusReporter(SqliteStore(sys.argv[1]), sys.argv[2], load_plant(sys.argv[3]), interval_s=0.2, max_writes=3)
reporter.start()
sys.stdin.read()  # until the test closes stdin
reporter.stop()
"""


@pytest.fixture
def namespace(cluster):
    from tests.e2e.conftest import namespace as fresh

    yield from fresh.__wrapped__(cluster)


def as_gateway(cluster, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig with nothing but the token of the gateway's ServiceAccount, whose Role is the operator's rendering."""
    docs = [d for f in ("nodes.yaml", "rules.yaml") for d in yaml.safe_load_all((EXAMPLE_PLANT / f).read_text()) if d]
    rendered = render_ingestion(namespace, [plant_manifest(d) for d in docs], Config())
    identity = [o for o in rendered if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": identity}))
    return service_account_kubeconfig(cluster, namespace, "plantwatch-gateway", tmp_path / "kubeconfig")


class Reporter:
    """The reporter process; `restart` stops it and starts a new one on the same store."""

    def __init__(self, db: Path, namespace: str, kubeconfig: Path, log: Path):
        self._args = [sys.executable, "-c", REPORTER, str(db), namespace, str(EXAMPLE_PLANT)]
        self._env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self._log = log
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(self._args, env=self._env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.stdin.close()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def reporter(cluster, crds, namespace, tmp_path) -> Iterator[tuple[Reporter, SqliteStore]]:  # noqa: F811
    for f in ("nodes.yaml", "rules.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT / f))
    db = tmp_path / "plant.db"
    store = SqliteStore(db)
    proc = Reporter(db, namespace, as_gateway(cluster, namespace, tmp_path), tmp_path / "reporter.log")
    try:
        yield proc, store
    finally:
        proc.stop()
        store.close()
        if (tmp_path / "reporter.log").exists():
            print((tmp_path / "reporter.log").read_text()[-4000:])


def alert(rule: str, node: str, sensor: str, state: str, ts: float, summary: str) -> AlertEvent:
    return AlertEvent(f"{rule}/{node}/{sensor}", rule, node, sensor, state, "warning", 80.0, ts, summary)


def events(cluster, namespace: str, node: str, reason: str) -> list[dict]:
    selector = f"involvedObject.kind=SensorNode,involvedObject.name={node},reason={reason}"
    return json.loads(cluster.kubectl("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json").stdout)["items"]


def status(cluster, namespace: str, rule: str) -> dict:
    return (get(cluster, "alertrule", rule, "-n", namespace) or {}).get("status") or {}


def test_alert_events_become_rule_status_and_node_events(cluster, reporter, namespace):
    proc, store = reporter
    now = time.time()
    # History from before the reporter started: an old alert (counted, too old to announce: the
    # single AlertFiring Event below is the recent one's) and a recent one.
    store.write(
        alerts=[
            alert("vibration-high", "esp32-press-01", "vibration", "firing", now - 7200, "press vibration 2.1 g above 1.5 g"),
            alert("vibration-high", "esp32-press-01", "vibration", "resolved", now - 7000, "press vibration back below 1.5 g"),
            alert("machine-overtemperature", "esp32-press-01", "temperature", "firing", now - 60, "press temperature 81.2 °C above 80 °C"),
        ]
    )
    proc.start()

    def reported(rule: str, expected: dict) -> dict | None:
        got = status(cluster, namespace, rule)
        return got if all(got.get(k) == v for k, v in expected.items()) else None

    wait_for(lambda: reported("machine-overtemperature", {"firingCount": 1, "lastFired": iso(int(now - 60))}), "one alert firing")
    wait_for(lambda: reported("vibration-high", {"firingCount": 0, "lastFired": iso(int(now - 7200))}), "a resolved alert's last firing")
    quiet = wait_for(lambda: reported("node-silent", {"firingCount": 0}), "a rule that never fired at 0")
    assert "lastFired" not in quiet
    (firing,) = wait_for(lambda: events(cluster, namespace, "esp32-press-01", "AlertFiring"), "the AlertFiring Event on the press")
    assert (firing["type"], firing["message"]) == ("Warning", "press temperature 81.2 °C above 80 °C")
    assert firing["involvedObject"]["uid"] == get(cluster, "sensornode", "esp32-press-01", "-n", namespace)["metadata"]["uid"]
    header, row = cluster.kubectl("get", "alertrule", "machine-overtemperature", "-n", namespace).stdout.splitlines()
    assert row[header.index("FIRING") :].split()[0] == "1"  # the printer column a user reads

    # New rows: a second series fires, the press resolves.
    store.write(alerts=[alert("machine-overtemperature", "rpi-line1-env", "temperature", "firing", now, "hall air 41 °C above 40 °C")])
    store.write(alerts=[alert("machine-overtemperature", "esp32-press-01", "temperature", "resolved", now + 1, "press back below 80 °C")])
    wait_for(lambda: reported("machine-overtemperature", {"firingCount": 1, "lastFired": iso(int(now))}), "the other series firing")
    (resolved,) = wait_for(lambda: events(cluster, namespace, "esp32-press-01", "AlertResolved"), "the AlertResolved Event")
    assert (resolved["type"], resolved["message"]) == ("Normal", "press back below 80 °C")
    wait_for(lambda: events(cluster, namespace, "rpi-line1-env", "AlertFiring"), "the AlertFiring Event on the Pi")
    described = cluster.kubectl("describe", "sensornode", "esp32-press-01", "-n", namespace).stdout
    assert "AlertFiring" in described and "AlertResolved" in described  # what a user sees

    # A restarted gateway replays its recent rows: every Event is already there, none is posted twice.
    proc.restart()
    store.write(alerts=[alert("machine-overtemperature", "rpi-line1-env", "temperature", "resolved", now + 2, "hall air back below 40 °C")])
    wait_for(lambda: events(cluster, namespace, "rpi-line1-env", "AlertResolved"), "the Event of a row after the restart")
    wait_for(lambda: reported("machine-overtemperature", {"firingCount": 0}), "no alert firing")
    assert len(events(cluster, namespace, "esp32-press-01", "AlertFiring")) == 1
    assert len(events(cluster, namespace, "esp32-press-01", "AlertResolved")) == 1
    assert len(events(cluster, namespace, "rpi-line1-env", "AlertFiring")) == 1
