"""Scale-out keeps per-node state right: replicas rescaled 2 → 3 → 1 mid-stream, one SIGKILLed.

Real mosquitto, real `plantwatch serve ingest` processes, one SQLite file shared by the
replicas. The same deterministic stream goes to a single unsharded gateway (the
reference, its own session and file) and to the sharded replicas; the alert events,
readings and window summaries must come out identical, and equal to what the pure rule
engine computes from the stream: no alert lost or doubled, no reading lost or doubled.
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
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from plantwatch.alerts.notifier import LEASE_S
from plantwatch.ingest.formats import encode
from plantwatch.ingest.shards import assignment
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.plant.load import load_plant
from plantwatch.readings import Reading
from plantwatch.rules.engine import RuleEngine
from tests.support.alerts import announce

NODES = [f"press-{i:02d}" for i in range(12)]
STEPS = 240  # messages per node
SHARDS = 16
#: Temperatures that cross the warning (70) and critical (80) levels, linger inside the
#: hysteresis (2) and jump fast enough for the rate rule: each node starts at another phase.
PATTERN = [60, 61, 62, 71, 72, 73, 74, 75, 76, 82, 83, 84, 79, 78.5, 77, 69, 68.5, 67, 60, 59, 95, 96, 60, 61, 70.5, 71, 69.5, 60]


def plant_yaml() -> str:
    docs = []
    for name in NODES:
        docs.append(f"""apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata:
  name: {name}
  labels: {{plantwatch.io/line: line-1}}
spec:
  hardware: esp32
  heartbeat: {{interval: 1s}}
  payload: {{format: esp32-json, topic: sensors/line-1/{name}/data}}
  sensors:
  - {{name: temperature, type: temperature, unit: celsius, field: temperature_c, range: {{min: "-40", max: "125"}}}}
""")
    docs.append("""apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: overtemperature}
spec:
  selector: {sensorType: temperature}
  condition:
    type: Threshold
    threshold: {direction: Above, warning: "70", critical: "80", hysteresis: "2"}
  for: 1s
  receivers: [console]
""")
    docs.append("""apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: temperature-jump}
spec:
  selector: {sensorType: temperature}
  condition:
    type: RateOfChange
    rateOfChange: {maxPerMinute: "1800"}
  severity: warning
  receivers: [console]
