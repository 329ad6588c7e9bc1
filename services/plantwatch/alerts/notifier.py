"""The notifier: from the alert events in the store to messages that reached people, exactly once.

The pipeline stores each rule event in the transaction of the batch that caused it and
goes on; it never waits for a receiver. The notifier follows those events from the store
(a cursor kept in the store), keeps the alert state there (store/alert_state.py), asks
the lifecycle what is due (alerts/lifecycle.py: grouping, silences, maintenance windows,
inhibition, acknowledgements, repeats, escalation) and delivers on one worker per
receiver, so a receiver that is down delays only its own messages.

Exactly once, and what a crash does:
- Deciding to notify and recording that decision are one transaction: the notification
  (with its idempotency key) and the "told" records that keep it from being decided again.
  A crash before that commit decides again from the same stored events; after it, the
  notification is in the log, pending.
- A pending notification is delivered, then marked sent. A crash between the two resends it
  after the restart with the same key: a webhook sees the same `Idempotency-Key`, an email
  the same Message-ID, Alertmanager the same alert (it de-duplicates by labels); Slack and
  MQTT have no such key, so they may see that one message twice. Nothing is lost.
- One notifier acts per store: it holds a lease in the store, renewed every step, so the
  sharded gateways sharing a store never notify twice; a crashed holder's successor waits
  for its lease to lapse (LEASE_S). A holder that stalls longer than its lease in the middle
  of a delivery could deliver that one message beside its successor: the same key again.
- A failed delivery round is tried again later (15 s, doubling to 5 min) for up to a day.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from plantwatch.alerts import lifecycle
from plantwatch.alerts.delivery import Delivery
from plantwatch.alerts.lifecycle import Alert, ReceiverRouting, RuleRouting
from plantwatch.alerts.notification import AlertView, Notification, Receiver
from plantwatch.contracts.times import parse_timestamp
from plantwatch.logs import LogLimiter
from plantwatch.plant.load import Plant
from plantwatch.plant.model import decimal_text, duration_seconds
from plantwatch.store.alert_state import EXPIRED, FAILED, PENDING, SENT, AlertState, Stored

log = logging.getLogger("plantwatch.alerts")

#: How long an undelivered notification is retried before it is given up (status `expired`).
MAX_AGE_S = 86400.0
#: Delay before the next round after a failed one: RETRY_FIRST_S, doubling, at most RETRY_MAX_S.
RETRY_FIRST_S, RETRY_MAX_S = 15.0, 300.0
#: The notifier lease: a notifier that has not renewed it (at every step, at least every `every_s`)
#: for this long is taken over. Owners are named per process, so two processes never share a lease.
LEASE_S = 10.0
#: Alerts' label sets kept built (one per rule, series and severity), emptied when full.
LABEL_CACHE = 100_000


def rule_routing(plant: Plant) -> dict[str, RuleRouting]:
    return {
        r.name: RuleRouting(
            tuple(r.spec.receivers),
            tuple((duration_seconds(t.after), tuple(t.receivers)) for t in r.spec.escalation or ()),
            duration_seconds(r.spec.repeat_interval),
        )
        for r in plant.rules
    }


def receiver_routing(plant: Plant) -> dict[str, ReceiverRouting]:
    """Per receiver: console prints every alert at once; Alertmanager groups by itself and wants re-posts."""
    out = {"console": ReceiverRouting(group_by=(), wait_s=0.0, interval_s=0.0)}
    for r in plant.receivers:
        spec = r.spec
        if spec.type == "Alertmanager":
            out[r.name] = ReceiverRouting(("rule",), 0.0, 0.0, resend_s=duration_seconds(spec.alertmanager.resend_interval))
        else:
            g = spec.grouping
            out[r.name] = ReceiverRouting(tuple(g.by), duration_seconds(g.wait), duration_seconds(g.interval))
    return out


class Notifier:
    """Runs the alert lifecycle over one store and delivers to the plant's receivers."""

    def __init__(
        self,
        plant: Plant,
        state: AlertState,
        receivers: Mapping[str, Receiver],
        owner: str | None = None,
        plant_name: str = "default",
        clock: Callable[[], float] = time.time,
        every_s: float = 1.0,
        deliveries: Mapping[str, Delivery] | None = None,
        deliver: bool = True,
    ):
        """`deliver=False` only records the notifications decided (a backtest counts them): none is sent."""
        self.plant = plant
        self.deliver = deliver
        self.state = state
        self.receivers = dict(receivers)
        self.owner = owner or f"notifier-{uuid.uuid4().hex[:12]}"
        self.plant_name = plant_name
        self.clock = clock
        self.every_s = every_s
        specs = {r.name: r.spec.delivery for r in plant.receivers}
        self.deliveries = dict(deliveries) if deliveries else {n: Delivery(rcv, specs.get(n)) for n, rcv in self.receivers.items()}
        self.rules = rule_routing(plant)
        self.routing = {n: r for n, r in receiver_routing(plant).items() if n in self.receivers}
        self._nodes = {n.name: n for n in plant.nodes}
        self._rule_specs = {r.name: r for r in plant.rules}
        self._windows = {
            n.name: [(parse_timestamp(w.start), parse_timestamp(w.end)) for w in n.spec.maintenance_windows] for n in plant.nodes
        }
        self._workers = {n: ThreadPoolExecutor(1, thread_name_prefix=f"notify-{n}") for n in self.receivers}
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = LogLimiter(60.0)
        self._label_cache: dict[tuple[str, str, str, str], dict[str, str]] = {}
        #: This run's counts: alert episodes that started firing, notifications by (receiver, result).
        self.fired = 0
        self.results: Counter[tuple[str, str]] = Counter()
        self.active = False

    # --- the loop ---

    def start(self, take_over: bool = False) -> None:
        """Run the loop. `take_over`: this process has fenced any other off the store (`up` claims its
        checkpoint first), so it takes the lease at once instead of waiting for a dead holder's to lapse."""
        if take_over:
            self.state.take_lease(self.owner, self.clock(), LEASE_S)
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New events are stored: step now rather than at the next tick (the pipeline calls this)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.step(self.clock())
            except Exception as exc:  # noqa: BLE001 (a bad step is logged and tried again: alerting must not stop)
                if self._errors.allow(type(exc).__name__, time.monotonic()):
                    log.error("notifier step failed (retrying every %.1fs): %r", self.every_s, exc, exc_info=exc)

    def stop(self, drain_s: float = 10.0) -> None:
        """Stop the loop after a last step; wait up to `drain_s` for deliveries under way and due."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join()
        deadline = time.monotonic() + drain_s
        try:
            self.step(self.clock())
            while time.monotonic() < deadline and (self._in_flight or self._due_now()):
                time.sleep(0.05)
                self._dispatch(self.clock())
        finally:
            for w in self._workers.values():
                w.shutdown(wait=True, cancel_futures=True)
            if self.active:
                self.state.release_lease(self.owner)
            for r in self.receivers.values():
                r.close()

    def _due_now(self) -> bool:
        return bool(self.active and self.state.due(self.clock(), limit=1))

    # --- one step: events → state → plan → log; then deliver what is due ---

    def step(self, now: float) -> int:
        """Apply new events, plan, record the notifications decided; start delivering. Returns how many were decided."""
        with self.state.tx() as db:
            self.active = self.state.hold_lease(db, self.owner, now, LEASE_S)
            if not self.active:
                return 0
            self.fired += self.state.apply_events(db)
            alerts, told, groups, silences = self.state.for_planning(db, self._labels)
            plan = lifecycle.plan(now, alerts, told, groups, self.rules, self.routing, silences, self.in_maintenance)
            for n in plan.notifications:
                body = dataclasses.asdict(self._notification(n, now))
                self.state.enqueue(db, n.key, n.receiver, n.kind, n.group_key, body, now)
                detail = {"receiver": n.receiver, "kind": n.kind, "key": n.key}
                for a in n.alerts:
                    self.state.history(db, a.fingerprint, a.starts_at, now, "notification", detail)
            self.state.record(db, plan.told, plan.groups)
            self.state.settle(db, plan.settled)
            if any(t.resolved for t in plan.told):
                self.state.forget_told(db)
        if self.deliver:
            self._dispatch(now)
        return len(plan.notifications)

    def in_maintenance(self, node: str, t: float) -> bool:
        return any(start <= t < end for start, end in self._windows.get(node, ()))

    def _labels(self, rule: str, node: str, sensor: str, severity: str) -> dict[str, str]:
        """An alert's labels: what silences match and grouping reads (cached: built at every step otherwise)."""
        key = (rule, node, sensor, severity)
        labels = self._label_cache.get(key)
        if labels is None:
            labels = {"alertname": rule, "rule": rule, "node": node, "sensor": sensor, "severity": severity, "plant": self.plant_name}
            spec = self._nodes.get(node)
            if spec is not None:
                labels.update(spec.meta.labels)
                if spec.spec.equipment:
                    labels["equipment"] = spec.spec.equipment
                if spec.spec.location:
                    labels["location"] = spec.spec.location
            if len(self._label_cache) >= LABEL_CACHE:
                self._label_cache.clear()
            labels = self._label_cache[key] = labels
        return labels

    def _notification(self, n: lifecycle.Planned, now: float) -> Notification:
        views = tuple(self._view(a) for a in n.alerts)
        return Notification(n.key, n.receiver, n.kind, n.group_key, n.group_labels, views, now, self.plant_name)

    def _view(self, a: Alert) -> AlertView:
        annotations = {"summary": a.summary}
        rule = self._rule_specs.get(a.rule)
        if rule is not None:
            if rule.spec.annotations and rule.spec.annotations.runbook:
                annotations["runbook"] = rule.spec.annotations.runbook
            threshold = rule.spec.condition.threshold
            level = getattr(threshold, a.severity, None) if threshold is not None and a.severity != "info" else None
            if level is not None:
                annotations["threshold"] = decimal_text(level)
        node = self._nodes.get(a.node)
        unit = next((s.unit for s in node.spec.sensors if s.name == a.sensor and s.unit), None) if node else None
        if unit:
            annotations["unit"] = unit
        return AlertView(
            a.fingerprint, a.rule, a.node, a.sensor, a.severity, a.status, a.value, a.summary, a.starts_at, a.ends_at,
            dict(a.labels), annotations, a.acked_by,
        )  # fmt: skip

    # --- delivery ---

    def _dispatch(self, now: float) -> None:
        if not self.active:
            return
        # Reading what is due and marking it in flight under the lock that a delivery holds while it
        # records its outcome and leaves the in-flight set: a row read as pending just before its
        # delivery committed is then still in the set, never sent a second time.
        with self._lock:
            fresh = [n for n in self.state.due(now) if n.id not in self._in_flight]
            self._in_flight.update(n.id for n in fresh)
        for n in fresh:
            worker = self._workers.get(n.receiver)
            if worker is None:  # a receiver the plant no longer has: its messages wait for it to come back
                with self._lock:
                    self._in_flight.discard(n.id)
                continue
            worker.submit(self._deliver, n)

    def _deliver(self, stored: Stored) -> None:
        try:
            notification = _from_body(stored.body)
            outcome = self.deliveries[stored.receiver].attempt(notification)
            at = self.clock()
            if outcome.delivered:
                status, next_at = SENT, at
            elif not outcome.retryable:
                status, next_at = FAILED, at
            elif at - stored.created_at >= MAX_AGE_S:
                status, next_at = EXPIRED, at
            else:
                status, next_at = PENDING, at + min(RETRY_MAX_S, RETRY_FIRST_S * 2**stored.rounds)
            self.results[(stored.receiver, outcome.result)] += 1
            error = next((a.error for a in reversed(outcome.attempts) if a.error), None)
            detail = {
                "receiver": stored.receiver,
                "kind": stored.kind,
                "key": stored.key,
                "result": outcome.result,
                "status": status,
                "attempts": [dataclasses.asdict(a) for a in outcome.attempts],
            }
            history = [(a.fingerprint, a.starts_at, "delivery", detail) for a in notification.alerts]
            with self._lock:
                self.state.finish(stored, status, len(outcome.attempts), at, next_at, error, history)
                self._in_flight.discard(stored.id)
            if status in (FAILED, EXPIRED):
                log.warning("notification %s to %s %s: %s", stored.key, stored.receiver, status, error)
        except Exception as exc:  # noqa: BLE001 (the notification stays pending and is tried again)
            if self._errors.allow(("deliver", type(exc).__name__), time.monotonic()):
                log.error("delivering notification %s to %s failed: %r", stored.key, stored.receiver, exc, exc_info=exc)
        finally:
            with self._lock:
                self._in_flight.discard(stored.id)

    def summary(self) -> dict[str, Any]:
        """Notifications by receiver and result this run (attempt rounds), and the log's totals by status."""
        by_receiver: dict[str, dict[str, int]] = {}
        for (receiver, result), n in sorted(self.results.items()):
            by_receiver.setdefault(receiver, {})[result] = n
        return {"by_receiver": by_receiver, "log": self.state.notification_counts()}


def _from_body(body: dict[str, Any]) -> Notification:
    alerts = tuple(AlertView(**a) for a in body["alerts"])
    return Notification(**{**body, "alerts": alerts})
