"""What the gateway reports on its alerts (pure): each AlertRule's firingCount and lastFired from the
store's alert events, and the Event on the SensorNode for each firing and resolve."""

from __future__ import annotations

import random

from plantwatch.ingest.alert_status import CURRENT_ROWS, AlertLedger, AlertRow, alert_event, event_name
from plantwatch.readings import AlertEvent
from plantwatch.store.sqlite import SqliteStore

T = 1767254400.0  # 2026-01-01T08:00:00Z


def row(id_: int, rule: str, node: str, state: str, ts: float, sensor: str = "temperature", severity: str = "warning") -> AlertRow:
    return AlertRow(id_, f"{rule}/{node}/{sensor}", rule, node, sensor, state, severity, ts, f"{node} {sensor} {state}")


HISTORY = [
    row(1, "overtemp", "press-1", "firing", T),
    row(2, "overtemp", "press-2", "firing", T + 5),
    row(3, "overtemp", "press-1", "firing", T + 10, severity="critical"),  # a level change: still one alert
    row(4, "overtemp", "press-2", "resolved", T + 20),
    row(5, "silent", "press-3", "firing", T + 30, sensor="*"),
    row(6, "silent", "press-3", "resolved", T + 40, sensor="*"),
]


def test_firing_count_is_fingerprints_whose_latest_event_fires_and_last_fired_the_latest_firing():
    ledger = AlertLedger()
    ledger.fold(HISTORY)
    assert ledger.statuses(["overtemp", "silent", "quiet"]) == {
        "overtemp": {"firingCount": 1, "lastFired": "2026-01-01T08:00:10Z"},
        "silent": {"firingCount": 0, "lastFired": "2026-01-01T08:00:30Z"},  # resolved: it did fire, then
        "quiet": {"firingCount": 0},  # a rule that never fired shows 0 and no time
    }


def test_folding_is_order_free_and_idempotent():
    """The reporter folds the current rows at start, then the new rows, some of them twice."""
    expected = AlertLedger()
    expected.fold(HISTORY)
    shuffled = HISTORY * 2
    random.Random(7).shuffle(shuffled)
    ledger = AlertLedger()
    ledger.fold(shuffled)
    assert ledger.statuses(["overtemp", "silent"]) == expected.statuses(["overtemp", "silent"])


def test_the_current_rows_of_a_real_store_give_the_status_of_its_whole_history(tmp_path):
    store = SqliteStore(tmp_path / "plant.db")
    try:
        # written out of time order, as a redelivered batch may be
        events = [AlertEvent(r.fingerprint, r.rule, r.node, r.sensor, r.state, r.severity, 80.0, r.ts, r.summary) for r in HISTORY]
        store.write(alerts=events[3:])
        store.write(alerts=events[:3])
        rows = [AlertRow(*r) for r in store.query(CURRENT_ROWS)]
        whole = [
            AlertRow(*r) for r in store.query("SELECT id, fingerprint, rule, node, sensor, state, severity, ts, summary FROM alert_events")
        ]
    finally:
        store.close()
    assert len(rows) < len(whole)
    current, everything = AlertLedger(), AlertLedger()
    current.fold(rows)
    everything.fold(whole)
    assert current.statuses(["overtemp", "silent"]) == everything.statuses(["overtemp", "silent"])
    assert current.statuses(["overtemp"])["overtemp"] == {"firingCount": 1, "lastFired": "2026-01-01T08:00:10Z"}


def test_an_alert_firing_and_resolving_is_a_warning_then_a_normal_event_on_its_node():
    firing = alert_event(HISTORY[0], "plant-a", "uid-1")
    assert firing["involvedObject"] == {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "SensorNode",
        "name": "press-1",
        "namespace": "plant-a",
        "uid": "uid-1",
    }
    assert (firing["type"], firing["reason"], firing["message"]) == ("Warning", "AlertFiring", "press-1 temperature firing")
    assert firing["firstTimestamp"] == firing["lastTimestamp"] == "2026-01-01T08:00:00Z"  # the alert's time, not the posting's
    resolved = alert_event(HISTORY[3], "plant-a", None)
    assert (resolved["type"], resolved["reason"]) == ("Normal", "AlertResolved")
    assert "uid" not in resolved["involvedObject"]  # a node already gone: still listed by name
    assert alert_event(row(7, "overtemp", "press-1", "pending", T), "plant-a", None) is None


def test_an_events_name_is_its_rows_so_a_replay_is_refused_not_posted_twice():
    assert event_name(HISTORY[0]) == event_name(HISTORY[0]._replace(id=99, summary="other words"))
    names = {event_name(r) for r in HISTORY}
    assert len(names) == len(HISTORY) and all(n.startswith(r.node + ".") for n, r in zip(map(event_name, HISTORY), HISTORY, strict=True))
    assert len(event_name(row(1, "r", "n" * 253, "firing", T))) <= 253
