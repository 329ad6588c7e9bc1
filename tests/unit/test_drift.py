"""Drift (pure): PSI of served rows against the card's training deciles, judged with the stated thresholds."""

from __future__ import annotations

import numpy as np

from plantwatch.inference.drift import DRIFTED, MIN_ROWS, MODERATE, DriftMonitor, bins, judge, profile, psi

RNG = np.random.default_rng(7)
TRAIN = RNG.normal(0, 1, (5000, 3))
TRAIN_SCORES = RNG.gamma(2.0, 1.0, 5000)
REFERENCE = profile(["temperature_mean", "temperature_noise", "vibration_mean"], TRAIN, TRAIN_SCORES)


def test_the_same_population_is_below_moderate_and_a_shifted_one_above_drifted():
    trained = bins(TRAIN[:, 0])
    assert len(trained["edges"]) == 9 and abs(sum(trained["shares"]) - 1) < 1e-9
    assert psi(trained, RNG.normal(0, 1, 2000)) < MODERATE
    assert psi(trained, RNG.normal(0.8, 1, 2000)) > DRIFTED
    assert psi(trained, RNG.normal(0, 2.5, 2000)) > DRIFTED  # a wider spread at the same mean is drift too


def test_a_constant_training_feature_has_one_edge_and_judges_a_change_as_drift():
    constant = bins(np.full(1000, 3.0))
    assert constant["edges"] == [3.0]
    assert psi(constant, np.full(1000, 3.0)) == 0.0
    assert psi(constant, np.full(1000, 2.0)) > DRIFTED


def test_too_few_rows_are_not_judged():
    report = judge(REFERENCE, RNG.normal(5, 1, (MIN_ROWS - 1, 3)), RNG.gamma(2.0, 1.0, MIN_ROWS - 1))
    assert (report["status"], report["reason"], report["drifted"]) == ("Unknown", "NotEnoughRows", [])


def test_a_shifted_input_is_named_and_a_shifted_score_says_so_first():
    served = RNG.normal(0, 1, (2000, 3))
    like = judge(REFERENCE, served, RNG.gamma(2.0, 1.0, 2000))
    assert (like["status"], like["reason"], like["drifted"]) == ("False", "LikeTraining", [])
    assert all(f["psi"] < MODERATE for f in like["features"]) and like["score"]["psi"] < MODERATE

    served[:, 2] += 1.5
    inputs = judge(REFERENCE, served, RNG.gamma(2.0, 1.0, 2000))
    assert (inputs["status"], inputs["reason"], inputs["drifted"]) == ("True", "InputsDrifted", ["vibration_mean"])
    assert "vibration_mean" in inputs["message"] and f"above {DRIFTED}" in inputs["message"]

    scores = judge(REFERENCE, served, RNG.gamma(2.0, 1.0, 2000) + 3)
    assert (scores["status"], scores["reason"]) == ("True", "ScoreDrifted")
    assert scores["drifted"] == ["vibration_mean"]


def test_rows_without_a_finite_value_give_no_psi_rather_than_a_number():
    served = RNG.normal(0, 1, (MIN_ROWS, 3))
    served[:, 1] = np.nan
    report = judge(REFERENCE, served, RNG.gamma(2.0, 1.0, MIN_ROWS))
    assert report["features"][1] == {"name": "temperature_noise"}
    assert report["status"] == "False"


def test_the_monitor_judges_only_the_last_window_of_served_rows():
    monitor = DriftMonitor(REFERENCE, 3, window_rows=1000)
    assert monitor.report()["status"] == "Unknown"
    monitor.observe(RNG.normal(4, 1, (900, 3)).astype(np.float32), RNG.gamma(2.0, 1.0, 900))
    assert monitor.report()["status"] == "True"
    for _ in range(7):  # requests of 150 rows: the shifted rows roll out of the window
        monitor.observe(RNG.normal(0, 1, (150, 3)).astype(np.float32), RNG.gamma(2.0, 1.0, 150))
    report = monitor.report()
    assert report["rows"] == 1000
    assert report["status"] == "False", report["message"]


def test_a_monitor_refuses_a_distribution_that_does_not_fit_the_model():
    try:
        DriftMonitor(REFERENCE, 4)
    except ValueError as exc:
        assert "3 features, the model takes 4" in str(exc)
    else:
        raise AssertionError("a 3-feature distribution was accepted for a 4-feature model")
