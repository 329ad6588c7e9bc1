"""How long the store keeps what it holds, and the sweep that deletes the rest in bounded chunks.

Readings and window summaries are deleted series by series (node, sensor) in key order: each
series is found by one seek on the table's primary key and its old rows by a range of it, so a
sweep needs no index on time (which would slow every insert) and never scans the table. Dead
letters expire by their own index. Every call deletes a bounded chunk, so a sweep holds the
store's write lock only briefly; a sweep that found more to delete is continued at the next tick.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from plantwatch import metrics

#: How long dead letters are kept by default (`--dead-letter-retention-days`).
DEAD_LETTER_RETENTION_S = 7 * 86400.0
#: Seconds between sweeps (sooner while a sweep finds more to delete).
SWEEP_S = 60.0
#: Rows one call deletes at most, so that it holds the write lock briefly; a sweep that deleted
#: this many is continued at the next tick.
EXPIRE_ROWS = 10_000
#: Series one call visits at most (one primary-key seek each).
SERIES_PER_SWEEP = 500
#: The tables kept by series, and the column their age is read from.
SERIES_TABLES = {"readings": "ts", "summaries": "start"}


@dataclass(frozen=True)
class Retention:
    """Seconds each kind of row is kept; None: until deleted by hand (readings' and summaries' default,
    so a local plant keeps its history; the chart sets limits for a cluster's store)."""

    dead_letters_s: float = DEAD_LETTER_RETENTION_S
    readings_s: float | None = None
    summaries_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("dead_letters_s", "readings_s", "summaries_s"):
            kept = getattr(self, name)
            if kept is not None and not kept > 0:
                raise ValueError(f"retention {name.removesuffix('_s')}: {kept} s; a retention is a positive duration")


class Expiring(Protocol):
    def expire_dead_letters(self, before: float) -> int: ...

    def expire_series(self, table: str, before: float, after: tuple[str, str]) -> tuple[int, tuple[str, str] | None]: ...


class Sweeper:
    """Applies a Retention to a store from the pipeline's tick. The shard pipelines of one gateway share one
    (service.py): each would otherwise sweep the same store, and only one of their ticks sweeps at a time."""

    def __init__(self, store: Expiring, retention: Retention):
        self.store = store
        self.retention = retention
        self._next = 0.0
        self._sweeping = threading.Lock()
        #: Where each table's sweep goes on: the last series it finished ("" sorts first).
        self._after = dict.fromkeys(SERIES_TABLES, ("", ""))

    def tick(self, now: float) -> None:
        if now < self._next or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._sweep(now)
        finally:
            self._sweeping.release()

    def _sweep(self, now: float) -> None:
        expired = self.store.expire_dead_letters(now - self.retention.dead_letters_s)
        metrics.DEAD_LETTERS_EXPIRED.inc(expired)
        more = expired >= EXPIRE_ROWS
        for table, kept in (("readings", self.retention.readings_s), ("summaries", self.retention.summaries_s)):
            if kept is None:
                continue
            deleted, after = self.store.expire_series(table, now - kept, self._after[table])
            metrics.ROWS_EXPIRED.labels(table).inc(deleted)
            self._after[table] = after or ("", "")
            more = more or after is not None
        self._next = now if more else now + SWEEP_S
