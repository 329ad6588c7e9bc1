"""The notifier over a real SQLite store: stored events in, each announced once, whatever the timing.

The receiver here is a real implementation of the Receiver protocol that keeps what it is
given (and can fail on demand): the point is what the notifier decides and records.
"""

from __future__ import annotations

import time

import yaml

from plantwatch.alerts.notification import DeliveryError, Notification
from plantwatch.alerts.notifier import LEASE_S, Notifier
from plantwatch.plant.load import plant_from_documents
from plantwatch.readings import AlertEvent
from plantwatch.store.alert_state import AlertState
from plantwatch.store.sqlite import SqliteStore

T0 = 1767254400.0
FP = "hot/press-1/temperature"
DOCS = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: press-1, labels: {line: l1}}
spec:
  hardware: esp32
  equipment: press-3
  location: hall-1/line-2
  payload: {format: esp32-json, topic: sensors/press-1}
  sensors: [{name: temperature, type: temperature, unit: celsius}]
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: hot}
spec:
  selector: {sensorType: temperature}
  condition: {type: Threshold, threshold: {warning: "70", critical: "80"}}
  repeatInterval: 10m
  receivers: [pager]
  annotations: {runbook: "https://runbooks.example/hot"}
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertReceiver
metadata: {name: pager}
spec:
  type: Webhook
  webhook: {urlSecretRef: {name: hooks, key: url}}
  grouping: {by: [], wait: 0s, interval: 0s}
  delivery: {tries: 1, timeout: 1s}
"""
PLANT = plant_from_documents([(str(i), d) for i, d in enumerate(yaml.safe_load_all(DOCS))])


class Pager:
    """Keeps every notification; raises DeliveryError while `down` is set."""

    name, kind = "pager", "Webhook"

    def __init__(self):
        self.got: list[Notification] = []
        self.down: DeliveryError | None = None

    def send(self, n: Notification, timeout: float) -> None:
        if self.down:
            raise self.down
        self.got.append(n)

    def close(self) -> None:
        pass

    def seen(self) -> list[tuple[str, str, str]]:
        return [(n.kind, a.status, a.severity) for n in self.got for a in n.alerts]


def event(state: str, ts: float, severity: str = "warning", value: float = 75.0) -> AlertEvent:
    return AlertEvent(FP, "hot", "press-1", "temperature", state, severity, value, ts, f"{state} {value}")


def setup(tmp_path, owner: str = "a"):
    db = tmp_path / "plant.db"
    store, state, pager = SqliteStore(db), AlertState(db), Pager()
    return store, state, pager, Notifier(PLANT, state, {"pager": pager}, owner=owner)


def settle(n: Notifier, now: float, steps: int = 3) -> None:
    """Step at `now` (the notifier's clock too: deliveries are timed by it) and wait for the deliveries the step started."""
    n.clock = lambda: now
    for _ in range(steps):
        n.step(now)
        deadline = time.monotonic() + 5
        while n._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)


def test_a_firing_then_its_resolve_each_reach_the_receiver_once_with_what_a_person_needs(tmp_path):
    store, state, pager, n = setup(tmp_path)
    store.write(alerts=[event("firing", T0)])
    settle(n, T0 + 1)
    store.write(alerts=[event("resolved", T0 + 30, value=60.0)])
    for t in range(2, 40):
        settle(n, T0 + 30 + t, steps=1)
    assert pager.seen() == [("firing", "firing", "warning"), ("resolved", "resolved", "warning")]
    first = pager.got[0].alerts[0]
    assert first.labels["equipment"] == "press-3" and first.labels["location"] == "hall-1/line-2" and first.labels["line"] == "l1"
    assert first.annotations == {"summary": "firing 75.0", "runbook": "https://runbooks.example/hot", "threshold": "70", "unit": "celsius"}
    assert pager.got[1].alerts[0].ends_at == T0 + 30
    assert state.notification_counts() == {"pager": {"sent": 2}}
    n.stop(drain_s=1)


def test_an_episode_that_fired_and_resolved_between_two_steps_is_announced_both_ways_once(tmp_path):
    store, state, pager, n = setup(tmp_path)
    store.write(alerts=[event("firing", T0), event("resolved", T0 + 5, value=60.0)])
    for t in range(10):
        settle(n, T0 + 10 + t, steps=1)
    assert pager.seen() == [("firing", "firing", "warning"), ("resolved", "resolved", "warning")]
    n.stop(drain_s=1)


