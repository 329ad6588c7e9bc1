"""The store of record on a real PostgreSQL (Debian's server, tests/support/postgres.py): the embedded
store's contract on both engines, the checkpoint committed with its batch or not at all, alert state."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg
import pytest

from plantwatch import metrics
from plantwatch.alerts.lifecycle import Matcher
from plantwatch.readings import AlertEvent, Reading
from plantwatch.store import postgres, retention, sqlite
from plantwatch.store.alert_state import AlertState, NotFound
from plantwatch.store.postgres import PostgresStore, Session
from plantwatch.store.retention import Retention, Sweeper
from plantwatch.store.shard_state import Checkpoint, Fenced
from plantwatch.store.sqlite import SqliteStore
from tests.support.postgres import password, server  # noqa: F401 (fixtures)

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database (the same tests run on both)."""
    if request.param == "sqlite":
        return str(tmp_path / "plant.db")
    request.getfixturevalue("password")
    return request.getfixturevalue("server").fresh_database(f"t{next(_names)}")


def open_store(db: str) -> SqliteStore:
    return PostgresStore(db) if postgres.is_url(db) else SqliteStore(db)


def test_redelivered_readings_alerts_and_batches_of_every_size_are_stored_once(db):
    store = open_store(db)
    sent: list[Reading] = []
    for size in (1, 17, 257, 4097, 9000):
        batch = [Reading("n", f"s{i % 3}", "temperature", float(i), len(sent) + i + 0.5, "C") for i in range(size)]
        assert store.write(batch + batch[: size // 2]) == size  # the broker re-delivered half of it, in the same batch
        assert store.write(batch[: size // 3]) == 0
        sent += batch
    assert store.query("SELECT node, sensor, type, value, ts, unit FROM readings ORDER BY ts") == [
        tuple(r) for r in sorted(sent, key=lambda r: r.ts)
    ]
    assert store.write([Reading("n", "nan", "temperature", float("nan"), 1.0)]) == 0  # no value: not stored, on either engine
    alert = AlertEvent("r/n/t", "r", "n", "t", "firing", "critical", 81.0, 1.0, "hot")
    store.write(alerts=[alert, alert], dead_letters=[(1.0, "sensors/x", "malformed", "not JSON", b"\xff")])
    store.write(alerts=[alert])
    assert store.count("alert_events") == 1
    assert store.query("SELECT payload, payload_bytes FROM dead_letters") == [(b"\xff", 1)]
    store.close()
    reopened = open_store(db)  # the schema is there already: opening again changes nothing
    assert reopened.count("readings") == len(sent)
    reopened.close()


def test_conflicts_summaries_and_dead_letter_expiry(db):
    store = open_store(db)
    store.write([Reading("n", "t", "temperature", v, 100.0 + i) for i, v in enumerate((1.0, 2.0, 3.0, 4.0))])
    stored_again = [Reading("n", "t", "temperature", 1.0, 100.0), Reading("n", "t", "temperature", 9.0, 101.0)]
    assert store.write(stored_again) == 0
    assert store.conflicting(stored_again) == [(stored_again[1], 2.0)]
    (summary,) = store.summarize([("n", "t", 100.0, 10.0)])
    assert (summary.count, summary.min, summary.max, summary.mean) == (4, 1.0, 4.0, 2.5)
    store.write([Reading("n", "t", "temperature", 5.0, 104.0)])
    store.summarize([("n", "t", 100.0, 10.0)])  # recomputed: replaces the window's row
    assert store.query("SELECT count, max FROM summaries") == [(5, 5.0)]
    store.write(dead_letters=[(float(t), "x", "malformed", "", b"p") for t in range(5)])
    assert store.expire_dead_letters(3.0) == 3
    assert store.count("dead_letters") == 2


def test_retention_deletes_old_readings_and_summaries_series_by_series_in_bounded_chunks(db, monkeypatch):
    store = open_store(db)
    day = 86400.0
    series = [(f"n{i}", s) for i in range(3) for s in ("p", "t")]
    store.write([Reading(n, s, "temperature", float(k), k * 3600.0) for n, s in series for k in range(48)])  # two days, hourly
    store.summarize((n, s, k * 3600.0, 3600.0) for n, s in series for k in range(48))
    monkeypatch.setattr(retention, "EXPIRE_ROWS", 20)
    monkeypatch.setattr(sqlite, "EXPIRE_ROWS", 20)
    sweeper = Sweeper(store, Retention(readings_s=day, summaries_s=1.5 * day))
    now = 2 * day  # readings before day 1 are old, summaries before day 0.5
    calls = 0
    while True:
        sweeper.tick(now)
        calls += 1
        if sweeper._next > now:
            break
    assert calls >= 144 // 20  # bounded chunks: 6 series x 24 old readings cannot go in one call
    assert store.query("SELECT node, sensor, min(ts), count(*) FROM readings GROUP BY node, sensor ORDER BY node, sensor") == [
        (n, s, day, 24) for n, s in series
    ]
    assert store.query("SELECT min(start), count(*) FROM summaries") == [(0.5 * day, 6 * 36)]
    store.close()


def test_a_batch_commits_with_its_checkpoint_and_a_fenced_owner_writes_nothing(db):
    store = open_store(db)
    epoch, state = store.claim_shard(0, "a", 1.0)
    assert (epoch, state) == (1, None)
    store.write([Reading("n", "t", "temperature", 1.0, 1.0)], checkpoint=Checkpoint(0, 1, b"after-1"))
    other = open_store(db)  # another gateway on the same store takes the shard over
    assert other.claim_shard(0, "b", 2.0) == (2, b"after-1")
    with pytest.raises(Fenced, match="epoch 1 was superseded by epoch 2 \\(b\\)"):
        store.write([Reading("n", "t", "temperature", 2.0, 2.0)], checkpoint=Checkpoint(0, 1, b"stale"))
    with pytest.raises(Fenced):
        store.renew_shard(0, 1, 3.0)
    assert store.count("readings") == 1
    other.renew_shard(0, 2, 3.0)
    assert other.shard_lease(0)[:2] == (2, "b")


def test_a_server_killed_between_the_batch_and_its_commit_keeps_neither(server, password, monkeypatch):  # noqa: F811
    """SIGKILL of PostgreSQL after the batch's rows and checkpoint were sent, before COMMIT."""
    url = server.fresh_database(f"t{next(_names)}")
    store = PostgresStore(url)
    store.claim_shard(0, "a", 1.0)
    store.write([Reading("n", "t", "temperature", 1.0, 1.0)], checkpoint=Checkpoint(0, 1, b"after-1"))
    insert = Session._insert_readings

    def killed_before_commit(self, readings):
        stored = insert(self, readings)
        server.kill()
        return stored

    with monkeypatch.context() as patched:
        patched.setattr(Session, "_insert_readings", killed_before_commit)
        doomed = PostgresStore(url)
        with pytest.raises(psycopg.OperationalError):
            doomed.write([Reading("n", "t", "temperature", 2.0, 2.0)], checkpoint=Checkpoint(0, 1, b"after-2"))
    server.start()
    after = PostgresStore(url)
    assert after.query("SELECT ts FROM readings") == [(1.0,)]
    assert after.claim_shard(0, "b", 3.0) == (2, b"after-1")


def test_alert_state_on_both_engines(db):
    store = open_store(db)
    state = AlertState(db)
    fire = AlertEvent("r/n/t", "r", "n", "t", "firing", "warning", 81.0, 10.0, "hot")
    store.write(alerts=[fire, replace(fire, severity="critical", ts=11.0)])
    with state.tx() as tx:
        assert state.hold_lease(tx, "me", 0.0, 30.0)
        assert state.apply_events(tx) == 1
        assert state.apply_events(tx) == 0  # the cursor moved with them
        state.enqueue(tx, "k1", "ops", "firing", "g", {"a": 1}, 12.0)
        state.enqueue(tx, "k1", "ops", "firing", "g", {"a": 1}, 12.0)
    with state.tx() as tx:
        assert not state.hold_lease(tx, "other", 1.0, 30.0)
    (due,) = state.due(13.0)
    state.finish(due, "sent", 1, 13.0, 13.0, None, [("r/n/t", 10.0, "notified", {"receiver": "ops"})])
    assert state.notification_counts() == {"ops": {"sent": 1}}
    assert state.ack("r/n/t", "ann", "on it", 14.0)["acked_by"] == "ann"
    silence = state.add_silence([Matcher("node", "=", "n")], 0.0, 100.0, "ann", "work", 15.0)
    state.expire_silence(silence.id, 20.0)
    assert state.silences()[0].ends_at == 20.0
    store.write(alerts=[replace(fire, state="resolved", ts=30.0, summary="ok")])
    with state.tx() as tx:
        state.apply_events(tx)
    assert state.alert("r/n/t")["status"] == "resolved"
    assert [h["what"] for h in state.alert_history("r/n/t")] == ["firing", "level", "notified", "acknowledged", "resolved"]
    with pytest.raises(NotFound):
        state.ack("r/n/t", "ann", "", 31.0)
    state.close()


@contextmanager
def commit_held(store: PostgresStore) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(in_flight, go_on): the next write on the pool's idle connection sets in_flight at its COMMIT and waits for go_on."""
    in_flight, go_on = threading.Event(), threading.Event()
    with store._session() as writer:
        held = writer._db
    commit = held.execute

    def held_before_commit(sql, params=()):
        if sql == "COMMIT":
            in_flight.set()
            go_on.wait(30)
        return commit(sql, params)

    held.execute = held_before_commit
    try:
        yield in_flight, go_on
    finally:
        go_on.set()
        held.execute = commit


def test_batches_of_two_shards_commit_side_by_side_and_a_lost_connection_is_replaced(server, password):  # noqa: F811
    """With connections=2, one shard's batch held before its COMMIT does not hold up another's (with one
    writer it would wait); after the server restarts, the pool's dead connections give way to new ones."""
    url = server.fresh_database(f"t{next(_names)}")
    store = PostgresStore(url, connections=2)
    with commit_held(store) as (in_flight, go_on):
        first = threading.Thread(target=store.write, args=([Reading("a", "t", "temperature", 1.0, 1.0)],))
        first.start()
        assert in_flight.wait(30)
        try:
            assert store.write([Reading("b", "t", "temperature", 2.0, 1.0)]) == 1  # on the other connection, now
            assert store.query("SELECT node FROM readings") == [("b",)]
        finally:
            go_on.set()
            first.join(30)
    assert store.query("SELECT node FROM readings ORDER BY node") == [("a",), ("b",)]
    assert store.write([Reading("c", "t", "temperature", 3.0, 1.0)]) == 1
    server.kill()
    server.start()
    for node in "de":  # each pooled connection fails once, is dropped, and the next write opens a new one
        with pytest.raises(psycopg.OperationalError):
            store.write([Reading(node, "t", "temperature", 4.0, 1.0)])
    assert store.write([Reading("f", "t", "temperature", 5.0, 1.0)]) == 1
    store.close()
    after = PostgresStore(url)
    assert after.query("SELECT node FROM readings ORDER BY node") == [("a",), ("b",), ("c",), ("f",)]
    after.close()


def test_overlapping_batches_of_two_shards_during_a_handoff_are_stored_once(server, password):  # noqa: F811
    """A new batch is copied straight into readings; one that meets a stored key (a redelivery) is
    restaged, keeping only its new readings, also when the key is another shard's uncommitted row:
    the later transaction waits for the first (in key order, no deadlock), then keeps what is new."""
    url = server.fresh_database(f"t{next(_names)}")
    store = PostgresStore(url, connections=2)
    restaged = metrics.BATCHES_RESTAGED._value.get()
    old_owner = [Reading(f"n{i % 4}", "t", "temperature", float(i), float(i)) for i in range(200)]
    new_owner = old_owner[100:] + [Reading(f"n{i % 4}", "t", "temperature", float(i), float(i)) for i in range(200, 300)]
    assert store.write(old_owner[:50]) == 50 and metrics.BATCHES_RESTAGED._value.get() == restaged  # all new: copied
    results: dict[str, int] = {}
    with commit_held(store) as (in_flight, go_on):
        first = threading.Thread(target=lambda: results.setdefault("old", store.write(old_owner[50:])))
        first.start()
        assert in_flight.wait(30)
        second = threading.Thread(target=lambda: results.setdefault("new", store.write(new_owner)))  # the other connection
        second.start()
        second.join(1)
        assert second.is_alive()  # waiting for the first transaction's keys
        go_on.set()
        first.join(30)
        second.join(30)
    assert results == {"old": 150, "new": 100}
    assert metrics.BATCHES_RESTAGED._value.get() == restaged + 1
    assert store.query("SELECT count(*), count(DISTINCT ts) FROM readings") == [(300, 300)]
    store.close()


def test_an_alert_event_committed_after_a_later_one_is_still_announced(server, password):  # noqa: F811
    """Two gateways on one PostgreSQL: A draws the lower alert_events id but commits last. The notifier's
    cursor (`id > cursor`) must not step past A's event while A is still in flight."""
    url = server.fresh_database(f"t{next(_names)}")
    a, b, state = PostgresStore(url), PostgresStore(url), AlertState(url)
    in_flight, go_on = threading.Event(), threading.Event()
    with a._session() as writer:  # the pooled connection A's batches are written on
        connection = writer._db
    insert = connection.executemany

    def paused_before_commit(sql, rows):  # dead letters go in after the alert events, just before COMMIT
        if sql.startswith("INSERT INTO dead_letters"):
            in_flight.set()
            go_on.wait(30)
        return insert(sql, rows)

    connection.executemany = paused_before_commit
    fire = AlertEvent("r/a/t", "r", "a", "t", "firing", "warning", 81.0, 10.0, "hot")
    late = threading.Thread(target=a.write, kwargs={"alerts": [fire], "dead_letters": [(10.0, "x", "malformed", "", b"p")]})
    late.start()
    assert in_flight.wait(30)
    other = threading.Thread(target=b.write, kwargs={"alerts": [replace(fire, fingerprint="r/b/t", node="b", ts=11.0)]})
    other.start()
    other.join(2)  # without ordering it commits the higher id now; with it, it waits for A

    def step():
        with state.tx() as tx:
            state.apply_events(tx)

    notifier = threading.Thread(target=step)
    notifier.start()
    notifier.join(2)
    go_on.set()
    for t in (late, other, notifier):
        t.join(30)
    step()
    assert {state.alert(fp)["status"] for fp in ("r/a/t", "r/b/t")} == {"firing"}
    for closing in (a, b, state):
        closing.close()


def test_a_password_never_appears_in_what_is_logged_and_a_wrong_one_is_refused(server, monkeypatch, tmp_path):  # noqa: F811
    wrong = tmp_path / "password"
    wrong.write_text("not-it\n")
    monkeypatch.setenv(postgres.PASSWORD_FILE_ENV, str(wrong))
    with pytest.raises(ValueError, match="cannot connect") as refused:
        PostgresStore(server.url)
    assert "not-it" not in str(refused.value)
    assert "s3cret" not in postgres.describe("postgresql://plantwatch:s3cret@db/plant")


def test_the_cluster_alert_report_reads_each_alerts_latest_row_on_both_engines(db):
    # AlertRule status in the cluster (ingest/alert_status.py) reads each alert's newest row and each rule's
    # newest firing one in one query; PostgreSQL refuses a FROM subquery without an alias.
    from plantwatch.ingest.alert_status import CURRENT_ROWS, AlertRow

    store = open_store(db)
    fire = AlertEvent("r/n/t", "r", "n", "t", "firing", "warning", 81.0, 10.0, "hot")
    other = replace(fire, fingerprint="r/m/t", node="m", ts=12.0)
    store.write(alerts=[fire, other, replace(fire, state="resolved", ts=20.0, summary="ok")])
    rows = sorted((row.fingerprint, row.state, row.ts) for row in map(AlertRow._make, store.query(CURRENT_ROWS)))
    # r/n/t's latest row (resolved) and rule r's latest firing (r/m/t's, at 12)
    assert rows == [("r/m/t", "firing", 12.0), ("r/n/t", "resolved", 20.0)]
