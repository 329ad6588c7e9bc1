"""What the plant's console receiver announces from a store: the notifier run over it once."""

from __future__ import annotations

import io
import time
from pathlib import Path

from plantwatch.alerts.notifier import Notifier
from plantwatch.alerts.receivers.console import Console
from plantwatch.plant.load import Plant
from plantwatch.store.alert_state import AlertState


def announce(plant: Plant, db: str | Path, now: float | None = None) -> str:
    """The console lines a notifier writes for the store's alert events not yet announced (in `db`'s state)."""
    out = io.StringIO()
    state = AlertState(db, replay=True)
    at = time.time() if now is None else now
    notifier = Notifier(plant, state, {"console": Console("console", out)}, clock=lambda: at)  # one clock, steps and stop alike
    try:
        notifier.step(at)
        notifier.stop(drain_s=10.0)
    finally:
        state.close()
    return out.getvalue()
