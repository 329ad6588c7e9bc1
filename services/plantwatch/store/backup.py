"""`plantwatch backup` / `plantwatch restore`: a store's tables as one file, restored into an empty store.

The file is gzip'd JSON lines, the same for both engines (so a SQLite store moves to PostgreSQL
by a backup and a restore): a header line, then per table a line naming its columns and one
JSON array per row (bytes as {"b64": ...}; floats exactly, as JSON writes them). It is read
in one snapshot (a read transaction), so a backup of a running gateway is consistent: every
batch in it has its checkpoint, every notification its alert. Restore refuses a store that
holds readings or alert events already, and writes all tables in one transaction.
"""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from plantwatch.store import postgres
from plantwatch.store.alert_state import AlertState

FORMAT = "plantwatch-backup"
VERSION = 1
#: Every table of a store, in an order that restores cleanly.
TABLES = (
    "readings",
    "summaries",
    "alert_events",
    "dead_letters",
    "shard_checkpoints",
    "alerts",
    "alert_history",
    "silences",
    "alert_told",
    "alert_groups",
    "notifications",
    "notifier_state",
)
#: Tables whose ids PostgreSQL generates: their sequences are moved past the restored ids.
IDENTITY_TABLES = ("alert_events", "dead_letters", "alert_history", "notifications")


def _connect(db: str | Path) -> Any:
    # Opening the store and its alert state creates every table, on either engine.
    postgres.open_store(db).close()
    AlertState(db).close()
    if postgres.is_url(db):
        return postgres.PgConnection(str(db))
    return sqlite3.connect(str(db), isolation_level=None, timeout=30.0)


def _cell(v: Any) -> Any:
    return {"b64": base64.b64encode(bytes(v)).decode()} if isinstance(v, (bytes, memoryview)) else v


def _uncell(v: Any) -> Any:
    return base64.b64decode(v["b64"]) if isinstance(v, dict) else v


def backup(db: str | Path, out: str | Path) -> dict[str, int]:
    """Write every table of the store `db` to `out`; rows per table."""
    con = _connect(db)
    counts: dict[str, int] = {}
    try:
        # One snapshot for every table: REPEATABLE READ on PostgreSQL, a read transaction on SQLite (WAL).
        con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if postgres.is_url(db) else "BEGIN")
        with gzip.open(out, "wt", encoding="utf-8") as f:
            f.write(json.dumps({"format": FORMAT, "version": VERSION, "tables": list(TABLES)}) + "\n")
            for table in TABLES:
                query = f"SELECT * FROM {table}"  # noqa: S608 (a name from TABLES)
                # PostgreSQL: a server-side cursor, so that a year of readings streams instead of sitting in memory.
                cur = con.raw.cursor(name=f"backup_{table}") if postgres.is_url(db) else con
                cur = cur.execute(query)
                columns = [d[0] for d in cur.description]
                f.write(json.dumps({"table": table, "columns": columns}) + "\n")
                n = 0
                for row in cur:
                    f.write(json.dumps([_cell(v) for v in row]) + "\n")
                    n += 1
                counts[table] = n
        con.execute("COMMIT")
    finally:
        con.close()
    return counts


def _lines(src: str | Path) -> Iterator[Any]:
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def restore(db: str | Path, src: str | Path) -> dict[str, int]:
    """Load the backup `src` into the store `db`, which must hold no readings or alert events; rows per table."""
    try:
        return _restore(db, src)
    except (sqlite3.Error, psycopg.Error) as exc:
        raise ValueError(f"store {postgres.describe(db)}: restoring {src} failed, nothing was restored: {exc}") from None


def _restore(db: str | Path, src: str | Path) -> dict[str, int]:
    lines = _lines(src)
    try:
        header = next(lines)
    except (OSError, EOFError, ValueError, StopIteration) as exc:
        raise ValueError(f"{src}: not a plantwatch backup (a gzip'd JSON-lines file from `plantwatch backup`): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"{src}: not a {FORMAT} file of version {VERSION} (header {str(header)[:200]})")
    con = _connect(db)
    counts: dict[str, int] = {}
    try:
        con.execute("BEGIN" if postgres.is_url(db) else "BEGIN IMMEDIATE")
        try:
            held = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("readings", "alert_events")}  # noqa: S608
            if any(held.values()):
                raise ValueError(f"store {postgres.describe(db)} is not empty ({held}): restore into a new, empty store")
            con.execute("DELETE FROM notifier_state")  # the new store's fresh cursor gives way to the backup's
            table, sql, batch = None, "", []
            for line in lines:
                if isinstance(line, dict):
                    if batch:
                        con.executemany(sql, batch)
                    table, batch = line["table"], []
                    if table not in TABLES:
                        raise ValueError(f"{src}: unknown table {table!r} (a store has {', '.join(TABLES)})")
                    cols = line["columns"]
                    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"  # noqa: S608
                    counts[table] = 0
                    continue
                batch.append([_uncell(v) for v in line])
                counts[table] += 1
                if len(batch) >= 5000:
                    con.executemany(sql, batch)
                    batch = []
            if batch:
                con.executemany(sql, batch)
            if postgres.is_url(db):
                for t in IDENTITY_TABLES:
                    con.execute(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), coalesce(max(id), 0) + 1, false) FROM {t}")  # noqa: S608
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return counts
