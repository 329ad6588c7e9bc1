"""Conflicting readings: the same (node, sensor, ts) with another value is told apart from a re-delivery."""

import logging

import orjson
from prometheus_client import REGISTRY

from plantwatch.ingest.conflicts import SeriesGuard
from plantwatch.ingest.formats import encode
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.readings import Reading
from plantwatch.store.sqlite import SqliteStore


def r(value: float, ts: float, sensor: str = "temp", node: str = "press-1") -> Reading:
    return Reading(node, sensor, "temperature", value, ts, "C")


def test_guard_keeps_new_and_redelivered_readings_and_refuses_conflicts():
    guard = SeriesGuard()
    first = [r(20.0, 100.0), r(1.5, 100.0, "vib")]
    assert guard.check(first) == (first, [])
    # The same message again (at-least-once delivery): nothing to refuse, the store ignores it.
    again = [r(20.0, 100.0), r(1.5, 100.0, "vib")]
    assert guard.check(again) == (again, [])
    # A node stamping whole seconds sends twice within one second: the temperature changed.
    kept, conflicts = guard.check([r(20.5, 100.0), r(1.5, 100.0, "vib")])
    assert kept == [r(1.5, 100.0, "vib")]
    assert conflicts == [(r(20.5, 100.0), 20.0)]
    # Newer readings move on; an older one is the store's to judge.
    assert guard.check([r(21.0, 101.0), r(19.0, 99.0)]) == ([r(21.0, 101.0), r(19.0, 99.0)], [])
    assert len(guard) == 2


def test_guard_returns_the_same_list_when_nothing_conflicts():
    guard = SeriesGuard()
    batch = [r(float(i), float(i)) for i in range(10)]
    kept, conflicts = guard.check(batch)
    assert kept is batch and conflicts == []


def test_store_finds_conflicts_with_stored_readings_but_not_redeliveries(tmp_path):
    store = SqliteStore(tmp_path / "plant.db")
    stored = [r(float(i), float(i)) for i in range(5000)]
    assert store.write(stored) == 5000
    # A restart forgot the guard's memory: a late batch repeats 5,000 keys, two with other values.
    late = list(stored)
    late[17] = r(-1.0, 17.0)
    late[4500] = r(99.0, 4500.0)
    assert store.write(late) == 0
    assert store.conflicting(late) == [(r(-1.0, 17.0), 17.0), (r(99.0, 4500.0), 4500.0)]
    assert store.conflicting(stored) == []
    assert store.query("SELECT value FROM readings WHERE ts = 17.0") == [(17.0,)]  # the first value is kept
    store.close()


# Through the pipeline, against a real SQLite file.
T0 = 1767254400.0
TOPIC = "sensors/hall-1/esp32-press-01/data"


def message(ts: float, temperature: float) -> tuple[str, bytes]:
    return TOPIC, encode("esp32-json", "esp32-press-01", ts, {"temperature_c": temperature, "vibration_g": 0.5})


def conflicts_metric() -> float:
    return REGISTRY.get_sample_value("plantwatch_reading_conflicts_total") or 0.0


def gateway(plant, db, published):
    return Pipeline(
        plant,
        SqliteStore(db),
        publish=lambda topic, body: published.append((topic, orjson.loads(body))),
        now=T0,
    )


def stored_temperatures(store: SqliteStore) -> list[tuple]:
    return store.query("SELECT ts, value FROM readings WHERE sensor = 'temperature' ORDER BY ts")


def test_a_second_value_for_the_same_timestamp_is_a_visible_conflict(plant, tmp_path, caplog):
    published: list = []
    pipeline = gateway(plant, tmp_path / "p.db", published)
    before = conflicts_metric()
    caplog.set_level(logging.WARNING, logger="plantwatch.ingest.pipeline")
    pipeline.process([message(T0, 20.0)], T0)
    # Two more messages stamped with the same whole second, one an exact re-delivery.
    pipeline.process([message(T0, 20.0), message(T0, 21.0), message(T0 + 1, 22.0), message(T0, 23.0)], T0 + 1)
    assert stored_temperatures(pipeline.store) == [(T0, 20.0), (T0 + 1, 22.0)]
    assert pipeline.rejected["conflict"] == 2
    assert conflicts_metric() - before == 2
    # Each conflicting message is dead-lettered with the reason, the values and what to do;
    # the vibration it carried, equal to the stored one, is a re-delivery and no conflict.
    rows = pipeline.store.query("SELECT topic, reason, detail FROM dead_letters ORDER BY id")
    assert [(t, r) for t, r, _ in rows] == [(TOPIC, "conflict"), (TOPIC, "conflict")]
    assert "already has the value 20.0, not 21.0" in rows[0][2] and "sub-second" in rows[0][2]
    letters = [body for topic, body in published if topic == "plantwatch/dead-letter/esp32-press-01"]
    assert [b["reason"] for b in letters] == ["conflict", "conflict"]
    assert [b["rejections"][0]["field"] for b in letters] == ["temperature", "temperature"]
    # Logged once for the series within the interval, however many conflicts it had.
    assert len([r for r in caplog.records if "conflicting reading" in r.getMessage()]) == 1


def test_a_conflict_with_a_reading_stored_before_a_restart_is_found_by_the_store(plant, tmp_path):
    published: list = []
    first = gateway(plant, tmp_path / "p.db", published)
    first.process([message(T0, 20.0), message(T0 + 1, 20.5)], T0 + 1)
    # A new process has no memory of the series: the store tells the conflict from the re-delivery.
    again = gateway(plant, tmp_path / "p.db", published)
    again.process([message(T0, 20.0), message(T0 + 1, 30.0)], T0 + 2)
    assert stored_temperatures(again.store) == [(T0, 20.0), (T0 + 1, 20.5)]
    assert again.rejected == {"conflict": 1}
    rows = again.store.query("SELECT reason, detail, payload FROM dead_letters")
    assert len(rows) == 1 and rows[0][0] == "conflict" and "already has the value 20.5, not 30.0" in rows[0][1]
    assert orjson.loads(rows[0][2])["value"] == 30.0
    assert [b["reason"] for t, b in published if t.startswith("plantwatch/dead-letter/")] == ["conflict"]
