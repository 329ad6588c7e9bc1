"""The rolling-window features a detector is trained and served on: causal, named, robust to gaps, spikes and stuck sensors."""

from __future__ import annotations

import numpy as np
import pytest

from plantwatch.features import CLIP, FeatureSpec, feature_names, fill_missing, fit_scaler, window_features


def noisy(rows: int = 300, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10 + rng.normal(0, 1, (rows, channels))


def test_features_are_causal():
    values = noisy()
    changed = values.copy()
    changed[200:] += 50
    np.testing.assert_array_equal(window_features(values)[:200], window_features(changed)[:200])


def test_feature_columns_follow_names():
    spec = FeatureSpec(kinds=("level", "change", "noise", "missing"))
    assert window_features(noisy(), spec).shape == (300, 12)
    assert feature_names(["a", "b"], spec)[:4] == ["a:level", "a:change", "a:noise", "a:missing"]
    with pytest.raises(ValueError):
        FeatureSpec(kinds=("speed",))


def test_stuck_sensor_collapses_noise_and_spike_does_not_move_level():
    values = noisy(200, 1)
    values[150:, 0] = values[150, 0]
    values[100, 0] = 1e3
    features = window_features(values)  # level, noise, missing
    assert features[199, 1] < features[140, 1] - 5  # log-noise of a flat line is far below the real one
    assert abs(features[100, 0] - 10) < 2  # a rolling median rides over one spike


def test_missing_readings_are_filled_and_counted():
    values = noisy(100, 2)
    values[50:60, 1] = np.nan
    assert not np.isnan(fill_missing(values)).any()
    features = window_features(values)
    assert features[59, 5] == 1.0 and features[40, 5] == 0.0
    assert fill_missing(np.array([[np.nan], [2.0], [np.nan]]))[:, 0].tolist() == [2.0, 2.0, 2.0]


def test_scaler_is_robust_and_floored():
    train = np.column_stack([np.r_[np.zeros(99), 1e6], np.full(100, 5.0)])
    scaler = fit_scaler(train)
    assert scaler.center.tolist() == [0.0, 5.0]
    assert scaler.scale[1] == pytest.approx(5e-3)  # a constant column gets the 0.1 % floor, not 0
    assert scaler.transform(np.array([[1e9, 5.0]]))[0].tolist() == [CLIP, 0.0]


def test_a_quantised_channel_is_scaled_by_its_steps():
    # 60 % of the training rows on one step: the MAD is 0, and the floor would make every step +-CLIP.
    train = np.r_[np.zeros(60), np.full(20, 0.5), np.full(20, -0.5)][:, None]
    scaler = fit_scaler(train)
    one_step, four_steps = scaler.transform(np.array([[0.5], [2.0]]))[:, 0]
    assert one_step == pytest.approx(0.5 / (1.2533 * 0.2))
    assert four_steps == pytest.approx(4 * one_step) and four_steps < CLIP  # a drift by steps is seen, not clipped
