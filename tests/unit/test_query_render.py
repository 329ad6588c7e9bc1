"""`plantwatch query`'s pure parts: times read, alert transitions named, sparklines and tables drawn; the default store's place."""

from __future__ import annotations

import os

import pytest

from plantwatch.local.paths import default_db, latest_db, plant_name, state_dir
from plantwatch.query.render import BARS, excerpt, number, parse_when, readings_table, sparkline, transition

NOW = 1767600000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("15m", NOW - 900),
        ("-15m", NOW - 900),
        ("30s", NOW - 30),
        ("2h", NOW - 7200),
        ("1.5d", NOW - 1.5 * 86400),
        ("1w", NOW - 7 * 86400),
        ("1767500000", 1767500000.0),
        ("1767500000.5", 1767500000.5),
        ("2026-01-05T07:00:00Z", NOW - 3600),
        ("2026-01-05T08:00:00+01:00", NOW - 3600),
        ("2026-01-05T07:00:00", NOW - 3600),
    ],
)
def test_times_are_read_as_documented(text, expected):
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15 minutes", "-15y", ""])
def test_a_time_that_is_none_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="is not a time; accepted: ISO 8601.*epoch seconds.*15m"):
        parse_when(text, NOW)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (("firing", "warning", None, None), "fired"),
        (("firing", "warning", "resolved", "critical"), "fired"),
        (("firing", "critical", "firing", "warning"), "escalated"),
        (("firing", "warning", "firing", "emergency"), "eased"),
        (("resolved", "critical", "firing", "critical"), "resolved"),
    ],
)
def test_alert_events_are_named_against_the_one_before(event, expected):
    assert transition(*event) == expected


def test_a_sparkline_spans_the_blocks_from_lowest_to_highest():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BARS
    assert sparkline([10.0, 20.0, 10.0]) == "▁█▁"


def test_a_gap_is_a_space_and_a_flat_series_sits_mid_height():
    assert sparkline([1.0, None, 3.0]) == "▁ █"
    assert sparkline([5.0, 5.0, None, 5.0]) == "▄▄ ▄"
    assert sparkline([None, None]) == ""


def test_numbers_and_payloads_read_on_one_line():
    assert number(21.700000001) == "21.7" and number(None) == "-" and number(1234567.0) == "1.23457e+06"
    assert excerpt(b'{"t":\n1}') == '{"t":\\n1}'
    assert excerpt(b"\xff\x00ok") == "\\xff\\x00ok"
    assert excerpt(b"x" * 100) == "x" * 39 + "…"


def test_a_table_aligns_its_columns():
    rows = [
        {"time": "2026-01-05T08:00:00Z", "node": "press-1", "sensor": "temperature", "value": 21.5, "unit": "celsius"},
        {"time": "2026-01-05T08:00:01Z", "node": "pump-22", "sensor": "current", "value": None, "unit": ""},
    ]
    lines = readings_table(rows).splitlines()
    assert [line.index(v) for line, v in zip(lines, ("NODE", "press-1", "pump-22"), strict=True)] == [22, 22, 22]
    assert lines[2].split() == ["2026-01-05T08:00:01Z", "pump-22", "current", "-", "-"]
    assert readings_table([]) == "no readings"


def test_the_default_store_lives_under_xdg_state_home_one_file_per_plant(tmp_path, monkeypatch):
    (tmp_path / "line-1").mkdir()
    (tmp_path / "bench.yaml").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_db([str(tmp_path / "line-1")]) == str(tmp_path / "state" / "plantwatch" / "line-1.db")
    assert default_db([str(tmp_path / "bench.yaml"), "more/"]) == str(tmp_path / "state" / "plantwatch" / "bench.db")
    assert plant_name("my plant!") == "my_plant_"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # the spec says to ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "plantwatch"


def test_the_latest_store_is_the_one_written_last_wal_included(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert latest_db() is None
    folder = tmp_path / "plantwatch"
    folder.mkdir()
    for name, written in (("a.db", 100), ("b.db", 200), ("a.db-wal", 300)):
        (folder / name).write_text("")
        os.utime(folder / name, (written, written))
    assert latest_db() == str(folder / "a.db")
