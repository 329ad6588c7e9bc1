"""A gateway replica that consumes its shards: one persistent MQTT session and one Pipeline per shard.

Each shard worker first claims its shard in the store (a new fencing epoch) and restores
the state the previous owner committed, and only then takes over the shard's MQTT
session (same client id: the broker disconnects the older consumer and redelivers what
it never acknowledged). Every batch commits together with the shard's state; once
another replica has claimed the shard, this one's next commit is refused (Fenced) and
the worker stops without acknowledging, so the new owner gets that batch again.
docs/scale-out.md has the whole argument.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import orjson

from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.quality import Figures
from plantwatch.ingest.runner import Committer, raise_gc_threshold
from plantwatch.ingest.shards import UNKNOWN_SHARD, ShardPlan
from plantwatch.ingest.status_topics import Presence
from plantwatch.ingest.writes import Sink, SpoolDepth, Store
from plantwatch.mqtt import wire
from plantwatch.mqtt.subscriber import BatchSubscriber
from plantwatch.plant.load import Plant
from plantwatch.readings import AlertEvent, Reading
from plantwatch.store.shard_state import Checkpoint, Fenced
from plantwatch.store.sqlite import DeadLetter, SqliteStore

log = logging.getLogger(__name__)

#: Seconds a shard's owner may go without renewing its lease (it renews every tick)
#: before the replica the assignment gives the shard to takes it back.
DEFAULT_LEASE_S = 10.0
#: Seconds between two looks of a shard's consumer at its lease (is it still the owner?): no longer than the
#: subscriber's first reconnect delay (BatchSubscriber.run, 0.1 s).
LEASE_CHECK_S = 0.1
#: (plant of the shard's nodes, the shard's view of the store) → the shard's Pipeline
PipelineFactory = Callable[[Plant, Store], Pipeline]


def shard_plan(plant: Plant, shards: int) -> ShardPlan:
    return ShardPlan.of([(n.name, n.spec.payload.format, n.spec.payload.topic) for n in plant.nodes], shards)


class ShardStore:
    """The store as one shard's pipeline sees it (an ingest.writes.Store): every write carries the shard's checkpoint."""

    #: So the pipeline writes its sinks (InfluxDB) before this store: once a batch is committed with
    #: its checkpoint, no owner computes its alerts again, so they must already be in every sink;
    #: a sink that fails first leaves the batch uncommitted, and the next owner computes it again.
    commits_checkpoint = True

    def __init__(self, store: SqliteStore, shard: int, epoch: int):
        self._store = store
        self._shard = shard
        self._epoch = epoch
        self.pipeline: Pipeline | None = None

    def write(
        self,
        readings: Iterable[Reading] = (),
        alerts: Iterable[AlertEvent] = (),
        dead_letters: Iterable[DeadLetter] = (),
        state: bytes | None = None,
    ) -> int:
        """Write with the shard's checkpoint: `state`, the pipeline's state right after this batch (taken when
        it was prepared: later batches may be prepared already), or, without it, the state now (a clock tick's
        alerts, written with no batch in flight). The checkpoint commits (or is refused) with the batch."""
        if state is None:
            state = orjson.dumps(self.pipeline.snapshot())
        return self._store.write(readings, alerts, dead_letters, Checkpoint(self._shard, self._epoch, state))

    def conflicting(self, readings: list[Reading]) -> list[tuple[Reading, float]]:
        return self._store.conflicting(readings)

    def summarize(self, windows: Iterable[tuple[str, str, float, float]]) -> Any:
        # Summaries are recomputed from the stored readings and upserted: any owner may write them.
        return self._store.summarize(windows)

    def expire_dead_letters(self, before: float) -> int:
        # Dead letters belong to no shard: any owner may sweep them.
        return self._store.expire_dead_letters(before)

    def expire_series(self, table: str, before: float, after: tuple[str, str]) -> tuple[int, tuple[str, str] | None]:
        # Old readings and summaries are past every shard's checkpoint: any owner may sweep them.
        return self._store.expire_series(table, before, after)


class LockedSink:
    """A sink (InfluxDB) shared by the shard threads of a replica, one batch at a time."""

    def __init__(self, sink: Sink):
        self._sink = sink
        self._lock = threading.Lock()

    def write(self, readings: Iterable[Reading] = (), alerts: Iterable[AlertEvent] = (), dead_letters: Iterable[DeadLetter] = ()) -> Any:
        with self._lock:
            return self._sink.write(readings, alerts, dead_letters)

    def spool_depth(self) -> SpoolDepth:
        return self._sink.spool_depth()  # two counters, read for a gauge: not worth waiting for another shard's write

    def flush(self) -> Any:
        with self._lock:
            return self._sink.flush()

    def close(self) -> None:
        with self._lock:
            self._sink.close()


class ShardWorker:
    """Consumes one shard on its own thread until stopped.

    Fenced off by a newer owner, it waits in standby, and claims the shard again once that
    owner has not renewed its lease for `lease_s` (it died, or was stopped without a
    successor): the shard is this replica's by the assignment, so it must not be left
    without a consumer.
    """

    def __init__(
        self,
        shard: int,
        plan: ShardPlan,
        plant: Plant,
        store: SqliteStore,
        broker_url: str,
        client_prefix: str,
        owner: str,
        make_pipeline: PipelineFactory,
        dead_letter_unknown: bool,
        lease_s: float = DEFAULT_LEASE_S,
        tick_s: float = 0.5,
    ):
        self.shard = shard
        self._plan = plan
        self._plant = replace(plant, nodes=tuple(n for n in plant.nodes if plan.node_shard[n.name] == shard))
        self._store = store
        self._owner = owner
        self._make_pipeline = make_pipeline
        #: The unknown shard subscribes to the plant's wildcards, so it also receives other shards' messages.
        self._filter_foreign = shard == UNKNOWN_SHARD and dead_letter_unknown
        self.subscriber = BatchSubscriber(broker_url, plan.subscriptions(shard, dead_letter_unknown), f"{client_prefix}-shard-{shard}")
        self._lease_s = lease_s
        self._tick_s = tick_s
        self._next_tick = 0.0
        self._next_lease_check = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shard-{shard}", daemon=True)
        self.pipeline: Pipeline | None = None
        self._committer: Committer | None = None
        self.epoch: int | None = None
        self.fenced: Fenced | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._consume()
                except Fenced as exc:
                    log.warning("%s: another replica consumes it now", exc)
                    self.fenced = exc
                    self._standby()
        except BaseException as exc:  # recorded for /healthz and the exit code
            log.exception("shard %d stopped", self.shard)
            self.error = exc

    def _consume(self) -> None:
        # Claim before connecting: from here on the previous owner can commit nothing,
        # so the state read now is the last one it will ever commit.
        self.epoch, state = self._store.claim_shard(self.shard, self._owner, time.time())
        view = ShardStore(self._store, self.shard, self.epoch)
        pipeline = self._make_pipeline(self._plant, view)
        view.pipeline = pipeline
        if state is not None:
            pipeline.restore(orjson.loads(state))
        self.pipeline, self.fenced = pipeline, None
        self._next_lease_check = 0.0
        log.info("shard %d: claimed at epoch %d by %s", self.shard, self.epoch, self._owner)
        self._committer = Committer(pipeline, f"shard-{self.shard}-commit")
        self._committer.start()
        try:
            self.subscriber.run(self._handle, self._stop, self._idle)
        finally:
            self._committer.close()

    def _standby(self) -> None:
        """Return when the shard's owner has let its lease lapse (or when stopped)."""
        while not self._stop.wait(self._lease_s / 4):
            epoch, owner, renewed = self._store.shard_lease(self.shard)
            silent = time.time() - renewed
            if silent > self._lease_s:
                log.warning("shard %d: its owner %s (epoch %d) has been silent for %.1fs; taking it back", self.shard, owner, epoch, silent)
                return

    def _handle(self, batch: list[wire.Publish]) -> Future | None:
        if self._filter_foreign:
            shard_of_topic, me = self._plan.shard_of_topic, self.shard
            batch = [m for m in batch if shard_of_topic(m.topic) in (None, me)]
        # Decoded here, committed with its checkpoint on the shard's committing thread meanwhile.
        return self._committer.handle(batch)  # a Publish is indexed as (topic, payload)

    def _idle(self) -> None:
        # A superseded owner lets go of the session here (after a read from the socket, at most every
        # LEASE_CHECK_S: one indexed SELECT, on the store all the shards share), usually before the new
        # owner has even connected; otherwise each would reconnect and take the session back from the
        # other until the old one's next commit is refused. The subscriber reconnects no sooner than
        # LEASE_CHECK_S after losing the session, so it checks again before reading on.
        now = time.time()
        if now >= self._next_lease_check:
            epoch, owner, _ = self._store.shard_lease(self.shard)
            if epoch != self.epoch:
                raise Fenced(self.shard, self.epoch, epoch, owner)
            self._next_lease_check = now + LEASE_CHECK_S
        if now >= self._next_tick:
            self._store.renew_shard(self.shard, self.epoch, now)
            # The tick's alerts commit the state as it is now: only once every prepared batch is committed,
            # or that checkpoint would hold rule state from batches not stored yet (lost on a crash).
            self._committer.drain()
            self.pipeline.tick(now)
            self._next_tick = now + self._tick_s


