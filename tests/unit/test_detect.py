"""Pure parts of the detector: features, scaling, alarms, threshold choice, pooled figures, CSV reading,
and the default recipe's detection quality on simulated recordings it was not tuned on."""

from __future__ import annotations

import numpy as np
import pytest

from plantwatch.alarms import alarm_rule, choose_threshold, ewma, hysteresis, smooth
from plantwatch.detect.data import detect_delimiter, labels_of, parse_time, pivot, read_table
from plantwatch.detect.evaluate import Counts, confusion, meets_target, pooled
from plantwatch.detect.experiment import run_in_memory
from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe
from plantwatch.detect.simulate import _lag, recording_seed, simulate
from plantwatch.features import window_features


def test_ewma_and_hysteresis():
    assert ewma(np.array([0.0, 10.0]), span=3).tolist() == [0.0, 5.0]
    score = np.array([0, 5, 0, 5, 5, 5, 1, 5, 0, 0, 0], dtype=float)
    assert hysteresis(score, 2, on_count=2, off_count=2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert hysteresis(score, 2).tolist() == (score > 2).astype(int).tolist()


def test_capped_smoothing_lets_go_soon_after_a_large_fault():
    raw = np.r_[np.zeros(20), np.full(100, 50.0), np.zeros(40)]  # a fault scoring 50x the threshold of 1
    rows_high = lambda smoothed: int((smoothed[120:] > 0.8).sum())  # noqa: E731 - rows still alarmed after the fault
    assert rows_high(smooth(raw, 1.0, span=8, cap=2.0)) <= 3
    assert rows_high(smooth(raw, 1.0, span=8)) >= 15
    np.testing.assert_array_equal(smooth(raw, 1.0, span=8, cap=2.0)[:20], 0.0)


def test_release_ends_the_alarm_while_the_features_drain_and_rearms_when_the_fault_returns():
    # A fault scoring 10x the threshold of 1, then 15 rows of draining window features, then normal.
    drain = np.linspace(10.0, 1.5, 15)
    raw = np.r_[np.zeros(20), np.full(60, 10.0), drain, np.zeros(20), np.full(30, 10.0), np.zeros(10)]
    rule = dict(threshold=1.0, span=3, cap=2.0, off_count=2, off_ratio=0.8)
    _, plain = alarm_rule(raw, **rule)
    _, fast = alarm_rule(raw, **rule, release=0.5, release_span=60)
    assert plain[21:80].all() and fast[21:80].all()  # the fault itself is alarmed either way (one row of EWMA)
    assert plain[80:96].all()  # without: the whole drain is alarmed, and a row after it
    # With: off once the score's short average is below half its long one, part-way into the drain,
    # and it stays off while the drain is still above the threshold and after.
    off = 80 + int(np.argmin(fast[80:]))
    assert off < 95 and not fast[off:115].any()
    assert fast[116:145].all()  # the fault coming back is alarmed again


def test_release_keeps_the_alarm_through_a_fault_with_a_noisy_score():
    """A fault's score can swing by a factor of 3 from row to row (a cavitating pump); that is no drain."""
    raw = np.r_[np.zeros(80), np.tile([10.0, 3.0, 6.0, 2.5], 25), np.zeros(20)]
    _, alarm = alarm_rule(raw, 1.0, span=3, cap=2.0, off_count=2, off_ratio=0.8, release=0.5, release_span=60)
    assert alarm[81:180].all()


def test_threshold_stretches_the_tail_above_the_median():
    scores = np.arange(101, dtype=float)
    assert choose_threshold(scores, 0.9, 1.0) == pytest.approx(90)
    assert choose_threshold(scores, 0.9, 2.0) == pytest.approx(50 + 2 * 40)
    assert choose_threshold(scores + 100, 0.9, 2.0) == pytest.approx(230)  # offset-invariant
    with pytest.raises(ValueError):
        choose_threshold(np.array([np.nan]), 0.9, 1.0)


def test_pooled_figures():
    counts = confusion(np.array([1, 1, 1, 0, 0, 0, 0]), np.array([1, 1, 0, 1, 0, 0, 0]))
    assert counts == Counts(tp=2, fp=1, fn=1, tn=3)
    assert counts.false_alarm_rate == 0.25 and counts.missed_alarm_rate == pytest.approx(1 / 3)
    assert counts.f1 == pytest.approx(4 / 6)
    total = pooled([counts, Counts(tp=0, fp=0, fn=0, tn=4)])
    assert total.false_alarm_rate == pytest.approx(1 / 8)
    assert not meets_target(total) and meets_target(Counts(tp=10, tn=10))


def test_csv_reading_detects_delimiter_and_sets_labels_aside(tmp_path):
    assert detect_delimiter("datetime;a;b\n") == ";" and detect_delimiter("a,b") == ","
    path = tmp_path / "r.csv"
    path.write_text("datetime;temp;note;flow;anomaly;changepoint\n2024-01-01 00:00:00;1.5;ok;;0;0\n2024-01-01 00:00:01;1.6;ok;3;1;1\n")
    table = read_table(path, time_column="datetime")
    assert table.channels == ("temp", "flow")
    assert np.isnan(table.values[0, 1]) and table.timestamps[1] == "2024-01-01 00:00:01"
    assert labels_of(table, "anomaly").tolist() == [0, 1]
    assert read_table(path, exclude=("flow",)).channels == ("temp",)
    assert read_table(path, labels=("Flow", "absent")).channels == ("temp",)  # a custom label column, set aside
    with pytest.raises(ValueError, match="no time column"):
        read_table(path, time_column="time")


def test_stored_readings_pivot_to_one_row_per_second():
    readings = [
        ("temp", 100.2, 20.0),
        ("flow", 100.7, 3.0),
        ("temp", 101.1, 21.0),
        ("temp", 101.9, 23.0),
        ("flow", 103.0, 4.0),
        ("noise", 102.0, 9.0),
    ]
    table = pivot(readings, exclude=("noise",))
    assert table.channels == ("flow", "temp")
    assert table.timestamps == ["1970-01-01T00:01:40Z", "1970-01-01T00:01:41Z", "1970-01-01T00:01:42Z", "1970-01-01T00:01:43Z"]
    np.testing.assert_array_equal(table.values, [[3.0, 20.0], [np.nan, 22.0], [np.nan, np.nan], [4.0, np.nan]])
    assert parse_time("2024-03-01T08:00:00Z") == parse_time("2024-03-01T08:00:00") == parse_time("1709280000")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


@pytest.mark.parametrize("variant", ["skid", "rig", "harsh"])
def test_simulator_is_seeded_and_honest(variant):
    a, b = simulate(3, variant=variant), simulate(3, variant=variant)
    np.testing.assert_array_equal(a.values, b.values)
    assert 5 <= len(a.channels) <= 10
    assert a.anomaly[:400].sum() == 0 and a.anomaly.sum() > 0
    assert all(end - start >= 30 for _, start, end in a.faults)  # sustained episodes, not spikes
    with pytest.raises(ValueError, match="accepted: skid, rig, harsh"):
        simulate(3, variant="mine")


def leak_recording(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A pump at two speeds in training, a third afterwards; a leak (flow and pressure 8 % down at the same
    speed and current) keeps every channel inside its training range: only the relationship breaks."""
    rng = np.random.default_rng(seed)
    speed = _lag(np.r_[np.full(200, 0.7), np.full(200, 0.9), np.full(350, 0.8), np.full(250, 0.75)], tau=10.0)
    leak = np.zeros(1000)
    leak[600:750] = 0.08
    channels = [1480 * speed, 3 + 9 * speed**3, (1.5 + 4 * speed**2) * (1 - leak), 120 * speed * (1 - leak), np.full(1000, 40.0)]
    noise = rng.normal(0, 1, (1000, 5)) * [3, 0.08, 0.03, 1.0, 0.1]
    return np.column_stack(channels) + noise, (leak > 0).astype(np.int8)


def test_default_recipe_finds_a_broken_relationship_between_channels():
    recordings = [leak_recording(seed) for seed in range(3)]
    default = run_in_memory(recordings, RECIPES[DEFAULT_RECIPE]).counts
    assert default.missed_alarm_rate < 0.1 and default.false_alarm_rate < 0.05  # new speeds are not faults
    assert run_in_memory(recordings, RECIPES["envelope"]).counts.missed_alarm_rate > 0.9  # limits per channel: blind


def test_default_recipe_on_held_out_simulated_recordings():
    """Seed 50 was never used for tuning (README: 0-4 were). The issue's bar is F1 >= 0.80, FAR <= 13.5 %,
    MAR <= 28 %; on these 24 recordings the default reaches F1 0.784, FAR 8.2 %, MAR 25.7 % (pinned with a
    small margin: a regression guard, not the target; without the release and with floor 2.5 it was
    0.764, 8.9 %, 28.0 %), the `envelope` recipe 0.661, 14.6 %, 37.3 %."""
    recordings = [
        (r.values, r.anomaly) for variant in ("skid", "rig") for r in (simulate(recording_seed(50, i), 400, variant) for i in range(12))
    ]
    default = run_in_memory(recordings, RECIPES[DEFAULT_RECIPE]).counts
    previous = run_in_memory(recordings, RECIPES["envelope"]).counts
    assert default.false_alarm_rate <= 0.10 and default.missed_alarm_rate <= 0.27
    assert default.f1 >= 0.775 and default.f1 >= previous.f1 + 0.08


def test_default_recipe_trains_when_channels_never_moved_in_training():
    """A set-point or a quantised sensor can be constant for all 400 training rows; a later move is an alarm."""
    rng = np.random.default_rng(1)
    values = np.column_stack([np.full(700, 50.0), np.full(700, 5.0), 10 + rng.normal(0, 1, 700)])
    values[550:, 0] = 55.0
    fitted = fit_recipe(RECIPES[DEFAULT_RECIPE], values[:400])
    assert fitted.to_onnx()
    scores = fitted.reference_scores(window_features(values, fitted.recipe.features))
    assert (scores[420:550] > fitted.threshold).mean() < 0.05 and (scores[560:] > fitted.threshold).all()
