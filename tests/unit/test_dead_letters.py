"""Dead letters are bounded: a payload prefix with the whole payload's size and hash, clipped texts,
and a retention period applied by the pipeline's tick."""

from __future__ import annotations

import base64
import hashlib
import sqlite3

import orjson
import pytest
import yaml

from plantwatch.cli import parser
from plantwatch.ingest.dead_letters import DEAD_LETTER_TEXT, dead_letter
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.validate import Rejection
from plantwatch.plant.load import plant_from_documents
from plantwatch.store.retention import EXPIRE_ROWS, SWEEP_S, Retention, Sweeper
from plantwatch.store.sqlite import DEAD_LETTER_PAYLOAD_BYTES, SqliteStore
from tests.unit.test_sparkplug_sessions import NODE, NOW, pipeline

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
    p.sweeper = Sweeper(p.store, Retention(dead_letters_s=3600.0))
    p.process([("spBv1.0/plant-a/NDATA/edge-7", b"\xff\xff")], NOW - 7200)  # malformed: a dead letter
    assert p.store.count("dead_letters") == 1
    p.tick(NOW)
    assert p.store.count("dead_letters") == 0
    p.process([("spBv1.0/plant-a/NDATA/edge-7", b"\xff\xff")], NOW - 7200)
    p.tick(NOW + 1)  # the next sweep is not due yet: the tick does not touch the store per call
    assert p.store.count("dead_letters") == 1
    p.tick(NOW + SWEEP_S)
    assert p.store.count("dead_letters") == 0


@pytest.mark.parametrize("command", [["up", "-f", "plant"], ["serve", "ingest", "-f", "plant", "--broker", "mqtt://x"]])
def test_retention_flag(command, capsys):
    assert parser().parse_args([*command, "--dead-letter-retention-days", "0.5"]).dead_letter_retention_days == 0.5
    assert parser().parse_args(command).dead_letter_retention_days == 7.0
    with pytest.raises(SystemExit):
        parser().parse_args([*command, "--dead-letter-retention-days", "0"])
    assert "--dead-letter-retention-days: must be > 0, got 0" in capsys.readouterr().err
