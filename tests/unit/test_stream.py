"""StreamScorer: readings of a node become rows, windows, one model call per batch, and anomaly_score readings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from plantwatch.inference.stream import SCORE_TYPE, Aggregations, CardFeatures, ScoringUnavailable, Smoothing, StreamScorer
from plantwatch.readings import Reading

SENSORS = ("temperature", "vibration")


def readings(node: str, ts: float, temperature: float, vibration: float) -> list[Reading]:
    return [Reading(node, "temperature", "temperature", temperature, ts), Reading(node, "vibration", "vibration", vibration, ts)]


def test_aggregations_are_sensor_major_over_the_window():
    rows = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 13.0]])
    vec = Aggregations(3, ("last", "mean", "min", "max", "slope")).vectors(rows, 1)[0]
    np.testing.assert_allclose(vec, [3, 2, 1, 3, 1, 13, 11, 10, 13, 1.5])
    np.testing.assert_allclose(Aggregations(2, ("std",)).vectors(rows, 2), [[0.5, 0.0], [0.5, 1.5]])
    with pytest.raises(ValueError, match="accepted: last, mean"):
        Aggregations(3, ("median",))


def test_scores_come_back_as_readings_of_the_node_once_the_window_is_full():
    calls = []

    def run(vectors):  # the model: mean of the window's last temperatures (a real function of its input)
        calls.append(len(vectors))
        return vectors[:, 0]

    scorer = StreamScorer("press-wear", ["a", "b"], SENSORS, Aggregations(3, ("last",)), run, step=2)
    out = []
    for t in range(6):
        batch = readings("a", 100 + t, 40 + t, 1.0) + readings("b", 100 + t, 50 + t, 1.0) + readings("c", 100 + t, 0, 0)
        out.append(scorer.score(batch))
    assert out[0] == out[1] == []  # warm-up: fewer rows than the window
    assert [(r.node, r.sensor, r.type, r.value, r.ts) for r in out[2]] == [
        ("a", "press-wear", SCORE_TYPE, 42.0, 102),
        ("b", "press-wear", SCORE_TYPE, 52.0, 102),
    ]
    assert out[3] == [] and [r.value for r in out[4]] == [44.0, 54.0]  # step 2: every other row
    assert calls == [2, 2]  # both nodes' rows in one model call per batch; node c is not selected


def test_a_sensor_missing_from_a_message_keeps_its_last_value_and_scores_are_not_rescored():
    scorer = StreamScorer("d", ["a"], SENSORS, Aggregations(1, ("last",)), lambda v: v[:, 1])
    assert [r.value for r in scorer.score(readings("a", 1, 40, 2.0))] == [2.0]
    only_temperature = [Reading("a", "temperature", "temperature", 41, 2)]
    assert [r.value for r in scorer.score(only_temperature)] == [2.0]
    assert scorer.score([Reading("a", "d", SCORE_TYPE, 9.0, 3)]) == []


def test_an_unreachable_model_is_not_called_again_for_the_back_off_and_its_rows_are_counted_skipped():
    from plantwatch import metrics

    calls = []
    down = [True]

    def run(vectors):  # a model behind a service: every call while it is down costs the pipeline a timeout
        calls.append(len(vectors))
        if down[0]:
            raise ScoringUnavailable("connection refused")
        return vectors[:, 0]

    counter = metrics.SCORES_SKIPPED.labels("backoff-test")
    before = counter._value.get()
    scorer = StreamScorer("backoff-test", ["a", "b"], SENSORS, Aggregations(1, ("last",)), run, backoff_s=0.3)
    for t in range(5):  # the first batch finds the model down; the next four are skipped without a call
        assert scorer.score(readings("a", t, 40.0 + t, 1.0) + readings("b", t, 50.0, 1.0)) == []
    assert calls == [2]
    assert scorer.skipped == 10 and counter._value.get() - before == 10
    down[0] = False
    time.sleep(0.35)  # the back-off is over: asked again, and scored
    assert [r.value for r in scorer.score(readings("a", 5, 45.0, 1.0))] == [45.0]
    assert calls == [2, 1] and scorer.skipped == 10


def test_capped_ewma_smoothing_follows_the_card():
    smoothing = Smoothing(span=3, threshold=1.0, cap=2.0)  # alpha 0.5
    state = None
    values = []
    for raw in (1.0, 10.0, 0.0):
        state = smoothing.next(state, raw)
        values.append(state)
    assert values == [1.0, 1.5, 0.75]  # 10 is capped at 2 x threshold before smoothing


def test_streamed_scores_equal_the_detector_bundles_offline_scores(tmp_path):
    from plantwatch.detect import bundle
    from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe

    rng = np.random.default_rng(0)
    values = np.column_stack([45 + rng.normal(0, 0.3, 700), 1.5 + rng.normal(0, 0.05, 700)])
    values[600:, 0] += 5
    bundle.save(tmp_path, fit_recipe(RECIPES[DEFAULT_RECIPE], values[:400]), SENSORS, 400)
    scorer = bundle.load(tmp_path)
    card = scorer.card
    session = scorer.model.session
    stream = StreamScorer(
        "d", ["a"], SENSORS, CardFeatures(card), lambda v: session.run(["score"], {"features": v})[0], smoothing=Smoothing.of_card(card)
    )
    values[450:455, 1] = np.nan  # the vibration sensor drops out: its readings are simply not in the stream
    offline = scorer.score(values)
    streamed = []
    for t, (temperature, vibration) in enumerate(values):
        batch = readings("a", t, temperature, vibration)
        streamed.extend(stream.score([r for r in batch if not np.isnan(r.value)]))
    first = int(streamed[0].ts)
    assert first == CardFeatures(card).warmup - 1
    raw = np.array([r.value for r in streamed])
    # the same features from a bounded history, the same model; smoothing started at the first streamed row
    expected = bundle.Scorer(card, scorer.model).raw_scores(values)[first:]
    smoothed = [None]
    for x in expected:
        smoothed.append(Smoothing.of_card(card).next(smoothed[-1], float(x)))
    np.testing.assert_allclose(raw, smoothed[1:], rtol=1e-5, atol=1e-6)
    threshold = card["alarm"]["threshold"]
    assert raw[600 - first + 20 :].min() > threshold > raw[: 440 - first].max()
    assert raw[450 - first : 460 - first].max() > threshold  # the dropout itself is anomalous (the `missing` feature)
    assert offline.alarm[620:].all()
