"""`plantwatch query`'s reads of a store, SQLite or PostgreSQL, read-only (store/readings.py's connection).

Every function returns plain dicts, newest `limit` rows in time order, with `time` (RFC 3339)
beside the stored `ts` (epoch seconds); query/render.py draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from plantwatch.query.render import excerpt, sparkline, stamped, transition
from plantwatch.store import postgres
from plantwatch.store.readings import _ERRORS, _connect

#: Buckets of a series summary's sparkline.
SPARK_WIDTH = 24


@dataclass(frozen=True)
class Filter:
    node: str | None = None
    sensor: str | None = None
    since: float = -math.inf
    until: float = math.inf
    limit: int = 50

    def where(self, ts: str = "ts", node: str | None = "node", sensor: str | None = "sensor") -> tuple[str, list[Any]]:
        """` WHERE ...` over the given columns (None: the table has no such column), and its parameters."""
        clauses, params = [f"{ts} >= ?", f"{ts} <= ?"], [self.since, self.until]
        for column, value in ((node, self.node), (sensor, self.sensor)):
            if column and value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return " WHERE " + " AND ".join(clauses), params


@contextmanager
def _reading(db: str, table: str) -> Iterator[Callable[[str, list[Any]], list[tuple]]]:
    """One read-only connection to `db` for a command's queries; a failed one names the table it could not read."""
    conn = _connect(db)

    def rows(sql: str, params: list[Any]) -> list[tuple]:
        try:
            return conn.execute(sql, params).fetchall()
        except _ERRORS as exc:
            raise ValueError(f"store {postgres.describe(db)}: cannot read the {table} table: {exc}") from None

    try:
        yield rows
    finally:
        conn.close()


def _rows(db: str, sql: str, params: list[Any], table: str) -> list[tuple]:
    with _reading(db, table) as rows:
        return rows(sql, params)


def readings(db: str, f: Filter) -> list[dict[str, Any]]:
    where, params = f.where()
    sql = f"SELECT node, sensor, ts, value, unit FROM readings{where} ORDER BY ts DESC, node, sensor LIMIT ?"
    rows = _rows(db, sql, [*params, f.limit], "readings")
    return [{"time": stamped(ts), "ts": ts, "node": n, "sensor": s, "value": v, "unit": u} for n, s, ts, v, u in reversed(rows)]


def alerts(db: str, f: Filter, rule: str | None = None) -> list[dict[str, Any]]:
    """Alert events, each named by what it was (fired, escalated, eased, resolved) against its alert's event before it.

    The previous event is looked up over the whole history (a window function under the filters),
    so a time range that starts mid-alert still tells an escalation from a first firing.
    """
    where, params = f.where()
    if rule is not None:
        where, params = where + " AND rule = ?", [*params, rule]
    sql = (
        "SELECT ts, state, severity, prev_state, prev_severity, rule, node, sensor, value, summary, fingerprint FROM ("
        "SELECT *, LAG(state) OVER (PARTITION BY fingerprint ORDER BY id) AS prev_state,"
        " LAG(severity) OVER (PARTITION BY fingerprint ORDER BY id) AS prev_severity FROM alert_events) AS events"
        f"{where} ORDER BY ts DESC, id DESC LIMIT ?"
    )
    return [
        {
            "time": stamped(ts), "ts": ts, "event": transition(state, sev, prev_state, prev_sev), "state": state, "severity": sev,
            "rule": r, "node": n, "sensor": s, "value": v, "summary": summary, "fingerprint": fp,
        }
        for ts, state, sev, prev_state, prev_sev, r, n, s, v, summary, fp in reversed(_rows(db, sql, [*params, f.limit], "alert_events"))
    ]  # fmt: skip


def dead_letters(db: str, f: Filter, reason: str | None = None) -> list[dict[str, Any]]:
    where, params = f.where("received", node=None, sensor=None)
    if reason is not None:
        where, params = where + " AND reason = ?", [*params, reason]
    sql = f"SELECT received, reason, topic, detail, payload, payload_bytes FROM dead_letters{where} ORDER BY received DESC, id DESC LIMIT ?"
    return [
        {
            "time": stamped(ts), "ts": ts, "reason": reason, "topic": topic, "detail": detail,
            "payload_excerpt": excerpt(bytes(payload)), "payload_bytes": size,
        }
        for ts, reason, topic, detail, payload, size in reversed(_rows(db, sql, [*params, f.limit], "dead_letters"))
    ]  # fmt: skip


def summary(db: str, f: Filter, width: int = SPARK_WIDTH) -> list[dict[str, Any]]:
    """Per series (node, sensor) in the filter's range: count, min/mean/max, the last value, a sparkline of bucket means.

    The buckets split each series' own first-to-last span into `width`; their means are computed
    by the store (a week of one-second readings never comes back row by row).
    """
    where, params = f.where()
    out = []
    with _reading(db, "readings") as rows:  # one connection for the series and their 2 queries each
        series = rows(
            f"SELECT node, sensor, count(*), min(value), avg(value), max(value), min(ts), max(ts) FROM readings{where}"
            " GROUP BY node, sensor ORDER BY node, sensor LIMIT ?",
            [*params, f.limit],
        )
        for node, sensor, count, low, mean, high, first, last in series:
            newest = "SELECT value, unit FROM readings WHERE node = ? AND sensor = ? AND ts = ?"
            ((last_value, unit),) = rows(newest, [node, sensor, last])
            scale = width / (last - first) if last > first else 0.0
            buckets: list[float | None] = [None] * width if scale else [None]
            # CAST truncates on SQLite and rounds on PostgreSQL: a reading near a bucket's edge may be drawn in its neighbour.
            for bucket, value in rows(
                "SELECT CAST((ts - ?) * ? AS INTEGER) AS b, avg(value) FROM readings WHERE node = ? AND sensor = ? AND ts >= ? AND ts <= ?"
                " GROUP BY b",
                [first, scale, node, sensor, first, last],
            ):
                i = min(int(bucket), len(buckets) - 1)
                buckets[i] = value if buckets[i] is None else (buckets[i] + value) / 2
            out.append(
                {
                    "node": node, "sensor": sensor, "count": count, "min": low, "mean": mean, "max": high, "last": last_value,
                    "unit": unit, "first_time": stamped(first), "last_time": stamped(last), "sparkline": sparkline(buckets),
                }
            )  # fmt: skip
    return out
