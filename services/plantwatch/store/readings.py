"""Stored readings read back, one node at a time, in pages: for `detector retrain` and the gateway's readings API.

Opened read-only (`mode=ro`): reading never writes to, or creates, a live plant's store
(a PostgreSQL URL is read over its own connection, each page its own statement).
Each page is its own short read, walking the primary key (node, sensor, ts) from where
the last page ended, so a week of a node never sits in memory at once and a gateway
that streams it holds no read transaction open between pages (WAL checkpoints go on).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from plantwatch.store import postgres

#: Rows per page: a page is one SELECT (and, over HTTP, one chunk of CSV of ~150 KiB).
PAGE_ROWS = 5000

Row = tuple[str, float, float]
"""(sensor, ts, value)"""


#: What a store that cannot be read raises, on either engine.
_ERRORS = (sqlite3.DatabaseError, psycopg.Error)


def _connect(path: str | Path) -> Any:
    if postgres.is_url(path):
        return postgres.PgConnection(str(path))
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"store {path}: no such file")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def _sensor_filter(sensors: tuple[str, ...]) -> tuple[str, list[str]]:
    return (f" AND sensor IN ({','.join('?' * len(sensors))})", list(sensors)) if sensors else ("", [])


def newest(path: str | Path, node: str, sensors: tuple[str, ...] = ()) -> float | None:
    """The time of the node's newest stored reading (of `sensors`, when given); None when it has none."""
    where, params = _sensor_filter(sensors)
    db = _connect(path)
    try:
        (ts,) = db.execute(f"SELECT max(ts) FROM readings WHERE node = ?{where}", [node, *params]).fetchone()
    except _ERRORS as exc:
        raise ValueError(f"store {postgres.describe(path)}: cannot read the readings table: {exc}") from None
    finally:
        db.close()
    return ts


def pages(
    path: str | Path,
    node: str,
    sensors: tuple[str, ...] = (),
    since: float = -math.inf,
    until: float = math.inf,
    page_rows: int = PAGE_ROWS,
) -> Iterator[list[Row]]:
    """The node's readings in [since, until) (of `sensors`, when given), sensor by sensor, each in time order."""
    where, params = _sensor_filter(sensors)
    query = (
        f"SELECT sensor, ts, value FROM readings WHERE node = ?{where} AND ts >= ? AND ts < ? "
        "AND (sensor, ts) > (?, ?) ORDER BY sensor, ts LIMIT ?"
    )
    db = _connect(path)
    after: tuple[str, float] = ("", -math.inf)
    try:
        while True:
            try:
                page = db.execute(query, [node, *params, since, until, *after, page_rows]).fetchall()
            except _ERRORS as exc:
                raise ValueError(f"store {postgres.describe(path)}: cannot read the readings table: {exc}") from None
            if page:
                yield page
            if len(page) < page_rows:
                return
            after = (page[-1][0], page[-1][1])
    finally:
        db.close()
