"""Alert state in the store: alert episodes, acknowledgements, silences, what each receiver was told,
the notification log and each alert's history — durable, beside the readings.

The rule engine's events (table `alert_events`) are stored in the transaction of the batch
that caused them. The notifier follows that table with a cursor kept here, so an event is
applied to the alert state exactly once, whatever crashed when. Every change of state made
here is one transaction (`with state.tx() as db:`) on this module's own connection, one
writer at a time (SQLite's write lock, or an advisory lock on PostgreSQL: the logic here reads
then writes, as a single writer may); the gateway's batches commit meanwhile. The statements
run on both engines (store/postgres.py adapts the connection and the schema).

An alert is one row per episode: (fingerprint, starts_at). A fingerprint has at most one
firing episode; a resolved one stays for its resolve notifications and the history.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantwatch.alerts.lifecycle import Alert, Group, Matcher, Silence, Told
from plantwatch.readings import AlertEvent
from plantwatch.store import postgres
from plantwatch.store.shard_state import SCHEMA as SHARD_SCHEMA
from plantwatch.store.sqlite import SCHEMA as STORE_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT NOT NULL,
    starts_at   REAL NOT NULL,
    rule        TEXT NOT NULL,
    node        TEXT NOT NULL,
    sensor      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    status      TEXT NOT NULL,
    value       REAL,
    summary     TEXT NOT NULL,
    ends_at     REAL,
    -- the resolve event's text; `summary` keeps the firing one
    end_summary TEXT,
    updated_at  REAL NOT NULL,
    acked_by    TEXT,
    acked_at    REAL,
    ack_comment TEXT,
    -- 1 once a resolved episode that nobody was told of has been announced or found muted
    settled     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, fingerprint);
CREATE TABLE IF NOT EXISTS alert_history (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at   REAL,
    at          REAL NOT NULL,
    what        TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_history_by_fp ON alert_history (fingerprint, id);
CREATE TABLE IF NOT EXISTS silences (
    id         TEXT PRIMARY KEY,
    matchers   TEXT NOT NULL,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment    TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_told (
    receiver    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at   REAL NOT NULL,
    severity    TEXT,
    resolved    INTEGER NOT NULL,
    last_sent   REAL NOT NULL,
    PRIMARY KEY (receiver, fingerprint, starts_at)
);
CREATE TABLE IF NOT EXISTS alert_groups (
    receiver      TEXT NOT NULL,
    key           TEXT NOT NULL,
    pending_since REAL,
    last_sent     REAL,
    PRIMARY KEY (receiver, key)
);
CREATE TABLE IF NOT EXISTS notifications (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    receiver   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    group_key  TEXT NOT NULL,
    body       TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    rounds     INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_at    REAL NOT NULL,
    sent_at    REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_at);
CREATE TABLE IF NOT EXISTS notifier_state (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
"""

#: Notification statuses: waiting to be (re)tried, delivered, refused for good, given up after MAX_AGE_S.
PENDING, SENT, FAILED, EXPIRED = "pending", "sent", "failed", "expired"


class NotFound(LookupError):
    """No such alert or silence."""


@dataclass(frozen=True)
class Stored:
    """A notification as stored."""

    id: int
    key: str
    receiver: str
    kind: str
    body: dict[str, Any]
    attempts: int
    rounds: int
    created_at: float


def _alert(row: tuple, labels: Callable[[str, str, str, str], Mapping[str, str]] | None = None) -> Alert:
    fp, starts_at, rule, node, sensor, severity, status, value, summary, ends_at, acked_by, end_summary = row
    shown = labels(rule, node, sensor, severity) if labels else {}
    text = end_summary if status == "resolved" and end_summary else summary
    return Alert(fp, rule, node, sensor, severity, status, value, text, starts_at, ends_at, acked_by, shown, summary)


_ALERT_COLUMNS = "fingerprint, starts_at, rule, node, sensor, severity, status, value, summary, ends_at, acked_by, end_summary"


