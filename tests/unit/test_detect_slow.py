"""The slow single-channel kind: its simulator, event-level figures, and the default deciding from the data."""

import numpy as np

from plantwatch.detect.simulate import SLOW_CADENCE_S, SLOW_FAILURES, SLOW_ROWS_PER_DAY, simulate_slow


def test_slow_simulator_is_seeded_and_labels_its_failure_periods():
    a, b = simulate_slow(7), simulate_slow(7)
    assert np.array_equal(a.values, b.values) and a.faults == b.faults
    assert not np.array_equal(a.values, simulate_slow(8).values)
    assert a.channels == ("temperature",) and a.cadence_s == SLOW_CADENCE_S
    assert a.values.shape == (75 * SLOW_ROWS_PER_DAY, 1)
    assert not a.anomaly[: 21 * SLOW_ROWS_PER_DAY].any()  # the training period is failure-free
    assert a.faults and {kind for kind, _, _ in a.faults} <= set(SLOW_FAILURES)
    labelled = np.zeros_like(a.anomaly)
    for _, start, end in a.faults:
        labelled[start:end] = 1
    assert np.array_equal(labelled, a.anomaly)
    # A daily cycle: readings a day apart agree far better than readings half a day apart.
    x = a.values[: 21 * SLOW_ROWS_PER_DAY, 0]
    day, half = SLOW_ROWS_PER_DAY, SLOW_ROWS_PER_DAY // 2
    assert np.median(np.abs(x[day:] - x[:-day])) < 0.5 * np.median(np.abs(x[half:] - x[:-half]))


def test_events_count_caught_periods_and_false_episodes_per_month():
    from plantwatch.detect.evaluate import events, pooled_events

    labels = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    alarms = np.array([0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1])
    day = 86_400.0
    e = events(labels, alarms, np.arange(16) * day * 15 / 16)  # 16 rows spanning 15 days
    # Caught: the first period (its alarm running past the repair is not a false episode); missed: the second.
    assert (e.periods, e.caught, e.false_episodes) == (2, 1, 3)
    assert e.seconds == 15 * day and e.false_episodes_per_month == 6.0
    both = pooled_events([e, events(np.zeros(4), np.zeros(4), np.arange(4) * day * 3.75)])
    assert both.periods == 2 and both.false_episodes_per_month == 3.0  # 3 episodes in 30 days


def test_the_default_decides_from_cadence_channels_and_cycle():
    from plantwatch.detect.recipes import decide
    from plantwatch.detect.simulate import simulate

    slow = simulate_slow(5)
    rows = 21 * SLOW_ROWS_PER_DAY
    seconds = np.arange(rows) * SLOW_CADENCE_S
    seasonal = decide(slow.values[:rows], seconds)
    assert seasonal.name == "seasonal" and "seasonal" in seasonal.features.kinds
    assert seasonal.features.period == SLOW_ROWS_PER_DAY and seasonal.features.baseline == 7 * SLOW_ROWS_PER_DAY
    assert "daily cycle" in seasonal.decision and "300 s" in seasonal.decision
    # The same channel without its cycle (a week's noise and steps): slow, no seasonal baseline.
    flat = np.random.default_rng(0).normal(size=(rows, 1)).cumsum(axis=0) * 0.01
    assert decide(flat, seconds).name == "slow" and "no daily cycle" in decide(flat, seconds).decision
    multi = simulate(0)
    assert decide(multi.values[:400], np.arange(400.0)).name == "relations"
    assert decide(slow.values[:rows], None).name == "relations"  # no stamps: rows taken as seconds apart


def test_the_decided_default_catches_slow_failures_on_a_tuning_seed():
    """One tuning recording end to end (numpy reference): every failure period caught, few normal rows alarmed.

    (False-alarm *episodes* are still above the issue's one a month: see the bench figures in detect/README.md.)
    """
    from plantwatch.alarms import alarm_rule
    from plantwatch.detect.evaluate import confusion, events
    from plantwatch.detect.recipes import decide, fit_recipe
    from plantwatch.detect.simulate import recording_seed
    from plantwatch.features import window_features

    r = simulate_slow(recording_seed(0, 2))
    rows = 21 * SLOW_ROWS_PER_DAY
    t = np.arange(len(r.values)) * SLOW_CADENCE_S
    recipe = decide(r.values[:rows], t[:rows])
    fitted = fit_recipe(recipe, r.values[:rows])
    raw = fitted.reference_scores(window_features(r.values, recipe.features))
    _, alarm = alarm_rule(raw, fitted.threshold, recipe.span, recipe.cap, recipe.on_count, recipe.off_count, recipe.off_ratio)
    e = events(r.anomaly[rows:], alarm[rows:], t[rows:])
    assert e.periods == 3 and e.caught == 3
    assert confusion(r.anomaly[rows:], alarm[rows:]).false_alarm_rate < 0.05
