"""Micro-batching: concurrent requests to one model coalesced into one session call.

An ONNX Runtime call has a fixed cost (input checks, allocation, the call
itself) that dwarfs the per-row work of a small detector, so rows that arrive
together should share one call. A single worker thread takes the first waiting
request, then gathers more until the batch holds `max_batch` rows or
`max_wait_s` has passed since that first request, and runs them as one batch.
Requests that queue up while a batch runs are taken at once by the next one,
so under load batches fill without anyone waiting. The worker waits only for
requests already on their way (submitted, not yet queued). A caller that finds
nobody else waiting and no call running runs its rows itself, in its own
thread: a lone request pays neither a wait nor a hand-off between threads,
which on a loaded machine costs more than the model call.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np


class _Request:
    __slots__ = ("rows", "done", "result", "error")

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        # A held lock that the worker releases: the cheapest one-shot wake-up between threads
        # (an Event is a Condition in Python code, several times slower per hand-off).
        self.done = threading.Lock()
        self.done.acquire()
        self.result: list[np.ndarray] | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Runs `run(rows [n, ...]) -> outputs [n, ...]` over the rows of concurrent `submit` calls."""

    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], max_batch: int = 256, max_wait_s: float = 0.001):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._inflight = 0  # queued (or about to be) and not yet answered
        self._inline = False  # a caller is running its own rows (see the module doc)
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
        self._thread.start()
        #: Calls of `run` and rows through them: their ratio is the mean batch size.
        self.batches = 0
        self.rows = 0

    def submit(self, rows: np.ndarray) -> list[np.ndarray]:
        """The outputs for these rows; blocks until their batch has run, raises what `run` raised."""
        with self._count_lock:
            alone = self._inflight == 0 and not self._inline
            if alone:
                self._inline = True
            else:
                self._inflight += 1
        if alone:
            try:
                return self.run(rows)
            finally:
                self.batches += 1
                self.rows += len(rows)
                with self._count_lock:
                    self._inline = False
        request = _Request(rows)
        self._queue.put(request)
        request.done.acquire()
        if request.error is not None:
            raise request.error
        return request.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size = [first], len(first.rows)
            deadline = time.perf_counter() + self.max_wait_s
            stop = False
            while size < self.max_batch:
                try:
                    # Queued requests join at once; an empty queue is waited on only for requests on their way.
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.perf_counter()
                    if left <= 0 or self._inflight <= len(batch):
                        break
                    try:
                        nxt = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt.rows)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Request]) -> None:
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([r.rows for r in batch])
            outputs = self.run(rows)
            start = 0
            for r in batch:
                end = start + len(r.rows)
                r.result = [o[start:end] for o in outputs]
                start = end
        except Exception as exc:  # every waiter learns what went wrong with its batch
            for r in batch:
                r.error = exc
        self.batches += 1
        self.rows += sum(len(r.rows) for r in batch)
        with self._count_lock:
            self._inflight -= len(batch)
        for r in batch:
            r.done.release()
