"""The embedded store: readings, alert events and dead letters in one SQLite file.

WAL mode, one writer, one transaction per batch. Readings are keyed by
(node, sensor, ts), so a re-delivered message never stores a reading twice.

Several gateway processes may share one file (on one host): each batch takes the write
lock at BEGIN, and a shard's rule state is checkpointed in the transaction of the batch
that produced it, under the shard's fencing epoch (store/shard_state.py, docs/scale-out.md).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from plantwatch.readings import AlertEvent, Reading
from plantwatch.rules.windows import Summary, summarize
from plantwatch.store import shard_state
from plantwatch.store.retention import EXPIRE_ROWS, SERIES_PER_SWEEP, SERIES_TABLES

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    node   TEXT NOT NULL,
    sensor TEXT NOT NULL,
    ts     REAL NOT NULL,
    type   TEXT NOT NULL,
    value  REAL NOT NULL,
    unit   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (node, sensor, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_events (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule        TEXT NOT NULL,
    node        TEXT NOT NULL,
    sensor      TEXT NOT NULL,
    state       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    value       REAL,
    ts          REAL NOT NULL,
    summary     TEXT NOT NULL,
    UNIQUE (fingerprint, state, ts)
);
CREATE TABLE IF NOT EXISTS summaries (
    node   TEXT NOT NULL,
    sensor TEXT NOT NULL,
    width  REAL NOT NULL,
    start  REAL NOT NULL,
    count  INTEGER NOT NULL,
    min    REAL NOT NULL,
    max    REAL NOT NULL,
    mean   REAL NOT NULL,
    p95    REAL NOT NULL,
    PRIMARY KEY (node, sensor, width, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id       INTEGER PRIMARY KEY,
    received REAL NOT NULL,
    topic    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    payload  BLOB NOT NULL,
    payload_bytes  INTEGER,
    payload_sha256 TEXT
);
"""
#: Columns a dead_letters table made before payloads were cut to a prefix lacks.
_DEAD_LETTER_COLUMNS = (("payload_bytes", "INTEGER"), ("payload_sha256", "TEXT"))

#: Bytes of a rejected payload a dead letter keeps (stored and republished), beside its full
#: size and sha256: enough to see what was wrong, while a hostile 10 MB message costs 4 KiB.
DEAD_LETTER_PAYLOAD_BYTES = 4096

DeadLetter = tuple[float, str, str, str, bytes]
"""(received, topic, reason, detail, payload): the payload in full; stores keep `payload_record` of it."""


def payload_record(payload: bytes) -> tuple[bytes, int, str]:
    """(the first DEAD_LETTER_PAYLOAD_BYTES bytes, the full size, the full payload's sha256 in hex)."""
    return payload[:DEAD_LETTER_PAYLOAD_BYTES], len(payload), hashlib.sha256(payload).hexdigest()


#: Rows per INSERT statement. One statement is one sqlite3_step, during which Python lets
#: other threads run, so a batch is stored in a few long steps instead of one short step per
#: row (executemany): a thread committing one batch while the pipeline decodes the next
#: rarely waits for the interpreter, and SQLite skips a statement reset per row.
#: 4,096 rows of 6 parameters stay under SQLite's limit of 32,766 parameters.
ROWS_PER_INSERT = 4096


