"""Conflicting readings: the same (node, sensor, ts) with another value is told apart from a re-delivery."""

from plantwatch.ingest.conflicts import LogLimiter, SeriesGuard
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


def test_log_limiter_logs_once_per_series_per_interval_and_stays_bounded():
    limiter = LogLimiter(interval_s=60.0, max_series=3)
    assert limiter.allow(("a", "t"), 0.0)
    assert not limiter.allow(("a", "t"), 30.0)
    assert limiter.allow(("b", "t"), 30.0)
    assert limiter.allow(("a", "t"), 61.0)
    for i in range(10):
        assert limiter.allow((f"n{i}", "t"), 70.0)
    # ("a", "t") was forgotten to make room, so it may be logged again within its interval.
    assert limiter.allow(("a", "t"), 71.0)