def test_a_receiver_that_is_down_gets_the_message_when_it_is_back_and_only_once(tmp_path):
    store, state, pager, n = setup(tmp_path)
    pager.down = DeliveryError("503 from the webhook", retryable=True)
    store.write(alerts=[event("firing", T0)])
    settle(n, T0 + 1)
    assert pager.got == [] and state.notification_counts() == {"pager": {"pending": 1}}
    history = state.alert_history(FP)
    assert [h["what"] for h in history] == ["firing", "notification", "delivery"]
    assert history[-1]["status"] == "pending" and history[-1]["attempts"][0]["error"] == "503 from the webhook"
    pager.down = None
    settle(n, T0 + 60)  # past the retry delay (15 s), before the repeat (10 min)
    assert pager.seen() == [("firing", "firing", "warning")]
    assert state.notification_counts() == {"pager": {"sent": 1}}
    n.stop(drain_s=1)


def test_a_message_the_receiver_refuses_for_good_is_given_up_and_says_why(tmp_path):
    store, state, pager, n = setup(tmp_path)
    pager.down = DeliveryError("400: channel_not_found", retryable=False)
    store.write(alerts=[event("firing", T0)])
    settle(n, T0 + 1)
    settle(n, T0 + 60)  # a retry would be due by now: there is none
    assert state.notification_counts() == {"pager": {"failed": 1}}
    assert state.alert_history(FP)[-1]["attempts"][0]["error"] == "400: channel_not_found"
    n.stop(drain_s=1)


def test_one_notifier_acts_per_store_and_the_next_one_carries_on_without_resending(tmp_path):
    store, state, pager, a = setup(tmp_path, owner="replica-a")
    pager_b = Pager()
    b = Notifier(PLANT, AlertState(tmp_path / "plant.db"), {"pager": pager_b}, owner="replica-b")
    store.write(alerts=[event("firing", T0)])
    settle(a, T0 + 1)
    settle(b, T0 + 1)
    assert pager.seen() == [("firing", "firing", "warning")] and pager_b.got == [] and not b.active
    # replica-a dies without a word: replica-b waits out its lease, then takes over where it left off
    store.write(alerts=[event("firing", T0 + 2, "critical", 85.0)])
    settle(b, T0 + 2 + LEASE_S / 2)
    assert pager_b.got == []
    settle(b, T0 + 2 + LEASE_S + 1)
    assert b.active and pager_b.seen() == [("firing", "firing", "critical")]
    b.stop(drain_s=1)


def test_acknowledging_stops_repeats_and_the_history_says_who(tmp_path):
    store, state, pager, n = setup(tmp_path)
    store.write(alerts=[event("firing", T0)])
    settle(n, T0 + 1)
    settle(n, T0 + 601)
    assert [k for k, _, _ in pager.seen()] == ["firing", "repeat"]
    state.ack(FP, "ana", "on my way", T0 + 602)
    settle(n, T0 + 1300)
    settle(n, T0 + 2000)
    assert [k for k, _, _ in pager.seen()] == ["firing", "repeat"]
    assert state.alert(FP)["acked_by"] == "ana"
    assert any(h["what"] == "acknowledged" and h["by"] == "ana" and h["comment"] == "on my way" for h in state.alert_history(FP))
    n.stop(drain_s=1)


def test_forty_presses_overheating_at_once_reach_a_grouped_receiver_as_one_message(tmp_path):
    docs = [d for d in yaml.safe_load_all(DOCS) if d["kind"] != "SensorNode"]
    node = next(d for d in yaml.safe_load_all(DOCS) if d["kind"] == "SensorNode")
    for i in range(40):
        docs.append(
            {
                **node,
                "metadata": {"name": f"press-{i:02d}"},
                "spec": {**node["spec"], "payload": {"format": "esp32-json", "topic": f"s/{i}"}},
            }
        )
    receiver = next(d for d in docs if d["kind"] == "AlertReceiver")
    receiver["spec"]["grouping"] = {"by": ["rule"], "wait": "10s", "interval": "1m"}
    plant = plant_from_documents([(str(i), d) for i, d in enumerate(docs)])
    db = tmp_path / "plant.db"
    store, pager = SqliteStore(db), Pager()
    n = Notifier(plant, AlertState(db), {"pager": pager})
    for i in range(40):  # over four seconds
        fp = f"hot/press-{i:02d}/temperature"
        store.write(alerts=[AlertEvent(fp, "hot", f"press-{i:02d}", "temperature", "firing", "warning", 75.0, T0 + i / 10, "hot")])
        settle(n, T0 + i / 10, steps=1)
    assert pager.got == []  # the group waits 10 s for the rest
    settle(n, T0 + 10)
    assert len(pager.got) == 1 and len(pager.got[0].alerts) == 40 and pager.got[0].group_labels == {"rule": "hot"}
    settle(n, T0 + 60)
    assert len(pager.got) == 1
    n.stop(drain_s=1)
