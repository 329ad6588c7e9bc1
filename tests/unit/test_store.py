"""The embedded SQLite store: batched, idempotent on re-delivery."""

from __future__ import annotations

from plantwatch.readings import AlertEvent, Reading
from plantwatch.store.sqlite import SqliteStore


def test_redelivered_readings_are_stored_once(tmp_path):
    store = SqliteStore(tmp_path / "plant.db")
    batch = [Reading("n", "t", "temperature", 20.0 + i, 100.0 + i) for i in range(100)]
    assert store.write(batch) == 100
    assert store.write(batch[50:] + [Reading("n", "t", "temperature", 1.0, 500.0)]) == 1
    assert store.count("readings") == 101
    store.close()
    reopened = SqliteStore(tmp_path / "plant.db")
    assert reopened.count("readings") == 101
    assert reopened.query("PRAGMA journal_mode")[0][0] == "wal"


def test_alerts_and_dead_letters(tmp_path):
    store = SqliteStore(tmp_path / "plant.db")
    alert = AlertEvent("r/n/t", "r", "n", "t", "firing", "critical", 81.0, 1.0, "hot")
    store.write(alerts=[alert, alert], dead_letters=[(1.0, "sensors/x", "malformed", "not JSON", b"\xff")])
    assert store.count("alert_events") == 1
    assert store.query("SELECT payload FROM dead_letters") == [(b"\xff",)]


def test_batches_of_every_size_store_each_reading_once_with_its_values(tmp_path):
    """Batches go in as statements of many rows: sizes around the statement sizes, duplicates inside a batch."""
    store = SqliteStore(tmp_path / "plant.db")
    sent: list[Reading] = []
    for size in (1, 15, 16, 17, 255, 257, 4095, 4096, 4097, 9000):
        batch = [Reading("n", f"s{i % 3}", "temperature", float(i), len(sent) + i + 0.5, "C") for i in range(size)]
        assert store.write(batch + batch[: size // 2]) == size  # the broker re-delivered half of it, in the same batch
        sent += batch
    assert store.query("SELECT node, sensor, type, value, ts, unit FROM readings ORDER BY ts") == [
        tuple(r) for r in sorted(sent, key=lambda r: r.ts)
    ]
