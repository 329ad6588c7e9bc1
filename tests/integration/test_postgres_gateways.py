"""The cluster's store of record: gateway processes on one real PostgreSQL, handing shards over, and
`plantwatch up --db postgresql://...` killed mid-stream; real mosquitto, real processes.

The scale-out argument (docs/scale-out.md) rests on one transaction holding a batch and its
shard's checkpoint; here that transaction is PostgreSQL's, shared by processes the way a
Deployment's pods share it, and the outcome must equal one unsharded gateway's on SQLite.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from plantwatch.alerts.notifier import LEASE_S
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.plant.load import load_plant
from tests.integration import test_scale_out as scale_out
from tests.integration.test_delivery import publish
from tests.integration.test_up_durable import OVERHEAT, Up, press_temperatures
from tests.support.alerts import announce
from tests.support.postgres import PASSWORD, password, server  # noqa: F401 (fixtures)


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


@pytest.fixture
def url(server, password, tmp_path) -> str:  # noqa: F811
    """A fresh database; the processes started read its password from the file, as from a mounted Secret."""
    return server.fresh_database(tmp_path.name.lower().replace("-", "_")[:40])


#: Readings `up` is sent while it is killed and restarted.
N_UP = 5000


class Where(str):
    """A database URL that the scale-out test's Gateway takes where it takes a file: it writes its output in `parent`."""

    parent: Path


def pg_rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, password=PASSWORD) as db:
        return db.execute(sql).fetchall()


def assert_stored_like_one_gateway(url: str, ref_db, plant_dir, messages) -> list[tuple]:
    """The shared store holds exactly what one SQLite gateway (`ref_db`) stored of `messages`: alert events
    (also equal to the pure rule engine's, which it returns), readings, summaries and dead letters, nothing lost
    or doubled."""
    alerts = "SELECT fingerprint, state, severity, value, ts FROM alert_events ORDER BY fingerprint, state, severity, value, ts"
    want = scale_out.expected_alerts(plant_dir, messages)
    assert len(want) > 100 and scale_out.rows(ref_db, alerts) == want
    assert pg_rows(url, alerts) == want, "alerts lost or doubled across the handoffs"
    for sql in (
        "SELECT node, sensor, ts, value FROM readings ORDER BY node, sensor, ts",
        "SELECT node, sensor, width, start, count, min, max, mean, p95 FROM summaries ORDER BY node, sensor, start",
        "SELECT DISTINCT topic, reason, payload FROM dead_letters ORDER BY payload",
    ):
        assert pg_rows(url, sql) == scale_out.rows(ref_db, sql) != [], sql
    return want


def test_replicas_on_postgres_hand_shards_over_and_store_exactly_like_one_gateway(tmp_path, broker, url):
    plant_dir = tmp_path / "plant"
    plant_dir.mkdir()
    (plant_dir / "plant.yaml").write_text(scale_out.plant_yaml())
    messages = scale_out.stream(float(int(time.time()) - 3600))
    half = len(messages) // 2
    ref_db, db = tmp_path / "reference.db", Where(url)
    db.parent = tmp_path

    reference = scale_out.Gateway(plant_dir, broker.url, ref_db, "reference").wait_ready()
    two = [g.wait_ready() for g in scale_out.replicas(plant_dir, broker.url, db, 2)]
    gateways = [reference, *two]
    try:
        sender = threading.Thread(target=scale_out.publish, args=(broker.url, messages[:half]))
        sender.start()
        # 2 → 3 mid-stream (the new replicas fence the old ones off their shards), one of the three SIGKILLed
        three = scale_out.replicas(plant_dir, broker.url, db, 3)
        gateways += three
        for g in three:
            g.wait_ready()
        for g in two:
            assert g.stop() == 0
        sender.join(60)
        three[1].kill()
        scale_out.publish(broker.url, messages[half:])
        one = scale_out.replicas(plant_dir, broker.url, db, 1)  # 3 → 1: it takes the killed replica's shards too
        gateways += one
        one[0].wait_ready()
        for g in (three[0], three[2]):
            assert g.stop() == 0
        assert scale_out.wait_stored(ref_db, len(messages)) == len(messages)
        deadline = time.time() + 60
        while pg_rows(url, "SELECT count(*) FROM readings")[0][0] < len(messages) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        codes = {g.proc.pid: g.stop() for g in gateways if g is not three[1]}
    assert set(codes.values()) == {0}

    want = assert_stored_like_one_gateway(url, ref_db, plant_dir, messages)
    owners = pg_rows(url, "SELECT DISTINCT owner FROM shard_checkpoints")
    assert owners == [("pw-0-of-1",)]
    # one notifier at a time, through the lease in the shared store: each episode announced once
    later = announce(load_plant(plant_dir), url, now=time.time() + LEASE_S).splitlines()
    sent = [n for g in gateways if g is not reference for n in g.notifications()] + later
    twice = {line for line in sent if sent.count(line) > 1}
    assert twice <= set(three[1].notifications()) and len(twice) <= 1, twice  # the SIGKILLed one's last line, at most
    scale_out.assert_announced_once(list(dict.fromkeys(sent)), want)


def test_up_on_postgres_killed_mid_stream_stores_every_reading_once_and_logs_no_password(tmp_path, broker, url):
    up = Up(tmp_path, broker.url)
    up.args[up.args.index(str(up.db))] = url
    up.start()
    t0 = time.time() - 600
    sender = threading.Thread(target=publish, args=(broker.url, t0, N_UP, 2000.0))
    sender.start()
    count = "SELECT count(*), count(DISTINCT ts) FROM readings WHERE node = 'esp32-press-01' AND sensor = 'temperature'"
    while pg_rows(url, count)[0][0] < 500:
        assert up.proc.poll() is None, up.output()
        time.sleep(0.01)
    up.kill()
    up.start()
    sender.join(120)
    deadline = time.time() + 60
    while pg_rows(url, count)[0][0] < N_UP and time.time() < deadline:
        time.sleep(0.2)
    press_temperatures(broker.url, time.time() - 60, [75.0] * 40)  # above warning for 4 s: fires
    deadline = time.time() + 30
    while not pg_rows(url, f"SELECT 1 FROM alerts WHERE fingerprint = '{OVERHEAT}'") and time.time() < deadline:
        time.sleep(0.1)
    summary = up.stop()
    assert pg_rows(url, count)[0] == (N_UP + 40, N_UP + 40)
    assert pg_rows(url, f"SELECT status, severity FROM alerts WHERE fingerprint = '{OVERHEAT}'") == [("firing", "warning")]
    assert summary["store"]["kind"] == "postgresql"
    output = (tmp_path / "up-1.out").read_text() + up.output()
    assert "store postgresql postgresql://plantwatch@127.0.0.1" in output
    assert PASSWORD not in output
