"""Tumbling-window summaries of a series: count, min, max, mean, p95 (pure).

Windows are aligned to the epoch (a 60 s window starts on the minute), by event time.
Summaries are computed from the stored, de-duplicated readings and upserted by
(node, sensor, width, start), so a re-delivered message or a late reading re-computes
its window instead of counting twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    node: str
    sensor: str
    start: float
    width: float
    count: int
    min: float
    max: float
    mean: float
    p95: float


def window_start(ts: float, width: float) -> float:
    return math.floor(ts / width) * width


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (q in 0..100)."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(node: str, sensor: str, start: float, width: float, values: list[float]) -> Summary | None:
    if not values:
        return None
    ordered = sorted(values)
    return Summary(
        node, sensor, start, width, len(ordered), ordered[0], ordered[-1], math.fsum(ordered) / len(ordered), percentile(ordered, 95)
    )
