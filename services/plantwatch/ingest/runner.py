"""Runs a Pipeline behind an MQTT subscription on two threads: one prepares batches, the other commits and acknowledges them (Committer)."""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from concurrent.futures import Future

from plantwatch import metrics
from plantwatch.ingest.pipeline import Pipeline, PreparedBatch
from plantwatch.mqtt import wire
from plantwatch.mqtt.subscriber import BatchSubscriber

log = logging.getLogger(__name__)

#: The cyclic garbage collector's first-generation threshold while a gateway runs (process-wide,
#: only ever raised). A batch keeps about six container objects per message alive until it is
#: stored (readings, MQTT packets), none in a cycle, so at CPython's default of 700 the collector
#: runs every hundred messages for nothing: about a tenth of the decoding time (bench stage costs).
GC_THRESHOLD = 50_000


class Committer:
    """Commits a Pipeline's batches on a thread of its own, so that the next batch is decoded meanwhile.

    `handle` runs on the receiving thread: it prepares the batch there (decode, validate,
    rules) and hands it to the committing thread, which commits it to the store (`commit`),
    routes its alerts (`finish`) and then completes the batch's Future: the subscriber
    acknowledges it only then. So decoding overlaps the store's transaction (SQLite and
    PostgreSQL wait without the interpreter lock), and a message is still acknowledged only
    after its batch is committed. Batches are committed in the order prepared.
    """

    #: Prepared batches that may wait for the committing thread: beyond, receiving waits.
    COMMIT_QUEUE = 2
    #: A batch smaller than this, with nothing in flight, is stored on the receiving thread:
    #: at a steady rate batches are a few messages, and handing each to the other thread
    #: would only add thread wake-ups to every alert's latency. Backlogs and bursts come in
    #: batches of thousands, and those overlap decoding with the commit.
    INLINE_BELOW = 64

    def __init__(self, pipeline: Pipeline, name: str = "pipeline-commit"):
        self.pipeline = pipeline
        self._commits: queue.Queue[tuple[PreparedBatch, Future] | None] = queue.Queue(self.COMMIT_QUEUE)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        #: Batches handed to the committer whose Future is not yet completed (their PUBACKs not
        #: yet sent). The pipeline's in_flight drops when a batch is finished, just before
        #: that: an inline batch must wait for both, or its PUBACKs could overtake.
        self._queued = 0
        self._settled = threading.Condition()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Commit what was handed over (or fail it, after a failure), then end the thread."""
        self._commits.put(None)
        self._thread.join()

    def drain(self) -> None:
        """Wait until every batch handed over is committed and acknowledged (or failed)."""
        with self._settled:
            self._settled.wait_for(lambda: not self._queued)

    def handle(self, batch: list[wire.Publish]) -> Future | None:
        """A received batch: stored at once (None), or a Future completed once it is (BatchSubscriber.run)."""
        metrics.INFLIGHT.inc(len(batch))
        if len(batch) < self.INLINE_BELOW and not self._queued and not self.pipeline.in_flight:
            try:
                self.pipeline.process(batch, time.time())
            finally:
                metrics.INFLIGHT.dec(len(batch))
            return None  # stored: the subscriber acknowledges it now
        try:
            prepared = self.pipeline.prepare(batch, time.time())
        except BaseException:
            metrics.INFLIGHT.dec(len(batch))  # never handed to the committer, so it never finishes
            raise
        stored: Future = Future()
        with self._settled:
            self._queued += 1
        self._commits.put((prepared, stored))
        return stored

    def _loop(self) -> None:
        """Commit and finish batches in order; after a failure, fail the rest (the broker keeps them)."""
        failure: BaseException | None = None
        while (item := self._commits.get()) is not None:
            prepared, stored = item
            if failure is None:
                try:
                    self.pipeline.commit(prepared)
                    self.pipeline.finish(prepared)
                except BaseException as exc:  # handed to the receiving thread, which stops with it
                    failure = exc
            else:
                self.pipeline.abandon(prepared)  # never committed: the broker keeps it
            metrics.INFLIGHT.dec(prepared.messages)
            if failure is None:
                stored.set_result(prepared.stored)  # its PUBACKs go out now, from this thread
            else:
                stored.set_exception(failure)
            with self._settled:  # only now: set_result has sent its PUBACKs (its callbacks)
                self._queued -= 1
                self._settled.notify_all()


class IngestService:
    """Runs a Pipeline behind a subscription to the plant's topics, on two threads.

    One thread receives, decodes, validates and runs the rules; the other commits each
    batch and then acknowledges it (Committer).
    """

    def __init__(self, pipeline: Pipeline, broker_url: str, client_id: str | None = None, tick_s: float = 0.5):
        self.pipeline = pipeline
        self.subscriber = BatchSubscriber(broker_url, pipeline.subscriptions, client_id)
        self._tick_s = tick_s
        self._next_tick = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._committer = Committer(pipeline)
        self.error: BaseException | None = None

    def start(self, connect_timeout: float | None = 10.0) -> None:
        """Start receiving; wait until subscribed (None: do not wait, /readyz says when)."""
        raise_gc_threshold()
        self._thread.start()
        if connect_timeout is not None and not self.subscriber.connected_once.wait(connect_timeout):
            self.stop()
            raise TimeoutError(f"could not subscribe at the broker within {connect_timeout:g}s")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ready(self) -> bool:
        return self.alive and self.subscriber.connected

    def _run(self) -> None:
        self._committer.start()
        try:
            self.subscriber.run(self._committer.handle, self._stop, self._idle)
        except BaseException as exc:  # recorded for /healthz and the exit code; the thread must not die silently
            log.exception("pipeline stopped")
            self.error = exc
        finally:
            self._committer.close()

    def _idle(self) -> None:
        now = time.time()
        if now >= self._next_tick:
            self.pipeline.tick(now)
            self._next_tick = now + self._tick_s

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand is stored and acknowledged; the broker keeps the rest."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def raise_gc_threshold() -> None:
    """Raise the cyclic collector's first-generation threshold to GC_THRESHOLD (never lower it)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < GC_THRESHOLD:
        gc.set_threshold(GC_THRESHOLD, gen1, gen2)
