"""`detector retrain`'s pure parts, and the gateway's readings route answering a real HTTP request over a real store file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from plantwatch.alerts.api import AlertsApi
from plantwatch.alerts.readings_api import readings_query
from plantwatch.detect.recipes import RECIPES, decide
from plantwatch.detect.retrain import held_out_rows, recipe_of, rows_of, window_seconds
from plantwatch.health import HealthServer
from plantwatch.readings import Reading
from plantwatch.store import readings as stored
from plantwatch.store.alert_state import AlertState
from plantwatch.store.sqlite import SqliteStore


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43_200), ("7d", 604_800), ("1d12h", 129_600), ("90s", 90)])
def test_windows_are_durations(text, seconds):
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7w", "1.5h", "-1d", "0m", "h", "7d x"])
def test_a_bad_window_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="30m, 12h, 7d"):
        window_seconds(text)


def test_the_newest_share_is_held_out_at_least_one_row():
    assert held_out_rows(100, 0.2) == 20 and held_out_rows(3, 0.2) == 1 and held_out_rows(101, 0.2) == 21


def test_rows_are_one_per_time_stamp_in_card_order():
    stamps, values = rows_of([("b", 2.0, 20.0), ("a", 1.0, 1.0), ("b", 1.0, 10.0), ("other", 3.0, 9.0)], ("b", "a"))
    assert stamps.tolist() == [1.0, 2.0, 3.0]
    assert np.array_equal(values, [[10.0, 1.0], [20.0, np.nan], [np.nan, np.nan]], equal_nan=True)


def test_the_recipe_comes_back_from_the_card_decisions_included():
    days = np.sin(np.arange(288 * 4) * 2 * np.pi / 288)[:, None]
    seasonal = decide(days, np.arange(len(days)) * 300.0)
    for recipe in (RECIPES["relations"], seasonal):
        card = {"recipe": json.loads(json.dumps(recipe.to_json()))}
        assert recipe_of(card) == recipe


@pytest.fixture
def gateway(tmp_path):
    db = tmp_path / "plant.db"
    store = SqliteStore(db)
    store.write([Reading("press", s, "x", float(i), 1000.0 + i, "") for s in ("a", "b") for i in range(12_000)])
    store.close()
    state = AlertState(db)
    server = HealthServer(0, lambda: True, lambda: True, routes={"/api/v1/": AlertsApi(state, None, open_reads=True)})
    server.start()
    yield f"http://127.0.0.1:{server.port}/api/v1/readings", db
    server.stop()
    state.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("", "node is required"),
        ("node=", "node is required"),
        ("node=press&since=yesterday", "since='yesterday': expected epoch seconds"),
        ("node=press&until=nan", "until='nan': expected epoch seconds"),
        ("node=press&since=5&until=5", "until (5) must be after since (5)"),
        ("node=press&from=5", "unknown parameters ['from']; accepted: node, since, until, sensor"),
        ("node=press&node=other", "node given 2 times"),
        ("node=press&sensor=", "sensor= is empty"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(gateway, query, says):
    url, _ = gateway
    status, body = _get(f"{url}?{query}")
    assert status == 400 and says in json.loads(body)["error"]


def test_readings_stream_in_pages_as_csv_and_the_newest_is_served(gateway):
    url, db = gateway
    status, body = _get(f"{url}?node=press&since=1000&until=12000&sensor=b")
    lines = body.decode().splitlines()
    assert status == 200 and lines[0] == "sensor,ts,value" and len(lines) == 1 + 11_000  # more than two store pages
    assert lines[1] == "b,1000.0,0.0" and lines[-1] == "b,11999.0,10999.0"
    assert len(_get(f"{url}?node=press")[1].decode().splitlines()) == 1 + 24_000
    assert _get(f"{url}?node=nobody")[1] == b"sensor,ts,value\n"
    assert json.loads(_get(f"{url}/newest?node=press&sensor=a")[1]) == {"node": "press", "sensors": ["a"], "newest": 12_999.0}
    assert json.loads(_get(f"{url}/newest?node=nobody")[1])["newest"] is None
    assert sum(len(p) for p in stored.pages(db, "press", ("a",), 1000, 1003)) == 3


def test_the_route_parses_repeated_sensors():
    q = readings_query({"node": ["press"], "sensor": ["a", "b"], "since": ["1.5"]})
    assert (q.node, q.sensors, q.since) == ("press", ("a", "b"), 1.5)
