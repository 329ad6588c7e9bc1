"""Shadow scoring: a candidate model scores the rows the serving model scores, and how often each would alarm is compared.

A row "alarms" here when its raw score is above its own card's threshold: the service
sees rows of many nodes interleaved, without their order per node, so it cannot run
the cards' smoothing; the gateway's alarms (smoothed, held) are rarer than these. The
comparison is still like for like: both models judged the same way on the same rows.

Promotion rule (stated, applied by a person or a script, never by the service): once
at least MIN_ROWS rows were compared, a shadow whose alarm rate is at most the serving
model's plus PROMOTE_MARGIN and whose disagreement is below PROMOTE_DISAGREEMENT is
`Promotable`; promoting is a spec change (the shadow's source becomes spec.source).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

MIN_ROWS = 500
WINDOW_ROWS = 5000
PROMOTE_MARGIN = 0.01
PROMOTE_DISAGREEMENT = 0.05


def compare(serving: np.ndarray, shadow: np.ndarray) -> dict[str, Any]:
    """Alarm rates and disagreement of two models' alarms (0/1) on the same rows, and the verdict (pure).

    Returns {"rows", "servingAlarmRate", "shadowAlarmRate", "disagreement", "status", "reason", "message"}:
    status True/False/Unknown as a `ShadowPromotable` condition would show it.
    """
    rows = len(serving)
    if rows < MIN_ROWS:
        return {"rows": rows, "status": "Unknown", "reason": "NotEnoughRows", "message": f"{rows} rows compared, judged from {MIN_ROWS}"}
    serving_rate, shadow_rate = float(np.mean(serving)), float(np.mean(shadow))
    disagreement = float(np.mean(serving != shadow))
    report: dict[str, Any] = {
        "rows": rows,
        "servingAlarmRate": round(serving_rate, 4),
        "shadowAlarmRate": round(shadow_rate, 4),
        "disagreement": round(disagreement, 4),
    }
    basis = (
        f"last {rows} rows: shadow alarms on {100 * shadow_rate:.1f} %, serving on {100 * serving_rate:.1f} %, "
        f"they disagree on {100 * disagreement:.1f} % (promotable at most +{100 * PROMOTE_MARGIN:.0f} points "
        f"and under {100 * PROMOTE_DISAGREEMENT:.0f} % disagreement)"
    )
    if shadow_rate > serving_rate + PROMOTE_MARGIN:
        return {**report, "status": "False", "reason": "MoreAlarms", "message": basis}
    if disagreement >= PROMOTE_DISAGREEMENT:
        return {**report, "status": "False", "reason": "Disagrees", "message": basis}
    return {**report, "status": "True", "reason": "Promotable", "message": basis}


class ShadowWindow:
    """The last `window_rows` rows' alarms of the serving and the shadow model (thread-safe; filled on the serving path)."""

    def __init__(self, window_rows: int = WINDOW_ROWS):
        self._alarms = np.zeros((window_rows, 2), dtype=np.int8)
        self._next = 0
        self._rows = 0
        self._lock = threading.Lock()

    def observe(self, serving: np.ndarray, shadow: np.ndarray) -> None:
        size = len(self._alarms)
        pairs = np.column_stack([np.ravel(serving), np.ravel(shadow)])[-size:]
        with self._lock:
            at = (self._next + np.arange(len(pairs))) % size
            self._alarms[at] = pairs
            self._next = (self._next + len(pairs)) % size
            self._rows = min(size, self._rows + len(pairs))

    def report(self) -> dict[str, Any]:
        with self._lock:
            alarms = self._alarms[: self._rows].copy()
        return compare(alarms[:, 0], alarms[:, 1])
