"""Gateways that divide the shards among themselves, however many run (`--membership store`).

A Deployment scaled by an HPA cannot tell its pods how many they are or which one each is,
so a fixed `--replicas N --replica-index i` cannot follow it. Instead every gateway
registers in the shared store (`gateway_members`, beside the shard leases) and renews its
heartbeat every quarter lease; the members heard from within a lease divide the shards by
`assign`, which every member computes alike from the same list. A member starts a shard
worker for each shard it is given (the worker claims the shard: a new fencing epoch, so the
previous owner can commit nothing more) and stops the workers of shards it is no longer
given (after the batch in hand is committed and acknowledged). A member stopped by SIGTERM
leaves the table, and the others take its shards at their next heartbeat; a killed one is
dropped once it has been silent for a lease. While two members' views differ (for up to a
heartbeat), both may claim a shard: the fencing refuses the older claim's commit, so a batch
is stored once whoever consumed it (docs/scale-out.md).

`assign` and `live` are pure; `Registry` is the store's table; `MemberIngest` is the thread
that follows the assignment.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence

from plantwatch.ingest.runner import raise_gc_threshold
from plantwatch.ingest.scaleout import DEFAULT_LEASE_S, PipelineFactory, ShardedIngest, ShardWorker
from plantwatch.plant.load import Plant
from plantwatch.store import postgres, shard_state
from plantwatch.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

#: Members silent for this many leases are deleted from the table (killed ones never leave).
FORGET_LEASES = 10


def _score(member: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{member}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(shards: Sequence[int], members: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """The shards each member owns: rendezvous hashing, capped so loads differ by at most one.

    Each shard, in order, goes to the member that scores highest for it among those with room
    left. It depends only on the set of members, never on the order they are listed or on who
    computes it; a member's arrival or departure mostly moves shards to or from that member.
    """
    ids = sorted(set(members))
    if not ids:
        return {}
    base, extra = divmod(len(shards), len(ids))
    load = dict.fromkeys(ids, 0)
    owned: dict[str, list[int]] = {m: [] for m in ids}
    above = 0  # members already holding base + 1
    for k in sorted(shards):
        for m in sorted(ids, key=lambda m: (-_score(m, k), m)):
            if load[m] < base or (load[m] == base and above < extra):
                above += load[m] == base
                load[m] += 1
                owned[m].append(k)
                break
    return {m: tuple(ks) for m, ks in owned.items()}


def live(rows: Iterable[tuple[str, float]], now: float, lease_s: float) -> list[str]:
    """The members whose last heartbeat is within a lease of `now`."""
    return sorted(m for m, heartbeat in rows if now - heartbeat <= lease_s)


class Registry:
    """The `gateway_members` table on its own connection, so a heartbeat never waits behind a batch's commit."""

    def __init__(self, url: str):
        self._url = url
        self._db: postgres.PgConnection | None = None

    def beat(self, member: str, now: float, lease_s: float) -> list[tuple[str, float]]:
        """Renew `member`'s heartbeat; every member's (id, heartbeat). Reconnects after a failure."""
        try:
            self._db = self._db or postgres.PgConnection(self._url)
            return shard_state.beat(self._db, member, now, now - FORGET_LEASES * lease_s)
        except Exception:
            self.close()
            raise

    def leave(self, member: str) -> None:
        self._db = self._db or postgres.PgConnection(self._url)
        shard_state.leave(self._db, member)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class MemberIngest(ShardedIngest):
    """A gateway that consumes the shards `assign` gives it among the live members, following every change."""

    def __init__(
        self,
        registry: Registry,
        plant: Plant,
        store: SqliteStore,
        broker_url: str,
        shards: int,
        client_prefix: str,
        member: str,
        make_pipeline: PipelineFactory,
        dead_letter_unknown: bool,
        lease_s: float = DEFAULT_LEASE_S,
    ):
        super().__init__(plant, store, broker_url, shards, [], client_prefix, member, make_pipeline, dead_letter_unknown, lease_s)
        self._registry = registry
        #: Workers of shards given away, finishing their batch in hand.
        self._releasing: list[ShardWorker] = []
        self._stop = threading.Event()
        self._followed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._error: BaseException | None = None

    def start(self, connect_timeout: float | None = 10.0) -> None:
        raise_gc_threshold()
        self._thread.start()
        if connect_timeout is not None and not self._followed.wait(connect_timeout):
            self.stop()
            raise TimeoutError(f"{self._owner}: could not register in the store within {connect_timeout:g}s")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._error is None and super().alive

    @property
    def ready(self) -> bool:
        return self._followed.is_set() and super().ready

    @property
    def error(self) -> BaseException | None:
        return self._error or super().error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following, stop every shard after its batch in hand, then leave (the others take the shards at once)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._releasing, workers = [], self.workers + self._releasing
        for w in workers:
            w.request_stop()
        for w in workers:
            w.stop(timeout)
        try:
            self._registry.leave(self._owner)
        except Exception as exc:  # the others drop it after a lease instead
            log.warning("%s: could not leave the members' table: %s", self._owner, exc)
        self._registry.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.time()
                try:
                    rows = self._registry.beat(self._owner, now, self._lease_s)
                except Exception as exc:
                    # Keep consuming what it has: its commits go on while the store answers, and
                    # once its heartbeat is a lease old the others claim its shards (fencing it).
                    log.warning("%s: heartbeat failed (retrying): %s", self._owner, exc)
                else:
                    self._follow(assign(self.consumable, live(rows, now, self._lease_s)).get(self._owner, ()))
                    self._followed.set()
                self._releasing = [w for w in self._releasing if w.alive]
                self._stop.wait(self._lease_s / 4)
        except BaseException as exc:  # recorded for /healthz and the exit code
            log.exception("%s: membership stopped", self._owner)
            self._error = exc

    def _follow(self, owned: tuple[int, ...]) -> None:
        keep = [w for w in self.workers if w.shard in owned]
        for w in self.workers:
            if w.shard not in owned:
                log.info("shard %d: given to another member; %s releases it", w.shard, self._owner)
                w.request_stop()
                self._releasing.append(w)
        held = {w.shard for w in keep}
        new = [self._worker(k) for k in owned if k not in held]
        for w in new:
            log.info("shard %d: given to %s", w.shard, self._owner)
            w.start()
        if new or len(keep) != len(self.workers):
            self.workers = keep + new
