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

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.report(time.time())
            except Exception:
                self._log.exception("could not report %s", self._thread.name)