class ShardedIngest:
    """One replica: a ShardWorker per owned shard that has something to consume."""

    def __init__(
        self,
        plant: Plant,
        store: SqliteStore,
        broker_url: str,
        shards: int,
        owned: list[int],
        client_prefix: str,
        owner: str,
        make_pipeline: PipelineFactory,
        dead_letter_unknown: bool,
        lease_s: float = DEFAULT_LEASE_S,
    ):
        self.plan = shard_plan(plant, shards)
        #: The shards with something to consume (the others have no session at all).
        self.consumable = [k for k in range(shards) if self.plan.subscriptions(k, dead_letter_unknown)]
        self._owner, self._lease_s = owner, lease_s

        def worker(k: int) -> ShardWorker:
            return ShardWorker(k, self.plan, plant, store, broker_url, client_prefix, owner, make_pipeline, dead_letter_unknown, lease_s)

        self._worker = worker
        self.workers = [worker(k) for k in owned if k in self.consumable]

    def start(self, connect_timeout: float | None = 10.0) -> None:
        """Start every shard; wait until each is subscribed (None: do not wait, /readyz says when)."""
        raise_gc_threshold()
        for w in self.workers:
            w.start()
        if connect_timeout is None:
            return
        deadline = time.monotonic() + connect_timeout
        for w in self.workers:
            if not w.subscriber.connected_once.wait(max(0.0, deadline - time.monotonic())) and w.fenced is None:
                self.stop()
                raise TimeoutError(f"shard {w.shard} could not subscribe at the broker within {connect_timeout:g}s")

    @property
    def alive(self) -> bool:
        """False once a shard failed (one fenced off by a newer owner waits in standby, alive)."""
        return all(w.alive for w in self.workers)

    @property
    def ready(self) -> bool:
        return self.alive and all(w.subscriber.connected for w in self.workers if w.fenced is None)

    @property
    def error(self) -> BaseException | None:
        return next((w.error for w in self.workers if w.error is not None), None)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every shard after its batch in hand is stored and acknowledged."""
        for w in self.workers:
            w.request_stop()
        for w in self.workers:
            w.stop(timeout)

    def close_windows(self) -> None:
        for p in self._pipelines():
            p.close_windows()

    def _pipelines(self) -> list[Pipeline]:
        return [w.pipeline for w in self.workers if w.pipeline is not None and w.fenced is None]

    # The view NodeStatusReporter reads: the nodes of the shards this replica consumes.

    @property
    def silence(self) -> dict[str, float]:
        return {n: s for p in self._pipelines() for n, s in p.silence.items()}

    @property
    def last_seen(self) -> dict[str, float]:
        return {n: t for p in self._pipelines() for n, t in p.last_seen.items()}

    @property
    def readings_by_node(self) -> Counter[str]:
        return Counter({n: c for p in self._pipelines() for n, c in p.readings_by_node.items()})

    def online(self, now: float) -> dict[str, bool]:
        return {n: o for p in self._pipelines() for n, o in p.online(now).items()}

    def presence(self, now: float) -> dict[str, Presence]:
        return {n: s for p in self._pipelines() for n, s in p.presence(now).items()}

    def quality(self, now: float) -> dict[str, Figures]:
        return {n: f for p in self._pipelines() for n, f in p.quality(now).items()}
