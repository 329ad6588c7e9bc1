"""`plantwatch backup` and `plantwatch restore`: a store restored into an empty one serves the same history.

A store on a real PostgreSQL with readings, summaries, alert episodes (acknowledged, resolved),
a silence, notifications and a shard checkpoint is backed up by the command; restored by the
command into a new database and into a SQLite file, each answers the alerts API and the
readings API (real HTTP servers) exactly as the original does, and a gateway could go on
from it (the checkpoint and the notifier's cursor came along).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from plantwatch.alerts.api import PREFIX, AlertsApi
from plantwatch.alerts.lifecycle import Matcher
from plantwatch.health import HealthServer
from plantwatch.mqtt.broker import free_port
from plantwatch.readings import AlertEvent, Reading
from plantwatch.store import postgres
from plantwatch.store.alert_state import AlertState
from plantwatch.store.postgres import PostgresStore
from plantwatch.store.shard_state import Checkpoint
from plantwatch.store.sqlite import SqliteStore
from tests.support.postgres import password, server  # noqa: F401 (fixtures)

FP = "overheat/press-1/temperature"
PATHS = [
    "alerts",
    f"alerts/{FP}",
    f"alerts/{FP}/history",
    "silences",
    "readings?node=press-1",
    "readings?node=press-2&sensor=pressure&since=1000050&until=1000100",
    "readings/newest?node=press-2",
]


def fill(url: str) -> None:
    store = PostgresStore(url)
    store.claim_shard(3, "pw-0-of-1", 1.0)
    for start in range(0, 2000, 500):  # four batches, each with the shard's checkpoint
        batch = [Reading(f"press-{n}", s, "temperature", 20.0 + i / 7, 1_000_000 + i, "celsius") for i in range(start, start + 500)
                 for n in (1, 2) for s in ("temperature", "pressure")]  # fmt: skip
        store.write(batch, checkpoint=Checkpoint(3, 1, f"state after {start}".encode()))
    store.summarize([("press-1", "temperature", 1_000_000.0 + w, 60.0) for w in range(0, 600, 60)])
    fire = AlertEvent(FP, "overheat", "press-1", "temperature", "firing", "warning", 81.0, 1_000_100.0, "hot")
    store.write(alerts=[fire], dead_letters=[(1_000_000.0, "sensors/x", "malformed", "not JSON", b"\xff\x00")])
    state = AlertState(url, replay=True)  # opened after the events: it announces them all the same
    with state.tx() as tx:
        state.apply_events(tx)
        state.enqueue(tx, "n1", "ops", "firing", "overheat", {"alerts": [FP]}, 1_000_101.0)
    state.ack(FP, "ann", "on it", 1_000_102.0)
    state.add_silence([Matcher("node", "=", "press-2")], 1_000_000.0, 2_000_000.0, "bob", "maintenance", 1_000_103.0)
    store.write(alerts=[AlertEvent(FP, "overheat", "press-1", "temperature", "resolved", "warning", 60.0, 1_000_200.0, "ok")])
    with state.tx() as tx:
        state.apply_events(tx)
    state.close()
    store.close()


def answers(db: str) -> dict[str, bytes]:
    state = AlertState(db)
    port = free_port()
    api = AlertsApi(state, None, open_reads=True, clock=lambda: 1_500_000.0)
    health = HealthServer(port, healthy=lambda: True, ready=lambda: True, host="127.0.0.1", routes={PREFIX: api})
    health.start()
    try:
        out = {}
        for path in PATHS:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{PREFIX}{path}", timeout=10) as resp:
                out[path] = resp.read()
        return out
    finally:
        health.stop()
        state.close()


def plantwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.cli", *args], capture_output=True, text=True, timeout=120)


def test_a_restored_store_serves_the_same_history_on_either_engine(server, password, tmp_path):  # noqa: F811
    original = server.fresh_database("original")
    fill(original)
    before = answers(original)
    assert b"acknowledged" in before[f"alerts/{FP}/history"] and before["readings?node=press-1"].count(b"\n") == 4001

    done = plantwatch("backup", "--db", original, "--out", str(tmp_path / "plant.backup"))
    assert done.returncode == 0, done.stderr
    assert "readings 8000" in done.stdout and "alert_events 2" in done.stdout

    restored_pg, restored_lite = server.fresh_database("restored"), str(tmp_path / "restored.db")
    for target in (restored_pg, restored_lite):
        done = plantwatch("restore", "--db", target, "--from", str(tmp_path / "plant.backup"))
        assert done.returncode == 0, done.stderr
        assert answers(target) == before, target
        store = PostgresStore(target) if postgres.is_url(target) else SqliteStore(target)
        # a gateway goes on from it: the shard's checkpoint, the summaries, dead letters; new rows get new ids
        assert store.claim_shard(3, "pw-0-of-1", 2.0) == (2, b"state after 1500")
        assert store.count("summaries") == 10 and store.query("SELECT payload FROM dead_letters") == [(b"\xff\x00",)]
        store.write(alerts=[AlertEvent(FP, "overheat", "press-1", "temperature", "firing", "warning", 90.0, 1_000_300.0, "hot")])
        assert [i for (i,) in store.query("SELECT id FROM alert_events ORDER BY id")] == [1, 2, 3]
        store.close()

    # a store that holds history already is refused, and keeps what it had
    done = plantwatch("restore", "--db", restored_pg, "--from", str(tmp_path / "plant.backup"))
    assert done.returncode == 1 and "not empty" in done.stderr and "restore into a new, empty store" in done.stderr
    done = plantwatch("restore", "--db", str(tmp_path / "other.db"), "--from", str(tmp_path / "restored.db"))
    assert done.returncode == 1 and "not a plantwatch backup" in done.stderr