def _rows_per_statement(n: int) -> int:
    """`n` rounded up to one of a few dozen sizes, so that prepared statements come from the cache.

    Preparing a statement of thousands of rows costs more than running it; the rows added by
    rounding repeat the last row, which INSERT OR IGNORE skips (it conflicts with itself).
    """
    granule = 16 if n <= 256 else 256
    return -(-n // granule) * granule


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    # OR IGNORE also drops a NaN value (stored as NULL, refused by NOT NULL); PostgresStore drops those itself.
    return "INSERT OR IGNORE INTO readings (node, sensor, type, value, ts, unit) VALUES " + ",".join(["(?,?,?,?,?,?)"] * rows)


def _insert_readings(db: sqlite3.Connection, readings: list[Reading]) -> int:
    """Insert readings (named tuples in the column order of the INSERT) in statements of many rows; how many were new."""
    stored = 0
    for start in range(0, len(readings), ROWS_PER_INSERT):
        chunk = readings[start : start + ROWS_PER_INSERT]
        rows = _rows_per_statement(len(chunk))
        params = list(chain.from_iterable(chunk))
        params.extend(chunk[-1] * (rows - len(chunk)))
        stored += db.execute(_insert_sql(rows), params).rowcount
    return stored


class SqliteStore:
    """Thread-safe (one lock) SQLite store; callers batch their writes.

    Its statements run on PostgreSQL too (INSERT OR IGNORE translated): PostgresStore
    (store/postgres.py) is this class on a PostgreSQL connection, with its own connect, schema and BEGIN.
    """

    #: A write with no checkpoint commits no pipeline state (ingest.writes.Store).
    commits_checkpoint = False

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # A generous busy timeout: other gateway processes may hold the write lock for a batch.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA + shard_state.SCHEMA)
            self._migrate_dead_letters()

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """What one call works on (a batch's transaction, a claim, a read), held until it returns: this store's
        connection, under its lock, with `_db`, `_begin`, `_insert_readings` and `_order_alert_events`.

        PostgresStore lends one of a pool of connections instead, so that shards commit side by side.
        """
        with self._lock:
            yield self

    def _begin(self) -> None:
        # IMMEDIATE: take the write lock now, so another process's commit cannot make
        # this transaction's reads stale (SQLITE_BUSY_SNAPSHOT) halfway through.
        self._db.execute("BEGIN IMMEDIATE")

    def _insert_readings(self, readings: list[Reading]) -> int:
        return _insert_readings(self._db, readings)

    def _order_alert_events(self) -> None:
        """Make this batch's alert events commit in the order of their ids (the notifier's cursor
        relies on it). BEGIN IMMEDIATE already lets one writer in at a time: nothing to do here."""

    def _migrate_dead_letters(self) -> None:
        """Give a file from before payload prefixes the size and hash columns, and cut its payloads."""
        db = self._db
        have = {row[1] for row in db.execute("PRAGMA table_info(dead_letters)")}
        missing = [(name, kind) for name, kind in _DEAD_LETTER_COLUMNS if name not in have]
        if missing:
            db.create_function("sha256", 1, lambda b: hashlib.sha256(b).hexdigest(), deterministic=True)
            db.execute("BEGIN IMMEDIATE")
            try:
                for name, kind in missing:
                    db.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {kind}")
                db.execute(
                    "UPDATE dead_letters SET payload_bytes = length(payload), payload_sha256 = sha256(payload),"
                    " payload = substr(payload, 1, ?) WHERE payload_bytes IS NULL",
                    (DEAD_LETTER_PAYLOAD_BYTES,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        db.execute("CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received)")

    def write(
        self,
        readings: Iterable[Reading] = (),
        alerts: Iterable[AlertEvent] = (),
        dead_letters: Iterable[DeadLetter] = (),
        checkpoint: shard_state.Checkpoint | None = None,
    ) -> int:
        """Write one batch in one transaction; return how many readings were new.

        With a checkpoint, the shard's state is replaced in the same transaction, or, if
        the shard was claimed at a newer epoch, nothing is written and Fenced is raised.
        """
        with self._session() as c:
            db = c._db
            c._begin()
            try:
                if checkpoint is not None:
                    shard_state.save(db, checkpoint)
                stored = c._insert_readings(readings if isinstance(readings, list) else list(readings))
                alerts = list(alerts)
                if alerts:
                    c._order_alert_events()
                db.executemany(
                    "INSERT OR IGNORE INTO alert_events (fingerprint, rule, node, sensor, state, severity, value, ts, summary)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ((a.fingerprint, a.rule, a.node, a.sensor, a.state, a.severity, a.value, a.ts, a.summary) for a in alerts),
                )
                db.executemany(
                    "INSERT INTO dead_letters (received, topic, reason, detail, payload, payload_bytes, payload_sha256)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((*letter[:4], *payload_record(letter[4])) for letter in dead_letters),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stored

    def conflicting(self, readings: list[Reading]) -> list[tuple[Reading, float]]:
        """The readings whose (node, sensor, ts) is stored with another value, each with that value.

        Asked after a batch stored fewer readings than it had: an exact re-delivery matches
        the stored row and is not listed; a conflict (same key, another value) is. One indexed
        lookup per reading, only for those batches.
        """
        out = []
        with self._session() as c:
            db = c._db
            for start in range(0, len(readings), ROWS_PER_INSERT):
                chunk = readings[start : start + ROWS_PER_INSERT]
                rows = db.execute(
                    "WITH batch(i, node, sensor, ts, value) AS (VALUES " + ",".join(["(?,?,?,?,?)"] * len(chunk)) + ")"
                    " SELECT batch.i, readings.value FROM batch JOIN readings ON readings.node = batch.node"
                    " AND readings.sensor = batch.sensor AND readings.ts = batch.ts WHERE readings.value != batch.value",
                    [x for i, r in enumerate(chunk) for x in (i, r.node, r.sensor, r.ts, r.value)],
                ).fetchall()
                out.extend((chunk[i], stored) for i, stored in rows)
        return out

    def claim_shard(self, shard: int, owner: str, now: float) -> tuple[int, bytes | None]:
        """Become the shard's consumer: bump its epoch (fencing off the previous owner); (epoch, last state)."""
        with self._session() as c:
            db = c._db
            c._begin()
            try:
                claimed = shard_state.claim(db, shard, owner, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return claimed

    def renew_shard(self, shard: int, epoch: int, now: float) -> None:
        """Say the shard's consumer is alive (its lease); Fenced if another one has claimed it since."""
        with self._session() as c:
            shard_state.renew(c._db, shard, epoch, now)

    def shard_lease(self, shard: int) -> tuple[int, str, float] | None:
        """(epoch, owner, last renewed) of the shard's consumer; None if it was never claimed."""
        with self._session() as c:
            return shard_state.lease(c._db, shard)

    def summarize(self, windows: Iterable[tuple[str, str, float, float]]) -> list[Summary]:
        """(Re)compute the summaries of (node, sensor, start, width) windows from the stored readings."""
        with self._session() as c:
            db = c._db
            out = []
            c._begin()
            try:
                for node, sensor, start, width in windows:
                    values = [
                        v
                        for (v,) in db.execute(
                            "SELECT value FROM readings WHERE node = ? AND sensor = ? AND ts >= ? AND ts < ?",
                            (node, sensor, start, start + width),
                        )
                    ]
                    summary = summarize(node, sensor, start, width, values)
                    if summary is None:
                        continue
                    db.execute(
                        "INSERT INTO summaries (node, sensor, width, start, count, min, max, mean, p95)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, sensor, width, start) DO UPDATE SET"
                        " count = excluded.count, min = excluded.min, max = excluded.max, mean = excluded.mean, p95 = excluded.p95",
                        (node, sensor, width, start, summary.count, summary.min, summary.max, summary.mean, summary.p95),
                    )
                    out.append(summary)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def expire_dead_letters(self, before: float) -> int:
        """Delete up to EXPIRE_ROWS dead letters received before `before` (oldest first); how many."""
        with self._session() as c:
            return c._db.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE received < ? ORDER BY received LIMIT ?)",
                (before, EXPIRE_ROWS),
            ).rowcount

    def expire_series(self, table: str, before: float, after: tuple[str, str]) -> tuple[int, tuple[str, str] | None]:
        """Delete `table`'s rows older than `before` (readings by ts, summaries by window start), series
        by series in key order from the one after `after`: at most EXPIRE_ROWS rows and SERIES_PER_SWEEP
        series per call. Returns (rows deleted, the series to go on after; None once all were visited)."""
        column = SERIES_TABLES[table]
        deleted = 0
        with self._session() as c:
            db = c._db
            for _ in range(SERIES_PER_SWEEP):
                series = db.execute(
                    f"SELECT node, sensor FROM {table} WHERE (node, sensor) > (?, ?) ORDER BY node, sensor LIMIT 1", after
                ).fetchone()
                if series is None:
                    return deleted, None
                budget = EXPIRE_ROWS - deleted
                deleted += db.execute(
                    f"DELETE FROM {table} WHERE node = ? AND sensor = ? AND {column} IN"
                    f" (SELECT {column} FROM {table} WHERE node = ? AND sensor = ? AND {column} < ? ORDER BY {column} LIMIT ?)",
                    (*series, *series, before, budget),
                ).rowcount
                if deleted >= EXPIRE_ROWS:  # the series may have more: the next call starts at it again
                    return deleted, after
                after = (series[0], series[1])
        return deleted, after

    def count(self, table: str) -> int:
        if table not in ("readings", "alert_events", "dead_letters", "summaries"):
            raise ValueError(f"unknown table {table!r}")
        with self._session() as c:
            return c._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._session() as c:
            return c._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
