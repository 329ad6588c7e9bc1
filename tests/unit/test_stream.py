"""StreamScorer: readings of a node become rows, windows, one model call per batch, and anomaly_score readings."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from plantwatch.alarms import AlarmRule, AlarmState
from plantwatch.inference.stream import SCORE_TYPE, Aggregations, CardFeatures, ScoringUnavailable, StreamScorer, served_value
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
    rule, state = AlarmRule(threshold=1.0, span=3, cap=2.0), AlarmState()  # alpha 0.5
    assert [rule.step(state, raw)[0] for raw in (1.0, 10.0, 0.0)] == [1.0, 1.5, 0.75]  # 10 is capped at 2 x threshold


def test_the_served_value_is_on_the_side_of_the_threshold_the_alarm_is():
    rule = AlarmRule(threshold=2.0, span=1)
    assert served_value(rule, 3.0, True) == 3.0 and served_value(rule, 1.0, False) == 1.0
    assert served_value(rule, 3.0, False) == 2.0  # held off above the threshold (on_count, a release): no rule fires
    assert served_value(rule, 1.5, True) > 2.0  # held on below it (off_count, off_ratio): a rule at 2.0 still fires


def _card_stream(scorer, nodes=("a",)) -> StreamScorer:
    session = scorer.model.session
    run = lambda v: session.run(["score"], {"features": v})[0]  # noqa: E731
    return StreamScorer("d", nodes, scorer.channels, CardFeatures(scorer.card), run, alarm=AlarmRule.of_card(scorer.card["alarm"]))


def _stream_rows(stream: StreamScorer, values: np.ndarray, first: int = 0, batch: int = 7) -> list[Reading]:
    """Rows `first`.. of `values` as readings of node a at ts = row, `batch` rows per call; a NaN is a reading not sent."""
    out = []
    for start in range(first, len(values), batch):
        rows = [
            Reading("a", channel, channel, float(v), float(t))
            for t in range(start, min(start + batch, len(values)))
            for channel, v in zip(stream.sensors, values[t])
            if not np.isnan(v)
        ]
        out.extend(stream.score(rows))
    return out


def test_detector_score_and_a_served_rule_at_the_cards_threshold_alarm_on_the_same_rows(tmp_path):
    from plantwatch.detect import bundle
    from plantwatch.detect.cli import main
    from plantwatch.detect.data import read_predictions, read_table
    from plantwatch.detect.simulate import write_dataset

    (recording,) = write_dataset(tmp_path / "data", 1, seed=0)
    assert main(["detector", "train", "--csv", str(recording), "--out", str(tmp_path / "m"), "--time-column", "datetime"]) == 0
    pred = tmp_path / "pred.csv"
    assert (
        main(
            ["detector", "score", "--model", str(tmp_path / "m"), "--csv", str(recording), "--out", str(pred), "--time-column", "datetime"]
        )
        == 0
    )
    _, cli_alarms = read_predictions(pred)

    scorer = bundle.load(tmp_path / "m")
    table = read_table(recording, "datetime", labels=("anomaly",))
    values = bundle.columns_in_card_order(table.channels, table.values, scorer.channels)
    served = _stream_rows(_card_stream(scorer), values)
    first = int(served[0].ts)
    assert first == CardFeatures(scorer.card).warmup - 1 and [r.ts for r in served] == list(range(first, len(values)))
    threshold = scorer.card["alarm"]["threshold"]
    rule_alarms = np.array([r.value > threshold for r in served], dtype=int)  # the AnomalyScore rule's condition
    assert cli_alarms[:first].sum() == 0 and 20 < cli_alarms.sum() < len(cli_alarms) / 2  # alarms to compare, not all or none
    np.testing.assert_array_equal(rule_alarms, cli_alarms[first:])
    # the served value is the CLI's smoothed score wherever the alarm does not hold it at the threshold
    smoothed = scorer.score(values).smoothed[first:]
    free = (rule_alarms == 1) == (smoothed > threshold)
    assert 0.9 < free.mean() < 1  # rows where hold or release overrule the smoothed score: a rule on it alone would differ
    np.testing.assert_allclose(np.array([r.value for r in served])[free], smoothed[free], rtol=1e-5, atol=1e-6)


def test_a_scorer_restored_from_a_checkpoint_mid_stream_scores_on_as_if_never_moved(tmp_path):
    from plantwatch.detect import bundle
    from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe

    rng = np.random.default_rng(1)
    values = np.column_stack([45 + rng.normal(0, 0.3, 700), 1.5 + rng.normal(0, 0.05, 700)])
    values[520:600, 0] += 5  # a fault that is on when the node moves
    values[500:505, 1] = np.nan  # and a dropout in the windows that move with it
    bundle.save(tmp_path, fit_recipe(RECIPES[DEFAULT_RECIPE], values[:400]), SENSORS, 400)
    scorer = bundle.load(tmp_path)
    whole = _card_stream(scorer)
    uninterrupted = _stream_rows(whole, values)
    before = _card_stream(scorer)
    _stream_rows(before, values[:540])
    text = orjson.dumps(before.snapshot())  # as the shard's checkpoint carries it
    assert len(text) < 20 * CardFeatures(scorer.card).history * len(SENSORS) + 1000  # bounded by the windows, not the stream
    moved = _card_stream(scorer)
    moved.restore(orjson.loads(text))
    after = _stream_rows(moved, values, first=540)
    expected = [r for r in uninterrupted if r.ts >= 540]
    assert [(r.ts, r.value) for r in after] == [(r.ts, r.value) for r in expected]
    threshold = scorer.card["alarm"]["threshold"]
    assert after[0].value > threshold  # the alarm moved on, and with no warm-up the first row after the move is scored
    fresh = _stream_rows(_card_stream(scorer), values, first=540)
    assert fresh[0].ts >= 540 + CardFeatures(scorer.card).warmup - 1  # what a node that moves without its windows loses


def test_a_sensor_dropped_for_longer_than_the_history_is_filled_from_its_last_reading_as_the_cli_does(tmp_path):
    from plantwatch.detect import bundle
    from plantwatch.detect.recipes import DEFAULT_RECIPE, RECIPES, fit_recipe

    rng = np.random.default_rng(2)
    values = np.column_stack([45 + rng.normal(0, 0.3, 900), 1.5 + rng.normal(0, 0.05, 900)])
    bundle.save(tmp_path, fit_recipe(RECIPES[DEFAULT_RECIPE], values[:400]), SENSORS, 400)
    scorer = bundle.load(tmp_path)
    history = CardFeatures(scorer.card).history
    values[450 : 450 + history + 40, 1] = np.nan  # the second sensor silent for longer than the stream keeps
    session = scorer.model.session
    stream = StreamScorer("d", ("a",), scorer.channels, CardFeatures(scorer.card), lambda v: session.run(["score"], {"features": v})[0])
    served = _stream_rows(stream, values)
    cli = scorer.raw_scores(values)  # the whole recording at once, as `detector score` reads it
    np.testing.assert_allclose([r.value for r in served], cli[[int(r.ts) for r in served]], rtol=1e-5, atol=1e-6)
    assert int(served[-1].ts) == len(values) - 1 and served[0].ts < 450
