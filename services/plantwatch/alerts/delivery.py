"""How hard a notification is tried: timeouts, retries with exponential backoff and jitter, a circuit breaker.

A receiver only delivers or raises DeliveryError (alerts/notification.py); `Delivery` wraps
one receiver with an AlertReceiver's `spec.delivery` and says what happened to a
notification, attempt by attempt, for the alert's history. The backoff schedule and the
breaker are pure (time is passed in), so they are tested without sleeping.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from plantwatch import metrics
from plantwatch.alerts.notification import DeliveryError, Notification, Receiver
from plantwatch.plant.model import duration_seconds
from plantwatch.plant.specs import AlertReceiverDelivery

log = logging.getLogger(__name__)

#: The window in which `breakerFailures` failures open the breaker (the CRD's "within a minute").
BREAKER_WINDOW_S = 60.0
#: Without an AlertReceiver (the built-in console): one try of 10 s; the breaker as the CRD's defaults.
DEFAULT_TRIES, DEFAULT_TIMEOUT_S, DEFAULT_BACKOFF_S = 1, 10.0, 0.5
DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_OPEN_FOR_S = 5, 30.0

SENT, FAILED, CIRCUIT_OPEN = "sent", "failed", "circuit_open"


def retry_delay(backoff_s: float, retry: int, jitter: float) -> float:
    """Seconds to wait before retry number `retry` (1 for the first): backoff doubled per retry, plus
    `jitter` (0..1) times half of it, so receivers that failed together do not retry together."""
    base = backoff_s * 2 ** (retry - 1)
    return base + base * 0.5 * jitter


class Breaker:
    """A circuit breaker: `failures` failures within `window_s` open it for `open_for_s`; then one trial
    (half-open) closes it on success or opens it again on failure. Time is passed in; thread-safe."""

    def __init__(self, failures: int, open_for_s: float, window_s: float = BREAKER_WINDOW_S):
        self._threshold = failures
        self._open_for = open_for_s
        self._window = window_s
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    def state(self, now: float) -> str:
        """`closed`, `open` or `half_open` (open for long enough: the next attempt is a trial)."""
        with self._lock:
            return self._state(now)

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if now - self._opened_at >= self._open_for else "open"

    def allow(self, now: float) -> bool:
        """Whether an attempt may be made now; in half-open, only the one trial until it is recorded."""
        with self._lock:
            state = self._state(now)
            if state == "closed":
                return True
            if state == "open" or self._trial:
                return False
            self._trial = True
            return True

    def open_until(self) -> float | None:
        """When an open breaker lets a trial through (None when closed)."""
        with self._lock:
            return None if self._opened_at is None else self._opened_at + self._open_for

    def record(self, now: float, ok: bool) -> None:
        with self._lock:
            if ok:
                self._failures.clear()
                self._opened_at, self._trial = None, False
                return
            if self._opened_at is not None:  # a failed trial: open again, for a full period
                self._opened_at, self._trial = now, False
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self._window:
                self._failures.popleft()
            if len(self._failures) >= self._threshold:
                self._failures.clear()
                self._opened_at = now


@dataclass(frozen=True)
class Attempt:
    """One try at a receiver, as the alert's history records it."""

    #: When it was made (epoch seconds).
    at: float
    #: sent, failed or circuit_open (not tried: the breaker was open).
    result: str
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a round of attempts came to."""

    delivered: bool
    #: sent, failed or circuit_open.
    result: str
    attempts: tuple[Attempt, ...]
    #: False when the last failure was one trying again cannot mend (the notifier gives the message up).
    retryable: bool = True


@dataclass(frozen=True)
class Policy:
    """An AlertReceiver's spec.delivery in seconds."""

    tries: int = DEFAULT_TRIES
    timeout_s: float = DEFAULT_TIMEOUT_S
    backoff_s: float = DEFAULT_BACKOFF_S
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_open_for_s: float = DEFAULT_BREAKER_OPEN_FOR_S

    @classmethod
    def of(cls, spec: AlertReceiverDelivery | None) -> Policy:
        if spec is None:
            return cls()
        return cls(
            spec.tries,
            duration_seconds(spec.timeout),
            duration_seconds(spec.backoff),
            spec.breaker_failures,
            duration_seconds(spec.breaker_open_for),
        )


class Delivery:
    """One receiver with its delivery policy and its circuit breaker."""

    def __init__(
        self,
        receiver: Receiver,
        spec: AlertReceiverDelivery | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ):
        self.receiver = receiver
        self.policy = Policy.of(spec)
        self.breaker = Breaker(self.policy.breaker_failures, self.policy.breaker_open_for_s)
        self._clock, self._sleep, self._rng, self._wall = clock, sleep, rng, wall

    def attempt(self, notification: Notification) -> Outcome:
        """Up to `tries` attempts, backing off between them; stops at a non-retryable error or an open breaker.

        Blocks for up to tries × timeout plus the backoffs: call it off any thread that must not wait.
        """
        name, attempts = self.receiver.name, []
        for retry in range(self.policy.tries):
            if not self.breaker.allow(self._clock()):
                if attempts:  # the breaker opened during this round: the round has failed
                    break
                metrics.NOTIFICATIONS.labels(name, CIRCUIT_OPEN).inc()
                why = f"circuit breaker open after {self.policy.breaker_failures} failures; next trial in {self._wait_left():.0f}s"
                return Outcome(False, CIRCUIT_OPEN, (Attempt(self._wall(), CIRCUIT_OPEN, why),))
            if retry:
                self._sleep(retry_delay(self.policy.backoff_s, retry, self._rng()))
            at = self._wall()
            error, retryable = self._send(notification)
            self.breaker.record(self._clock(), error is None)
            metrics.NOTIFICATIONS.labels(name, SENT if error is None else FAILED).inc()
            attempts.append(Attempt(at, SENT if error is None else FAILED, error))
            if error is None:
                return Outcome(True, SENT, tuple(attempts))
            if not retryable:
                return Outcome(False, FAILED, tuple(attempts), retryable=False)
        return Outcome(False, FAILED, tuple(attempts))

    def _wait_left(self) -> float:
        until = self.breaker.open_until()
        return max(0.0, (until or 0.0) - self._clock())

    def _send(self, notification: Notification) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (what went wrong, whether trying again may help)."""
        try:
            self.receiver.send(notification, self.policy.timeout_s)
        except DeliveryError as exc:
            return str(exc), exc.retryable
        except Exception as exc:
            # A receiver's bug must not take the other receivers down with it; it is not retried.
            log.exception("receiver %s (%s) failed unexpectedly", self.receiver.name, self.receiver.kind)
            return f"{self.receiver.kind} receiver {self.receiver.name!r}: {type(exc).__name__}: {exc}", False
        return None, True
