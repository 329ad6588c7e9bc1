"""The per-fault breakdown of the detection figures: which simulated faults the alarm misses."""

import numpy as np

from plantwatch.detect.evaluate import FaultFigures, by_fault, pooled_by_fault


def test_each_fault_kind_counts_its_episodes_caught_and_rows_alarmed_after_the_training_rows():
    alarm = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1])
    faults = (("leak", 0, 4), ("leak", 4, 8), ("stuck_sensor", 8, 11))
    figures = by_fault(faults, alarm, first=2)
    # The first leak's rows before row 2 are training rows: its alarm there counts for nothing.
    assert figures["leak"] == FaultFigures(episodes=2, caught=1, rows=6, alarmed=2)
    # The alarm at row 11 comes after the stuck sensor's repair: not caught.
    assert figures["stuck_sensor"] == FaultFigures(episodes=1, caught=0, rows=3, alarmed=0)
    assert figures["leak"].summary()["mar"] == round(4 / 6, 4) and figures["stuck_sensor"].summary()["mar"] == 1.0


def test_the_breakdown_pools_over_recordings_by_kind():
    one = by_fault((("leak", 0, 2),), np.array([1, 0, 0]))
    two = by_fault((("leak", 0, 1), ("drop", 1, 3)), np.array([0, 1, 1]))
    pooled = pooled_by_fault([one, two])
    assert list(pooled) == ["drop", "leak"]
    assert pooled["leak"] == FaultFigures(episodes=2, caught=1, rows=3, alarmed=1)
    assert pooled["drop"] == FaultFigures(episodes=1, caught=1, rows=2, alarmed=2)
