"""Conflicting readings: a second value for a (node, sensor, timestamp) that already has one.

The store is keyed by (node, sensor, ts), so an exact re-delivery is a silent no-op — that
is what makes at-least-once delivery safe. A reading with the same key and another value
is different: the store would keep the first and drop it unseen, which is what happens
when a node stamps whole seconds and sends faster than 1 Hz. Such a reading is a
conflict: the gateway refuses it (reason `conflict`), dead-letters its message, counts it
in `plantwatch_reading_conflicts_total` and logs it once per series per interval.

Pure: `SeriesGuard` remembers the newest (timestamp, value) of each series it has seen,
which catches a conflict before anything is stored (the common case: two messages in a
row with one timestamp). A conflict with an older reading (a late one, or one stored
before a restart) is found by the store after its commit (`SqliteStore.conflicting`).
"""

from __future__ import annotations

from plantwatch.readings import Reading

#: Seconds between two log lines about conflicts of one series (the metric counts every one).
LOG_INTERVAL_S = 60.0


def describe(reading: Reading, stored: float) -> str:
    """The dead letter's detail: which series and timestamp, both values, and what to do."""
    return (
        f"{reading.node}/{reading.sensor} at ts {reading.ts!r} already has the value {stored!r}, "
        f"not {reading.value!r}: the first value is kept; a node that sends faster than its "
        "timestamps' resolution must stamp sub-second times (e.g. milliseconds)"
    )


class SeriesGuard:
    """The newest (ts, value) of every series seen; tells conflicts from re-deliveries.

    Keys are (node, sensor) of accepted readings, so they are bounded by the plant's
    SensorNodes and their sensors: the guard holds one entry per series of the plant.
    """

    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def check(self, readings: list[Reading]) -> tuple[list[Reading], list[tuple[Reading, float]]]:
        """(the readings to keep, [(conflicting reading, the value already there)]).

        A reading newer than its series' newest becomes the newest; one with the newest's
        timestamp and value is a re-delivery (kept: the store ignores it); one with its
        timestamp and another value is a conflict; an older one is kept (the store checks it).
        Returns the input list itself when nothing conflicts, so the hot path allocates nothing.
        """
        latest = self._latest
        conflicts: list[tuple[Reading, float]] | None = None
        for r in readings:
            key = (r.node, r.sensor)
            seen = latest.get(key)
            if seen is None or r.ts > seen[0]:
                latest[key] = (r.ts, r.value)
            elif r.ts == seen[0] and r.value != seen[1]:
                if conflicts is None:
                    conflicts = []
                conflicts.append((r, seen[1]))
        if conflicts is None:
            return readings, []
        refused = {id(r) for r, _ in conflicts}
        return [r for r in readings if id(r) not in refused], conflicts
