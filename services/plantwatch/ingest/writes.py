"""Where a batch goes once it is prepared: the store and the sinks, and the one order it is written to them in.

`Store` (the embedded SQLite store, or a shard's view of it) and `Sink` (InfluxDB) are
what the pipeline needs of them; `BatchWriter` writes a batch, or the alerts a clock
tick fired, to both in the order that lets a failure be retried from the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from typing import Any, Protocol

from plantwatch.readings import AlertEvent, Reading
from plantwatch.store.sqlite import DeadLetter


class Store(Protocol):
    """The store a pipeline commits its batches to and reads its windows and conflicts back from."""

    #: Whether each write also commits the pipeline's rule state (a shard's checkpoint): once it
    #: has, no owner computes the batch's alerts again, so every sink must have the batch first.
    #: Such a store's `write` also takes `state=`: the state to commit (the batch's, from when it was prepared).
    commits_checkpoint: bool

    def write(self, readings: Iterable[Reading] = (), alerts: Iterable[AlertEvent] = (), dead_letters: Iterable[DeadLetter] = ()) -> int:
        """Write one batch in one transaction; how many readings were new."""
        ...

    def summarize(self, windows: Iterable[tuple[str, str, float, float]]) -> Any:
        """(Re)compute the summaries of (node, sensor, start, width) windows from the stored readings."""
        ...

    def conflicting(self, readings: list[Reading]) -> list[tuple[Reading, float]]:
        """The readings stored earlier under the same key with another value, each with that value."""
        ...

    def expire_dead_letters(self, before: float) -> int:
        """Delete a chunk of the dead letters received before `before`; how many."""
        ...

    def expire_series(self, table: str, before: float, after: tuple[str, str]) -> tuple[int, tuple[str, str] | None]:
        """Delete a chunk of `table`'s rows older than `before`, series by series after `after` (store/retention.py)."""
        ...


class SpoolDepth(Protocol):
    """What a sink holds that its server has not taken yet."""

    @property
    def batches(self) -> int: ...

    @property
    def bytes(self) -> int: ...


class Sink(Protocol):
    """A further store every batch goes to beside the embedded one; `write` raises if it cannot take one."""

    def write(
        self, readings: Iterable[Reading] = (), alerts: Iterable[AlertEvent] = (), dead_letters: Iterable[DeadLetter] = ()
    ) -> Any: ...

    def spool_depth(self) -> SpoolDepth: ...

    def flush(self) -> Any: ...

    def close(self) -> None: ...


class BatchWriter:
    """Writes each batch to the store and every sink, one batch at a time, in the order prepared.

    Alongside, unless the store commits a checkpoint: the sinks are written while SQLite
    commits, since both wait on I/O (a disk, a server) without the interpreter lock, so a
    batch costs the slower of the two, not their sum. Each sink still gets the batches one
    at a time, in order (`write` waits for them). A store that commits a checkpoint
    (ShardStore) is written only once every sink took the batch: a sink failing after the
    checkpoint would lose the batch's alerts, never computed again.
    """

    def __init__(self, store: Store, sinks: Sequence[Sink]):
        self.store = store
        self.sinks = sinks
        self._sinks_first = store.commits_checkpoint
        self._sink_writers = ThreadPoolExecutor(len(sinks), "pipeline-sink") if sinks else None

    def write(
        self,
        readings: Sequence[Reading] = (),
        alerts: Sequence[AlertEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        stored: Callable[[int], None] | None = None,
        state: bytes | None = None,
    ) -> None:
        """Write one batch; `stored` is told how many readings were new as soon as the store committed.

        `state` is the pipeline's state after the batch, for a store that commits it as its checkpoint
        (None: the state now). Raises what the store or a sink raised: the batch is not acknowledged.
        A sink that failed beside the store raises after `stored` was told (the store has the batch).
        """
        if self._sinks_first:
            for sink in self.sinks:
                sink.write(readings, alerts, dead_letters)  # raises: nothing is stored, nothing checkpointed
            count = self.store.write(readings, alerts, dead_letters, state=state)
            if stored is not None:
                stored(count)
            return
        # Each in the caller's context: what a sink logs carries the batch's correlation id (logs.correlated).
        sinks = [self._sink_writers.submit(copy_context().run, sink.write, readings, alerts, dead_letters) for sink in self.sinks]
        try:
            count = self.store.write(readings, alerts, dead_letters)
            if stored is not None:
                stored(count)
        finally:
            wait(sinks)  # a sink never runs ahead into the next batch, even when the store failed
        for written in sinks:
            written.result()  # raises what the sink raised