class AlertState:
    """The alert tables of one store (a SQLite file or a PostgreSQL URL), on a connection of their own."""

    def __init__(self, path: str | Path, replay: bool = False):
        """Open the alert state of the store at `path`. The first time, the cursor is placed after the
        events already stored (a store from before alert state was kept announced them back then),
        or, with `replay`, before them all."""
        self._lock = threading.RLock()
        # The events table belongs to the store the pipeline writes; a notifier started first reads it too.
        if postgres.is_url(path):
            self.path = str(path)  # the readings API reads the store by it; error messages show it masked
            self._db: Any = postgres.PgConnection(str(path))
            postgres.migrate(self._db, STORE_SCHEMA + SHARD_SCHEMA + SCHEMA)
            self._begin = lambda: self._db.begin(postgres.ALERT_STATE_LOCK)
        else:
            self.path = str(path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(STORE_SCHEMA + SCHEMA)
            self._begin = lambda: self._db.execute("BEGIN IMMEDIATE")
        with self._lock:
            self._db.execute(
                "INSERT INTO notifier_state (k, v) SELECT 'cursor', CAST(? * coalesce(max(id), 0) AS TEXT) FROM alert_events"
                " WHERE true ON CONFLICT DO NOTHING",
                (0 if replay else 1,),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, its lock taken up front (SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock)."""
        with self._lock:
            self._begin()
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _get(self, db: sqlite3.Connection, k: str) -> str | None:
        row = db.execute("SELECT v FROM notifier_state WHERE k = ?", (k,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _set(db: sqlite3.Connection, k: str, v: str) -> None:
        db.execute("INSERT INTO notifier_state (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (k, v))

    # --- the notifier's lease (one notifier acts per store; see alerts/notifier.py) ---

    def hold_lease(self, db: sqlite3.Connection, owner: str, now: float, lease_s: float) -> bool:
        """Take or renew the notifier lease in this transaction; False while another owner holds it."""
        held = self._get(db, "lease")
        if held:
            holder, until = json.loads(held)
            if holder != owner and until > now:
                return False
        self._set(db, "lease", json.dumps([owner, now + lease_s]))
        return True

    def take_lease(self, owner: str, now: float, lease_s: float) -> None:
        """Take the lease whoever holds it: for a process that has already fenced every other one off the store."""
        with self.tx() as db:
            self._set(db, "lease", json.dumps([owner, now + lease_s]))

    def release_lease(self, owner: str) -> None:
        with self.tx() as db:
            held = self._get(db, "lease")
            if held and json.loads(held)[0] == owner:
                db.execute("DELETE FROM notifier_state WHERE k = 'lease'")

    # --- events → alert episodes ---

    def apply_events(self, db: sqlite3.Connection, limit: int = 5000) -> int:
        """Apply the stored rule events after the cursor to the alert episodes (the cursor moves with them);
        how many episodes they started."""
        cursor = self._get(db, "cursor")
        rows = db.execute(
            "SELECT id, fingerprint, rule, node, sensor, state, severity, value, ts, summary FROM alert_events"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (int(cursor), limit),
        ).fetchall()
        started = sum(self._apply(db, AlertEvent(*row[1:])) for row in rows)
        if rows:
            self._set(db, "cursor", str(rows[-1][0]))
        return started

    def _apply(self, db: sqlite3.Connection, e: AlertEvent) -> bool:
        """Apply one event; True when it started an episode."""
        current = db.execute(
            "SELECT starts_at, severity FROM alerts WHERE fingerprint = ? AND status = 'firing'", (e.fingerprint,)
        ).fetchone()
        if e.state == "firing":
            if current is None:
                started = db.execute(
                    "INSERT OR IGNORE INTO alerts (fingerprint, starts_at, rule, node, sensor, severity,"
                    " status, value, summary, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'firing', ?, ?, ?)",
                    (e.fingerprint, e.ts, e.rule, e.node, e.sensor, e.severity, e.value, e.summary, e.ts),
                ).rowcount
                self.history(db, e.fingerprint, e.ts, e.ts, "firing", {"severity": e.severity, "value": e.value, "summary": e.summary})
                return started == 1
            elif current[1] != e.severity:
                db.execute(
                    "UPDATE alerts SET severity = ?, value = ?, summary = ?, updated_at = ? WHERE fingerprint = ? AND starts_at = ?",
                    (e.severity, e.value, e.summary, e.ts, e.fingerprint, current[0]),
                )
                self.history(db, e.fingerprint, current[0], e.ts, "level", {"from": current[1], "to": e.severity, "value": e.value})
        elif current is not None:
            db.execute(
                "UPDATE alerts SET status = 'resolved', ends_at = ?, value = ?, end_summary = ?, updated_at = ?"
                " WHERE fingerprint = ? AND starts_at = ?",
                (e.ts, e.value, e.summary, e.ts, e.fingerprint, current[0]),
            )
            self.history(db, e.fingerprint, current[0], e.ts, "resolved", {"value": e.value})
        return False

    @staticmethod
    def history(db: sqlite3.Connection, fingerprint: str, starts_at: float | None, at: float, what: str, detail: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO alert_history (fingerprint, starts_at, at, what, detail) VALUES (?, ?, ?, ?, ?)",
            (fingerprint, starts_at, at, what, json.dumps(detail, default=str)),
        )

    # --- what the lifecycle plans from ---

    def for_planning(
        self, db: sqlite3.Connection, labels: Callable[[str, str, str, str], Mapping[str, str]] | None = None
    ) -> tuple[list[Alert], dict, dict, list[Silence]]:
        """Firing episodes, resolved ones someone must still hear of, what was told, the groups, the silences.

        `labels(rule, node, sensor, severity)` gives each alert its labels (the notifier knows the plant)."""
        told = {
            (r, fp, s): Told(r, fp, s, sev, bool(res), last)
            for r, fp, s, sev, res, last in db.execute(
                "SELECT receiver, fingerprint, starts_at, severity, resolved, last_sent FROM alert_told"
            )
        }
        owed = {(fp, s) for (_, fp, s), t in told.items() if not t.resolved}
        alerts = [_alert(r, labels) for r in db.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status = 'firing'")]
        for r in db.execute(f"SELECT {_ALERT_COLUMNS}, settled FROM alerts WHERE status = 'resolved' AND ends_at IS NOT NULL"):
            if (r[0], r[1]) in owed or not r[-1]:
                alerts.append(_alert(r[:-1], labels))
        groups = {
            (r, k): Group(r, k, p, last) for r, k, p, last in db.execute("SELECT receiver, key, pending_since, last_sent FROM alert_groups")
        }
        return alerts, told, groups, self._silences(db)

    def record(self, db: sqlite3.Connection, told: Iterable[Told], groups: Iterable[Group]) -> None:
        db.executemany(
            "INSERT INTO alert_told (receiver, fingerprint, starts_at, severity, resolved, last_sent) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (receiver, fingerprint, starts_at) DO UPDATE SET severity = excluded.severity,"
            " resolved = excluded.resolved, last_sent = excluded.last_sent",
            [(t.receiver, t.fingerprint, t.starts_at, t.severity, int(t.resolved), t.last_sent) for t in told],
        )
        db.executemany(
            "INSERT INTO alert_groups (receiver, key, pending_since, last_sent) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (receiver, key) DO UPDATE SET pending_since = excluded.pending_since, last_sent = excluded.last_sent",
            [(g.receiver, g.key, g.pending_since, g.last_sent) for g in groups],
        )

    @staticmethod
    def settle(db: sqlite3.Connection, episodes: Iterable[tuple[str, float]]) -> None:
        db.executemany("UPDATE alerts SET settled = 1 WHERE fingerprint = ? AND starts_at = ?", list(episodes))

    def forget_told(self, db: sqlite3.Connection) -> None:
        """Drop what receivers were told of episodes that resolved and whose resolve everyone heard."""
        db.execute(
            "DELETE FROM alert_told WHERE (fingerprint, starts_at) IN (SELECT fingerprint, starts_at FROM alerts WHERE status = 'resolved')"
            " AND (fingerprint, starts_at) NOT IN (SELECT fingerprint, starts_at FROM alert_told WHERE resolved = 0)"
        )

    # --- the notification log ---

    def enqueue(self, db: sqlite3.Connection, key: str, receiver: str, kind: str, group_key: str, body: dict[str, Any], now: float) -> None:
        db.execute(
            "INSERT OR IGNORE INTO notifications (key, receiver, kind, group_key, body, status, created_at,"
            " next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, receiver, kind, group_key, json.dumps(body), PENDING, now, now),
        )

    def due(self, now: float, limit: int = 500) -> list[Stored]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, receiver, kind, body, attempts, rounds, created_at FROM notifications"
                " WHERE status = ? AND next_at <= ? ORDER BY id LIMIT ?",
                (PENDING, now, limit),
            ).fetchall()
        return [Stored(i, k, r, kind, json.loads(b), a, rounds, c) for i, k, r, kind, b, a, rounds, c in rows]

    def finish(self, n: Stored, status: str, attempts: int, at: float, next_at: float, error: str | None, history: list[tuple]) -> None:
        """Record a delivery round's outcome and each alert's history line, in one transaction."""
        with self.tx() as db:
            db.execute(
                "UPDATE notifications SET status = ?, attempts = attempts + ?, rounds = rounds + 1, next_at = ?, sent_at = ?,"
                " last_error = ? WHERE id = ?",
                (status, attempts, next_at, at if status == SENT else None, error, n.id),
            )
            for fp, starts_at, what, detail in history:
                self.history(db, fp, starts_at, at, what, detail)

    def notification_counts(self) -> dict[str, dict[str, int]]:
        """Notifications by receiver and status."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for receiver, status, n in self._db.execute("SELECT receiver, status, count(*) FROM notifications GROUP BY receiver, status"):
                out.setdefault(receiver, {})[status] = n
        return out

    # --- people: acknowledge, silence; reads for the API ---

    def alerts(self, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ALERT_COLUMNS}, acked_at, ack_comment FROM alerts {where} ORDER BY status = 'resolved', starts_at DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_row_dict(r) for r in rows]

    def alert(self, fingerprint: str) -> dict[str, Any]:
        """The fingerprint's current episode (firing, else the latest)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ALERT_COLUMNS}, acked_at, ack_comment FROM alerts WHERE fingerprint = ? ORDER BY"
                f" status = 'firing' DESC, starts_at DESC LIMIT 1",
                (fingerprint,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no alert {fingerprint!r} (fingerprints are rule/node/sensor)")
        return _row_dict(row)

    def alert_history(self, fingerprint: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, starts_at, what, detail FROM alert_history WHERE fingerprint = ? ORDER BY id LIMIT ?", (fingerprint, limit)
            ).fetchall()
        if not rows:
            self.alert(fingerprint)  # NotFound, with its message
        return [{"at": at, "starts_at": s, "what": what, **json.loads(detail)} for at, s, what, detail in rows]

    def ack(self, fingerprint: str, by: str, comment: str, now: float) -> dict[str, Any]:
        """Acknowledge the firing episode: no more repeats or escalation; the resolve is still sent."""
        with self.tx() as db:
            row = db.execute("SELECT starts_at FROM alerts WHERE fingerprint = ? AND status = 'firing'", (fingerprint,)).fetchone()
            if row is None:
                raise NotFound(f"no firing alert {fingerprint!r} to acknowledge")
            db.execute(
                "UPDATE alerts SET acked_by = ?, acked_at = ?, ack_comment = ? WHERE fingerprint = ? AND starts_at = ?",
                (by, now, comment, fingerprint, row[0]),
            )
            self.history(db, fingerprint, row[0], now, "acknowledged", {"by": by, "comment": comment})
        return self.alert(fingerprint)

    def unack(self, fingerprint: str, by: str, comment: str, now: float) -> dict[str, Any]:
        with self.tx() as db:
            row = db.execute(
                "SELECT starts_at FROM alerts WHERE fingerprint = ? AND status = 'firing' AND acked_by IS NOT NULL", (fingerprint,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no acknowledged firing alert {fingerprint!r}")
            db.execute(
                "UPDATE alerts SET acked_by = NULL, acked_at = NULL, ack_comment = NULL WHERE fingerprint = ? AND starts_at = ?",
                (fingerprint, row[0]),
            )
            self.history(db, fingerprint, row[0], now, "unacknowledged", {"by": by, "comment": comment})
        return self.alert(fingerprint)

    def add_silence(self, matchers: list[Matcher], starts_at: float, ends_at: float, created_by: str, comment: str, now: float) -> Silence:
        if not matchers:
            raise ValueError("a silence needs at least one matcher (label=value, label!=value, label=~regex, label!~regex)")
        if ends_at <= starts_at:
            raise ValueError(f"a silence must end after it starts (starts {starts_at}, ends {ends_at})")
        silence = Silence(uuid.uuid4().hex, tuple(matchers), starts_at, ends_at, created_by, comment)
        with self.tx() as db:
            db.execute(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (silence.id, json.dumps([m.__dict__ for m in matchers]), starts_at, ends_at, created_by, comment, now),
            )
        return silence

    def expire_silence(self, silence_id: str, now: float) -> Silence:
        with self.tx() as db:
            found = [s for s in self._silences(db) if s.id == silence_id]
            if not found:
                raise NotFound(f"no silence {silence_id!r}")
            db.execute("UPDATE silences SET ends_at = CASE WHEN ends_at < ? THEN ends_at ELSE ? END WHERE id = ?", (now, now, silence_id))
        return found[0]

    def silences(self) -> list[Silence]:
        with self._lock:
            return self._silences(self._db)

    @staticmethod
    def _silences(db: sqlite3.Connection) -> list[Silence]:
        return [
            Silence(i, tuple(Matcher(**m) for m in json.loads(ms)), s, e, by, c)
            for i, ms, s, e, by, c in db.execute(
                "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences ORDER BY created_at"
            )
        ]


def _row_dict(row: tuple) -> dict[str, Any]:
    a = _alert(row[:12])
    return {
        "fingerprint": a.fingerprint,
        "rule": a.rule,
        "node": a.node,
        "sensor": a.sensor,
        "severity": a.severity,
        "status": a.status,
        "value": a.value,
        "summary": a.summary,
        "starts_at": a.starts_at,
        "ends_at": a.ends_at,
        "acked_by": a.acked_by,
        "acked_at": row[12],
        "ack_comment": row[13],
    }
