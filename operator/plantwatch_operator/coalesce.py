"""One pending render per namespace, and a bound on writes per second.

A plant applied at once is a thousand create events. Rendering the namespace for each one, under one
lock, queues a thousand full renders where one at the end says everything; `Coalescer` keeps at most
one render pending per namespace (marks while it waits are merged, marks while it runs queue exactly
one more), started once the namespace has been quiet for `quiet` seconds or, in a steady stream of
changes, `longest` seconds after the first mark. `Pace` spaces writes to at most `rate` per second,
so a new plant's thousand statuses reach the API server as a bounded stream.
"""

from __future__ import annotations

import contextvars
import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from plantwatch_operator.talk import failure

log = logging.getLogger(__name__)


class Coalescer:
    """Runs `work(key)` on one worker thread, at most once per burst of `mark(key)` calls per key."""

    def __init__(
        self,
        work: Callable[[str], None],
        quiet: float = 0.2,
        longest: float = 1.0,
        retry: float = 5.0,
        on_pending: Callable[[int], None] | None = None,
        admit: Callable[[str], float | None] | None = None,
    ) -> None:
        self._work, self._quiet, self._longest, self._retry = work, quiet, longest, retry
        #: Asked before each `work(key)`: None to go on, else the seconds after which to ask again (ownership.Claims).
        self._admit = admit or (lambda _: None)
        self._on_pending = on_pending or (lambda _: None)
        self._cond = threading.Condition()
        self._first: dict[str, float] = {}  # key → when its pending burst began
        self._last: dict[str, float] = {}  # key → its latest mark
        self._context: dict[str, contextvars.Context] = {}  # key → the latest marker's (kopf's settings, its Event queue)
        self._running: str | None = None
        self._failed: dict[str, str] = {}  # key → its last failure as said, until it renders again
        self._thread: threading.Thread | None = None

    def mark(self, key: str, delay: float = 0.0) -> None:
        """`key` needs work: merged with any already pending; `delay` holds it back at least that long."""
        now = time.monotonic()
        context = contextvars.copy_context()
        with self._cond:
            self._context[key] = context
            self._first.setdefault(key, now + delay)
            self._last[key] = max(now, self._last.get(key, now)) + delay
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="plant-renders", daemon=True)
                self._thread.start()
            self._on_pending(self.pending())
            self._cond.notify()

    def pending(self) -> int:
        """Keys waiting or being worked on."""
        return len(self._first) + (self._running is not None and self._running not in self._first)

    def _due(self, key: str) -> float:
        return min(self._last[key] + self._quiet, self._first[key] + self._longest)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    ready = [(self._due(k), k) for k in self._first]
                    heapq.heapify(ready)
                    wait = ready[0][0] - time.monotonic() if ready else None
                    if wait is not None and wait <= 0:
                        key = ready[0][1]
                        del self._first[key], self._last[key]
                        self._running = key
                        break
                    self._cond.wait(wait)
            try:
                refused_for = self._context[key].run(self._admit, key)
                if refused_for is not None:
                    self._context[key].run(self.mark, key, refused_for)
                else:
                    self._context[key].run(self._work, key)
                    if self._failed.pop(key, None) is not None:
                        log.info("%s: rendered again after the failure above", key, extra={"namespace": key})
            except Exception as exc:  # noqa: BLE001  (the worker must outlive one namespace's failure)
                self._say_failure(key, exc)
                self._context[key].run(self.mark, key, self._retry)
            finally:
                with self._cond:
                    self._running = None
                    self._on_pending(self.pending())

    def _say_failure(self, key: str, exc: Exception) -> None:
        """Once per key and failure, not at every retry: a Role missing one verb must not flood the log."""
        line, refused = failure(key, exc, self._retry)
        if self._failed.get(key) == line:
            log.debug(line, exc_info=exc)
            return
        self._failed[key] = line
        if refused:
            log.warning(line, extra={"namespace": key})
            log.debug("the refused request", exc_info=exc)
        else:
            log.exception(line, extra={"namespace": key})


class Pace:
    """At most `rate` calls of `wait()` return per second (a token bucket of `burst`)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst = rate, burst if burst is not None else rate
        self._clock, self._sleep = clock, sleep
        self._tokens, self._at = self.burst, clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1
            behind = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if behind:
            self._sleep(behind)


def plant_event_marks(seen: dict[str, tuple[object, ...]], type_: str | None, meta: Mapping[str, Any]) -> bool:
    """Whether a watch event on a plant object changes what a render reads of it: the object appeared (a
    listing after a restart too), went, or changed its generation (its spec), labels or deletion. Status
    writes change none of these. `seen` remembers each object by uid; an object gone is forgotten."""
    uid = meta["uid"]
    if type_ == "DELETED":
        seen.pop(uid, None)
        return True
    essence = (meta.get("generation"), tuple(sorted((meta.get("labels") or {}).items())), bool(meta.get("deletionTimestamp")))
    if seen.get(uid) == essence:
        return False
    seen[uid] = essence
    return True
