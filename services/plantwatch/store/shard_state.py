"""A shard's lease and checkpoint in the embedded store: who consumes it, and its rule state.

One row per shard: the fencing epoch and owner of its consumer, when that consumer last
said it was alive, and the state it committed with its latest batch. `gateway_members` lists the
gateways that divide the shards among themselves (ingest/membership.py). The statements run
on the store's connection inside the transaction its caller holds (SqliteStore, or
PostgresStore, which runs the same statements), so a checkpoint commits with its batch or
not at all (docs/scale-out.md).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS shard_checkpoints (
    shard   INTEGER PRIMARY KEY,
    epoch   INTEGER NOT NULL,
    owner   TEXT NOT NULL,
    renewed REAL NOT NULL,
    state   BLOB
);
CREATE TABLE IF NOT EXISTS gateway_members (
    id        TEXT PRIMARY KEY,
    heartbeat REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Checkpoint:
    """A shard's state after a batch, committed with it only while `epoch` is the shard's current one."""

    shard: int
    epoch: int
    state: bytes


class Fenced(Exception):
    """Another consumer claimed the shard since this one did: its state is stale, nothing was written."""

    def __init__(self, shard: int, epoch: int, current: int | None, owner: str | None):
        self.shard, self.epoch, self.current, self.owner = shard, epoch, current, owner
        by = f"epoch {current}" + (f" ({owner})" if owner else "")
        super().__init__(f"shard {shard}: epoch {epoch} was superseded by {by}; nothing was committed")


def save(db: sqlite3.Connection, c: Checkpoint) -> None:
    """Replace the shard's state (in the caller's transaction); Fenced if the shard was claimed at a newer epoch."""
    # A committed batch renews the lease too: an owner busy with long batches (or waiting
    # for the write lock, up to the busy timeout) is alive, whether or not it got to tick.
    # On PostgreSQL the UPDATE waits for a concurrent claim's row lock, then finds the epoch moved.
    updated = db.execute(
        "UPDATE shard_checkpoints SET state = ?, renewed = ? WHERE shard = ? AND epoch = ?", (c.state, time.time(), c.shard, c.epoch)
    ).rowcount
    if not updated:
        raise _fenced(db, c.shard, c.epoch)


def claim(db: sqlite3.Connection, shard: int, owner: str, now: float) -> tuple[int, bytes | None]:
    """Bump the shard's epoch and name its owner (in the caller's transaction); (epoch, last state)."""
    db.execute(
        "INSERT INTO shard_checkpoints (shard, epoch, owner, renewed) VALUES (?, 1, ?, ?)"
        " ON CONFLICT (shard) DO UPDATE SET epoch = shard_checkpoints.epoch + 1, owner = excluded.owner,"
        " renewed = excluded.renewed",
        (shard, owner, now),
    )
    return db.execute("SELECT epoch, state FROM shard_checkpoints WHERE shard = ?", (shard,)).fetchone()


def renew(db: sqlite3.Connection, shard: int, epoch: int, now: float) -> None:
    """Mark the shard's consumer alive at `now`; Fenced if another one has claimed it since."""
    if not db.execute("UPDATE shard_checkpoints SET renewed = ? WHERE shard = ? AND epoch = ?", (now, shard, epoch)).rowcount:
        raise _fenced(db, shard, epoch)


def lease(db: sqlite3.Connection, shard: int) -> tuple[int, str, float] | None:
    """(epoch, owner, last renewed) of the shard's consumer; None if it was never claimed."""
    return db.execute("SELECT epoch, owner, renewed FROM shard_checkpoints WHERE shard = ?", (shard,)).fetchone()


def beat(db: sqlite3.Connection, member: str, now: float, forget_before: float) -> list[tuple[str, float]]:
    """Register `member` as a live gateway at `now`; (id, last heartbeat) of those heard from since `forget_before`.

    Those silent for longer are forgotten (a killed gateway never leaves); ingest/membership.py
    divides the shards among the ones within a lease.
    """
    db.execute("DELETE FROM gateway_members WHERE heartbeat < ?", (forget_before,))
    db.execute(
        "INSERT INTO gateway_members (id, heartbeat) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
        (member, now),
    )
    return db.execute("SELECT id, heartbeat FROM gateway_members ORDER BY id").fetchall()


def leave(db: sqlite3.Connection, member: str) -> None:
    """Deregister `member`: the others divide its shards at their next heartbeat, without waiting for a lease."""
    db.execute("DELETE FROM gateway_members WHERE id = ?", (member,))


def _fenced(db: sqlite3.Connection, shard: int, epoch: int) -> Fenced:
    current = lease(db, shard)
    return Fenced(shard, epoch, *(current[:2] if current else (None, None)))