""")
    return "---\n".join(docs)


def stream(t0: float) -> list[tuple[str, float, float]]:
    """(node, ts, temperature) in publishing order: every node's step j before anyone's j+1."""
    return [(name, t0 + j * 0.5, float(PATTERN[(j + 5 * i) % len(PATTERN)])) for j in range(STEPS) for i, name in enumerate(NODES)]


def expected_alerts(plant_dir: Path, messages) -> list[tuple]:
    engine = RuleEngine(load_plant(plant_dir), 0.0)
    events = []
    for node, ts, value in messages:
        events += engine.on_reading(Reading(node, "temperature", "temperature", value, ts, "celsius"))
    return sorted((e.fingerprint, e.state, e.severity, e.value, e.ts) for e in events)


def assert_announced_once(lines: list[str], events: list[tuple]) -> None:
    """Each alert episode of the events announced once firing and once resolved (console lines).

    The notifier announces an alert's state when it steps, so a level change that comes
    in the same step as the firing it follows is one line, not two: a series has at least one
    firing line per episode and at most one per firing event.
    """
    shown: Counter[tuple[str, bool]] = Counter()
    for line in lines:
        _, _, marker, rule, series = line.split(maxsplit=5)[:5]
        shown[(f"{rule}/{series.rstrip(':')}", marker == "RESOLVED")] += 1
    by_series: dict[str, list[str]] = {}
    for fingerprint, state, *_ in sorted(events, key=lambda e: e[4]):
        by_series.setdefault(fingerprint, []).append(state)
    assert {fp for fp, _ in shown} == set(by_series)
    for fp, states in by_series.items():
        episodes = states.count("resolved") + (states[-1] == "firing")
        assert shown[(fp, True)] == states.count("resolved"), f"{fp}: resolves announced {shown[(fp, True)]} times"
        assert episodes <= shown[(fp, False)] <= states.count("firing"), f"{fp}: firing announced {shown[(fp, False)]} times"


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except (urllib.error.URLError, OSError):
        return False


class Gateway:
    """One `plantwatch serve ingest` process."""

    def __init__(self, plant_dir: Path, broker_url: str, db: Path, client_id: str, *scale: str):
        self.port = free_port()
        #: What its console receiver printed: one line per alert of a notification.
        self.out = db.parent / f"{client_id}-{self.port}.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "plantwatch.cli",
                    "serve",
                    "ingest",
                    "-f",
                    str(plant_dir),
                    "--broker",
                    broker_url,
                    "--db",
                    str(db),
                    "--client-id",
                    client_id,
                    "--http-port",
                    str(self.port),
                    *scale,
                ],
                stdout=out,
            )

    def notifications(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if " ALERT " in line]

    def wait_ready(self) -> Gateway:
        deadline = time.time() + 30
        while not ready(self.port):
            assert self.proc.poll() is None, f"gateway exited with {self.proc.returncode}"
            assert time.time() < deadline, "the gateway did not become ready"
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(30)


def replicas(plant_dir, broker_url, db, count: int, indexes: range | None = None) -> list[Gateway]:
    return [
        Gateway(
            plant_dir,
            broker_url,
            db,
            "pw",
            "--shards",
            str(SHARDS),
            "--replicas",
            str(count),
            "--replica-index",
            str(i),
            "--shard-lease-seconds",
            "1",
        )
        for i in indexes or range(count)
    ]


def rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        con.close()


def stored(db: Path) -> int:
    count = rows(db, "SELECT count(*) FROM readings")
    return count[0][0] if count else 0


def wait_stored(db: Path, n: int, timeout: float = 60.0) -> int:
    deadline = time.time() + timeout
    while stored(db) < n and time.time() < deadline:
        time.sleep(0.1)
    return stored(db)


def publish(url: str, messages, stranger_every: int = 97) -> None:
    pub = Publisher(url, client_id=f"line-1-{time.monotonic_ns()}")
    pub.start()
    for n, (node, ts, value) in enumerate(messages):
        pub.publish(f"sensors/line-1/{node}/data", encode("esp32-json", node, ts, {"temperature_c": value}))
        if n % stranger_every == 0:  # a node nobody declared: a dead letter, from exactly one shard
            pub.publish("sensors/line-1/stranger/data", encode("esp32-json", "stranger", ts, {"temperature_c": value}))
        if n % 200 == 199:
            time.sleep(0.1)  # a live plant's pace, so the rescale lands mid-stream
    pub.stop()


@pytest.fixture
def broker(tmp_path):
    b = start_mosquitto()
    yield b
    b.stop()


def test_rescaled_replicas_store_and_alert_exactly_like_one_gateway(tmp_path, broker):
    plant_dir = tmp_path / "plant"
    plant_dir.mkdir()
    (plant_dir / "plant.yaml").write_text(plant_yaml())
    messages = stream(float(int(time.time()) - 3600))  # whole and half seconds: exact through JSON
    third = len(messages) // 3
    ref_db, db = tmp_path / "reference.db", tmp_path / "sharded.db"

    reference = Gateway(plant_dir, broker.url, ref_db, "reference").wait_ready()
    two = [g.wait_ready() for g in replicas(plant_dir, broker.url, db, 2)]
    gateways = [reference, *two]
    try:
        publish(broker.url, messages[:third])
        # 2 → 3 while the stream goes on: the new replicas start beside the old ones (as a
        # rolling update overlaps them), take their shards over, and the old ones are stopped.
        sender = threading.Thread(target=publish, args=(broker.url, messages[third : 2 * third]))
        sender.start()
        three = replicas(plant_dir, broker.url, db, 3)
        gateways += three
        for g in three:
            g.wait_ready()
        for g in two:
            assert g.stop() == 0
        while sender.is_alive() and stored(db) < third + third // 3:
            time.sleep(0.01)
        three[1].kill()  # mid-stream: its shards wait in the broker, un-acknowledged, for the next owner
        sender.join(60)
        # 3 → 1: the last replica takes every shard, the killed replica's included
        one = replicas(plant_dir, broker.url, db, 1)
        gateways += one
        one[0].wait_ready()
        for g in (three[0], three[2]):
            assert g.stop() == 0
        # A replica of the old size comes back (a pod restarted late) and takes its shards;
        # when it goes away again, the single replica takes them back once its lease lapses.
        publish(broker.url, messages[2 * third : 2 * third + third // 3])
        stale = replicas(plant_dir, broker.url, db, 3, range(1))[0]
        gateways.append(stale)
        stale.wait_ready()
        publish(broker.url, messages[2 * third + third // 3 : 2 * third + 2 * third // 3])
        assert stale.stop() == 0
        publish(broker.url, messages[2 * third + 2 * third // 3 :])  # only a reclaimed shard can take these
        assert wait_stored(ref_db, len(messages)) == len(messages)
        assert wait_stored(db, len(messages)) == len(messages)
    finally:
        codes = {g.proc.pid: g.stop() for g in gateways if g is not three[1]}
    assert set(codes.values()) == {0}

    alerts = "SELECT fingerprint, state, severity, value, ts FROM alert_events ORDER BY fingerprint, state, severity, value, ts"
    want = expected_alerts(plant_dir, messages)
    assert len(want) > 100 and {w[1] for w in want} == {"firing", "resolved"}
    assert rows(ref_db, alerts) == want
    got = rows(db, alerts)
    assert len(got) == len(want), f"{len(got)} alert events, expected {len(want)}"
    assert got == want

    readings = "SELECT node, sensor, ts, value FROM readings ORDER BY node, sensor, ts"
    assert rows(db, readings) == rows(ref_db, readings)
    assert len(rows(db, readings)) == len(messages)

    summaries = "SELECT node, sensor, width, start, count, min, max, mean, p95 FROM summaries ORDER BY node, sensor, start"
    assert rows(db, summaries) == rows(ref_db, summaries) != []

    # nobody was notified twice, nothing was missed: one notifier at a time (a lease in the shared
    # store) announced the stored events, whichever replica held it; what the replicas left
    # undelivered when they stopped (or the SIGKILLed one held) goes out from the next gateway
    # to start, once the dead holder's lease lapses
    later = announce(load_plant(plant_dir), db, now=time.time() + LEASE_S).splitlines()
    sent = [n for g in gateways if g is not reference for n in g.notifications()] + later
    # the one exception, for a receiver without an idempotency key (the console): the message the
    # SIGKILLed replica was printing when it died, if it held the lease, comes again from its successor
    twice = [line for line, n in Counter(sent).items() if n > 1]
    assert len(twice) <= 1 and set(twice) <= set(three[1].notifications()), twice
    sent = list(dict.fromkeys(sent))
    assert_announced_once(sent, want)
    assert_announced_once(reference.notifications(), want)

    # the stranger's dead letters came from one shard: the same set as the reference's
    # (dead letters are at-least-once; a redelivered one may be stored again)
    dead = "SELECT DISTINCT topic, reason, payload FROM dead_letters ORDER BY payload"
    assert rows(db, dead) == rows(ref_db, dead) != []

    # every shard with nodes was claimed by 2, then 3, then 1 replica(s), the stale one's
    # twice more: the single replica holds them all
    owners = rows(db, "SELECT shard, epoch, owner FROM shard_checkpoints ORDER BY shard")
    assert owners and {owner for _, _, owner in owners} == {"pw-0-of-1"}
    stolen = {k for k, r in enumerate(assignment(SHARDS, 3)) if r == 0}
    assert {(k, e) for k, e, _ in owners} == {(k, 5 if k in stolen else 3) for k, _, _ in owners}
    # and Online followed the nodes: the last-seen times checkpointed are each node's newest reading
    last_seen = {
        node: ts for (state,) in rows(db, "SELECT state FROM shard_checkpoints") for node, ts in json.loads(state)["last_seen"].items()
    }
    assert last_seen == {node: messages[-1][1] for node in NODES}


def test_sparkplug_edge_nodes_and_strangers_across_sharded_replicas(tmp_path, broker):
    """A Sparkplug edge node's births and data meet in its shard; a stranger is dead-lettered once."""
    from plantwatch.ingest import sparkplug as sp
    from tests.conftest import EXAMPLE_PLANT

    db = tmp_path / "sharded.db"
    cell = Path(__file__).parent / "plants" / "sparkplug-cell.yaml"
    gateways = [
        Gateway(EXAMPLE_PLANT, broker.url, db, "pw", "-f", str(cell), "--shards", str(SHARDS), "--replicas", "2", "--replica-index", str(i))
        for i in range(2)
    ]
    now = float(int(time.time()))

    def message(kind, seq, *metrics, edge="edge-7"):
        t = sp.Topic("plant-a", kind, edge, "press-3" if kind.startswith("D") else None)
        return sp.topic(t), sp.encode_payload(sp.Payload(int(now * 1000) + 100 * seq, seq, tuple(metrics)))

    try:
        for g in gateways:
            g.wait_ready()
        pub = Publisher(broker.url, client_id="edge-7")
        pub.start()
        for topic, body in (
            message("NBIRTH", 0),
            message(
                "DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 61.5), sp.Metric("Press/Current", 2, None, sp.FLOAT, 11.5)
            ),
            message("DDATA", 2, sp.Metric(None, 1, None, sp.DOUBLE, 62.0)),  # by alias: needs the birth
            message("NBIRTH", 0, sp.Metric("x", 1, None, sp.DOUBLE, 1.0), edge="edge-99"),
        ):
            pub.publish(topic, body)
        pub.stop()
        deadline = time.time() + 30
        while (
            len(rows(db, "SELECT * FROM readings WHERE node = 'cell-plc'")) < 3 or not rows(db, "SELECT * FROM dead_letters")
        ) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # room for a second, wrong, dead letter
    finally:
        codes = [g.stop() for g in gateways]
    assert codes == [0, 0]
    assert rows(db, "SELECT sensor, value FROM readings WHERE node = 'cell-plc' ORDER BY ts, sensor") == [
        ("current", 11.5),
        ("temperature", 61.5),
        ("temperature", 62.0),
    ]
    assert rows(db, "SELECT topic, reason FROM dead_letters") == [("spBv1.0/plant-a/NBIRTH/edge-99", "unknown_node")]
