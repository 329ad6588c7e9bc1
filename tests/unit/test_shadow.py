"""Shadow comparison (pure): alarm rates and disagreement on the same rows, and the stated promotion rule."""

from __future__ import annotations

import numpy as np

from plantwatch.inference.shadow import MIN_ROWS, ShadowWindow, compare

RNG = np.random.default_rng(3)


def test_a_shadow_alarming_like_the_serving_model_is_promotable():
    serving = (RNG.random(2000) < 0.05).astype(np.int8)
    shadow = serving.copy()
    shadow[:20] = 1 - shadow[:20]  # 1 % of rows flipped
    report = compare(serving, shadow)
    assert (report["status"], report["reason"]) == ("True", "Promotable")
    assert report["disagreement"] == 0.01
    assert report["servingAlarmRate"] == round(float(serving.mean()), 4)


def test_a_shadow_alarming_more_is_not_promotable_and_says_by_how_much():
    serving = np.zeros(1000, dtype=np.int8)
    shadow = (np.arange(1000) % 10 == 0).astype(np.int8)
    report = compare(serving, shadow)
    assert (report["status"], report["reason"], report["shadowAlarmRate"]) == ("False", "MoreAlarms", 0.1)
    assert "shadow alarms on 10.0 %, serving on 0.0 %" in report["message"]


def test_a_shadow_that_alarms_as_often_on_other_rows_disagrees():
    serving = (np.arange(1000) % 10 == 0).astype(np.int8)
    shadow = (np.arange(1000) % 10 == 5).astype(np.int8)
    report = compare(serving, shadow)
    assert (report["status"], report["reason"], report["disagreement"]) == ("False", "Disagrees", 0.2)


def test_too_few_rows_are_not_judged_and_the_window_keeps_the_last_rows():
    window = ShadowWindow(window_rows=1000)
    window.observe(np.zeros(MIN_ROWS - 1), np.ones(MIN_ROWS - 1))
    assert window.report()["reason"] == "NotEnoughRows"
    window.observe(np.zeros(1000), np.zeros(1000))  # the disagreeing rows roll out
    report = window.report()
    assert (report["rows"], report["disagreement"], report["status"]) == (1000, 0.0, "True")
