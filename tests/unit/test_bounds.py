"""Memory bounded against hostile input: every per-key structure the network feeds has a cap,
an eviction rule and a metric; dead letters keep a bounded prefix and expire."""

from __future__ import annotations

import base64
import hashlib
import io
import sqlite3
import struct

import orjson
import pytest
import yaml
from prometheus_client import REGISTRY

from plantwatch.alerts.router import AlertRouter
from plantwatch.cli import parser
from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.dead_letters import DEAD_LETTER_SWEEP_S, DEAD_LETTER_TEXT, dead_letter
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.validate import Rejection
from plantwatch.mqtt import wire
from plantwatch.plant.load import plant_from_documents
from plantwatch.store.sqlite import DEAD_LETTER_PAYLOAD_BYTES, EXPIRE_ROWS, SqliteStore

NOW = 1767254400.0
NODE = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: cell-plc}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {format: sparkplug-b, topic: spBv1.0/plant-a/DDATA/edge-7/press-3, maxBytes: 1048576}
  sensors:
    - {name: temperature, type: temperature, field: Press/Temperature, range: {min: "-40", max: "200"}}
"""


def evictions(structure: str) -> float:
    return REGISTRY.get_sample_value("plantwatch_state_evictions_total", {"structure": structure}) or 0.0


def birth(seq: int, aliases: range, name: str = "m") -> sp.Payload:
    return sp.Payload(None, seq, tuple(sp.Metric(f"{name}/{a}", a, None, sp.DOUBLE, 1.0) for a in aliases))


# --- Sparkplug sessions ---------------------------------------------------------------------


def test_a_session_keeps_at_most_max_aliases_and_forgets_the_oldest_birth_first():
    s = sp.EdgeNodeSession()
    sp.apply(s, sp.Topic("g", "NBIRTH", "e"), birth(0, range(0)))
    per_device = sp.MAX_ALIASES // 4
    forgotten = 0
    for i in range(6):  # six devices of a quarter of the cap each: the first two make room
        out = sp.apply(s, sp.Topic("g", "DBIRTH", "e", f"d{i}"), birth(1 + i, range(per_device)))
        forgotten += out.evicted
    assert s.alias_count == sum(map(len, s.aliases.values())) == sp.MAX_ALIASES
    assert list(s.aliases) == ["d2", "d3", "d4", "d5"] and forgotten == 2 * per_device
    # a device born again moves to the back and replaces its table (no duplicates counted)
    sp.apply(s, sp.Topic("g", "DBIRTH", "e", "d2"), birth(7, range(10)))
    assert list(s.aliases)[-1] == "d2" and s.alias_count == 3 * per_device + 10
    # one birth larger than the cap keeps the first MAX_ALIASES of its aliases
    out = sp.apply(s, sp.Topic("g", "DBIRTH", "e", "huge"), birth(8, range(sp.MAX_ALIASES + 5)))
    assert s.alias_count == sp.MAX_ALIASES and list(s.aliases) == ["huge"] and out.evicted == 3 * per_device + 10 + 5


def test_a_session_keeps_the_aliases_of_its_devices_only():
    s = sp.EdgeNodeSession(devices=frozenset({"press"}))
    sp.apply(s, sp.Topic("g", "NBIRTH", "e"), birth(0, range(3)))
    sp.apply(s, sp.Topic("g", "DBIRTH", "e", "intruder"), birth(1, range(1000)))
    sp.apply(s, sp.Topic("g", "DBIRTH", "e", "press"), birth(2, range(5, 7), "p"))
    assert s.aliases == {"press": {5: "p/5", 6: "p/6"}} and s.alias_count == 2
    data = sp.Payload(None, 3, (sp.Metric(None, 6, None, sp.DOUBLE, 4.0),))
    assert sp.apply(s, sp.Topic("g", "DDATA", "e", "press"), data).values == {"p/6": 4.0}


def pipeline(tmp_path, sent=None):
    plant = plant_from_documents([("node", yaml.safe_load(NODE))])
    return Pipeline(
        plant,
        SqliteStore(tmp_path / "p.db"),
        AlertRouter(plant, out=io.StringIO()),
        publish=(lambda t, b: sent.append((t, b))) if sent is not None else None,
        now=NOW,
    )


def message(kind: str, edge: str, seq: int, payload: sp.Payload | None = None, device: str | None = None):
    """A Sparkplug message stamped 0.1 s per seq after NOW."""
    t = sp.Topic("plant-a", kind, edge, device if kind.startswith("D") else None)
    p = payload or sp.Payload(None, seq, ())
    return sp.topic(t), sp.encode_payload(sp.Payload(int(NOW * 1000) + 100 * seq, seq, p.metrics))


def test_births_of_strangers_and_of_unknown_devices_grow_no_alias_table(tmp_path):
    p = pipeline(tmp_path)
    p.process(
        [
            message("NBIRTH", "edge-7", 0),
            message("DBIRTH", "edge-7", 1, sp.Payload(None, 1, (sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 60.0),)), "press-3"),
        ],
        NOW,
    )
    batch = []
    for i in range(200):  # a known edge node with devices nobody declared, and strangers, each with 100 aliases
        batch.append(message("DBIRTH", "edge-7", 2 + i, birth(0, range(100)), f"fake-{i}"))
        batch.append(message("NBIRTH", f"stranger-{i}", 0, birth(0, range(100))))
        batch.append(message("DDATA", f"stranger-{i}", 1, sp.Payload(None, 1, (sp.Metric(None, 3, None, sp.DOUBLE, 1.0),)), "d"))
    p.process(batch, NOW)
    held = sum(s.alias_count for s in (*p.sparkplug._sessions.values(), *p.sparkplug._stranger_sessions.values()))
    assert held == 1  # the plant's own device's one alias
    # every unknown device's birth and every stranger's birth and alias-only data is still dead-lettered
    assert p.rejected["unknown_node"] == 600
    seq = 2 + 200
    p.process([message("DDATA", "edge-7", seq, sp.Payload(None, seq, (sp.Metric(None, 1, None, sp.DOUBLE, 61.0),)), "press-3")], NOW + 1)
    assert p.store.query("SELECT value FROM readings ORDER BY ts, value") == [(60.0,), (61.0,)]


def test_forgotten_strangers_are_counted(tmp_path):
    from plantwatch.ingest.sparkplug_sessions import MAX_STRANGER_SESSIONS

    p = pipeline(tmp_path)
    before = evictions("sparkplug_stranger_sessions")
    p.process([message("NBIRTH", f"s-{i}", 0) for i in range(MAX_STRANGER_SESSIONS + 7)], NOW)
    assert len(p.sparkplug._stranger_sessions) == MAX_STRANGER_SESSIONS
    assert evictions("sparkplug_stranger_sessions") - before == 7


def test_alias_evictions_are_counted(tmp_path):
    p = pipeline(tmp_path)
    before = evictions("sparkplug_aliases")
    p.process([message("NBIRTH", "edge-7", 0), message("DBIRTH", "edge-7", 1, birth(1, range(sp.MAX_ALIASES + 3)), "press-3")], NOW)
    assert evictions("sparkplug_aliases") - before == 3


# --- the subscriber's topic cache -------------------------------------------------------------


def publish(topic: str) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + b"{}"
    return wire._packet(wire.PUBLISH << 4, body)


def test_the_topic_cache_is_bounded_and_names_stay_right():
    topics = wire.TopicCache()
    n = 3 * wire.TOPIC_CACHE_SIZE + 5
    names = [f"sensors/h/node-{i}/data" for i in range(n)]
    pubs, _, _ = wire.parse(bytearray(b"".join(map(publish, names))), topics)
    assert [pub.topic for pub in pubs] == names
    assert 0 < len(topics) <= wire.TOPIC_CACHE_SIZE and topics.evicted == n - len(topics)
    # the plant's own topic is cached again at once
    wire.parse(bytearray(publish("sensors/h/mine/data") * 2), topics)
    assert topics[b"sensors/h/mine/data"] == "sensors/h/mine/data"


def test_a_bounded_publisher_drops_and_counts_what_would_queue_beyond_its_cap():
    from plantwatch.mqtt.publisher import Publisher

    before = evictions("mqtt_publish_queue")
    pub = Publisher("mqtt://127.0.0.1:1", max_queued=10)  # never connected: everything would wait in the client
    for i in range(1000):
        pub.publish("plantwatch/dead-letter/x", b"%d" % i)
    assert pub.dropped == 990 and evictions("mqtt_publish_queue") - before == 990


# --- dead letters -----------------------------------------------------------------------------

REJECTION = [Rejection("oversized", "too big")]


def test_a_huge_payload_becomes_a_bounded_dead_letter_with_its_size_and_hash():
    payload = b"x" * 10_000_000
    body = dead_letter("sensors/a", payload, "n", REJECTION, NOW, "c1")
    letter = orjson.loads(body)
    assert len(body) < 2 * DEAD_LETTER_PAYLOAD_BYTES
    assert letter["payload"] == "x" * DEAD_LETTER_PAYLOAD_BYTES and letter["payload_encoding"] == "utf-8"
    assert (letter["payload_bytes"], letter["payload_truncated"]) == (10_000_000, True)
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    # JSON would escape control characters six bytes each: such a prefix goes as base64 instead
    body = dead_letter("sensors/a", b"\x01" * 1_000_000, "n", REJECTION, NOW, "c2")
    control = orjson.loads(body)
    assert len(body) < 2 * DEAD_LETTER_PAYLOAD_BYTES and control["payload_encoding"] == "base64"
    assert base64.b64decode(control["payload"]) == b"\x01" * DEAD_LETTER_PAYLOAD_BYTES and control["payload_bytes"] == 1_000_000


def test_a_small_payload_is_kept_verbatim_and_a_cut_character_does_not_turn_text_into_base64():
    letter = orjson.loads(dead_letter("sensors/a", b'{"t": 1}', None, REJECTION, NOW, "c"))
    assert (letter["payload"], letter["payload_encoding"], letter["payload_truncated"]) == ('{"t": 1}', "utf-8", False)
    assert {"correlation_id", "reason", "rejections", "topic", "node", "received_at"} <= letter.keys()
    text = ("a" + "é" * DEAD_LETTER_PAYLOAD_BYTES).encode()  # the cut falls inside a two-byte character
    cut = orjson.loads(dead_letter("sensors/a", text, None, REJECTION, NOW, "c"))
    assert cut["payload_encoding"] == "utf-8" and text.decode().startswith(cut["payload"])
    assert len(cut["payload"].encode()) == DEAD_LETTER_PAYLOAD_BYTES - 1
    binary = orjson.loads(dead_letter("sensors/a", b"\xff" * 10_000, None, REJECTION, NOW, "c"))
    assert binary["payload_encoding"] == "base64" and binary["payload_bytes"] == 10_000


def test_a_64k_topic_makes_a_bounded_dead_letter_row_and_message(tmp_path):
    """An unknown topic as long as MQTT allows, quoted by its reason too: both clipped, marked where cut."""
    published: list[tuple[str, bytes]] = []
    plant = plant_from_documents([("node.yaml", yaml.safe_load(NODE))])
    pipeline = Pipeline(
        plant,
        SqliteStore(tmp_path / "d.db"),
        AlertRouter(plant, out=io.StringIO()),
        publish=lambda topic, body: published.append((topic, body)),
        now=NOW,
    )
    topic = "spBv1.0/" + "t" * 65_000
    pipeline.process([("sensors/" + "t" * 65_000, b'{"t": 1}'), (topic + "/NDATA/x", b"\x00")], NOW)
    bodies = [body for t, body in published if t.startswith("plantwatch/dead-letter/")]
    assert len(bodies) == 2 and all(len(body) < 4 * DEAD_LETTER_TEXT for body in bodies), [len(b) for b in bodies]
    letter = orjson.loads(bodies[0])
    assert letter["topic"].startswith("sensors/ttt") and letter["topic"].endswith("… (65008 characters)")
    assert all(len(r["detail"]) < DEAD_LETTER_TEXT + 30 for r in letter["rejections"])
    rows = pipeline.store.query("SELECT length(topic), length(detail) FROM dead_letters")
    assert len(rows) == 2 and all(t < DEAD_LETTER_TEXT + 30 and d < 4 * DEAD_LETTER_TEXT + 30 for t, d in rows), rows


def test_the_store_keeps_a_prefix_the_size_and_the_hash(tmp_path):
    store = SqliteStore(tmp_path / "d.db")
    payload = bytes(range(256)) * 40_000
    store.write(dead_letters=[(NOW, "sensors/a", "oversized", "too big", payload)])
    (row,) = store.query("SELECT payload, payload_bytes, payload_sha256 FROM dead_letters")
    assert row == (payload[:DEAD_LETTER_PAYLOAD_BYTES], len(payload), hashlib.sha256(payload).hexdigest())


def test_an_older_file_gets_the_columns_and_its_payloads_cut(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, received REAL NOT NULL, topic TEXT NOT NULL,"
        " reason TEXT NOT NULL, detail TEXT NOT NULL, payload BLOB NOT NULL)"
    )
    db.execute("INSERT INTO dead_letters (received, topic, reason, detail, payload) VALUES (1, 't', 'r', 'd', ?)", (b"y" * 100_000,))
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert store.query("SELECT length(payload), payload_bytes, payload_sha256 FROM dead_letters") == [
        (DEAD_LETTER_PAYLOAD_BYTES, 100_000, hashlib.sha256(b"y" * 100_000).hexdigest())
    ]


def test_expiry_deletes_old_dead_letters_in_chunks(tmp_path):
    store = SqliteStore(tmp_path / "d.db")
    store.write(dead_letters=[(NOW - 100 + i * 1e-6, "t", "r", "d", b"p") for i in range(EXPIRE_ROWS + 3)])
    store.write(dead_letters=[(NOW, "t", "r", "d", b"new")])
    assert store.expire_dead_letters(NOW - 50) == EXPIRE_ROWS
    assert store.expire_dead_letters(NOW - 50) == 3
    assert store.query("SELECT payload FROM dead_letters") == [(b"new",)]


def test_the_tick_applies_the_retention_periodically(tmp_path):
    p = pipeline(tmp_path)
    p.dead_letter_retention_s = 3600.0
    p.process([("spBv1.0/plant-a/NDATA/edge-7", b"\xff\xff")], NOW - 7200)  # malformed: a dead letter
    assert p.store.count("dead_letters") == 1
    p.tick(NOW)
    assert p.store.count("dead_letters") == 0
    p.process([("spBv1.0/plant-a/NDATA/edge-7", b"\xff\xff")], NOW - 7200)
    p.tick(NOW + 1)  # the next sweep is not due yet: the tick does not touch the store per call
    assert p.store.count("dead_letters") == 1
    p.tick(NOW + DEAD_LETTER_SWEEP_S)
    assert p.store.count("dead_letters") == 0


@pytest.mark.parametrize("command", [["up", "-f", "plant"], ["serve", "ingest", "-f", "plant", "--broker", "mqtt://x"]])
def test_retention_flag(command, capsys):
    assert parser().parse_args([*command, "--dead-letter-retention-days", "0.5"]).dead_letter_retention_days == 0.5
    assert parser().parse_args(command).dead_letter_retention_days == 7.0
    with pytest.raises(SystemExit):
        parser().parse_args([*command, "--dead-letter-retention-days", "0"])
    assert "--dead-letter-retention-days: must be > 0, got 0" in capsys.readouterr().err
