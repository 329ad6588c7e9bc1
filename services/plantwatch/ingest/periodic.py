"""A report the gateway writes to Kubernetes every few seconds, on its own thread (node and alert status)."""

from __future__ import annotations

import logging
import threading
import time


class PeriodicReport:
    """Calls `report(now)` every `interval_s` until stopped; a failed round is logged and the next one retries
    (the API server may be briefly away)."""

    def __init__(self, name: str, interval_s: float, log: logging.Logger):
        self._interval_s = interval_s
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def report(self, now: float) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def pause(self, seconds: float) -> bool:
        """Wait within a round (pacing its writes); True when the reporter is being stopped."""
        return self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.report(time.time())
            except Exception:
                self._log.exception("could not report %s", self._thread.name)


class TokenBucket:
    """At most `rate` takes per second on average, `burst` at once (pure: the caller passes the clock)."""

    def __init__(self, rate: float, burst: float, now: float):
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket rate {rate:g}/s, burst {burst:g}; accepted: rate > 0, burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, now

    def wait(self, now: float) -> float:
        """Seconds until one take is allowed (0: now)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        # Within a rounding error of a whole token is one: else a refill that lands a hair short of it
        # asks for a wait too small to move the clock.
        return 0.0 if self._tokens >= 1 - 1e-9 else (1 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        self.wait(now)
        self._tokens -= 1
