"""The gateway's report on its alerts in Kubernetes: each AlertRule's `firingCount` and `lastFired`
(the printer columns Firing and Last-Fired), and an Event on the SensorNode each time an alert
fires (`AlertFiring`, Warning) or resolves (`AlertResolved`, Normal), its message the alert's summary.

Read from the store's `alert_events`, not from the rule engine: what is reported is what was
committed, and a restarted gateway reports the same. A rule's firing count is how many of its
fingerprints (rule + node + sensor) have `firing` as their latest event; lastFired is its latest
`firing` time. Events are the rows after a cursor, each named after its row (same alert, state
and time → same name), so the rows a restarted gateway replays (`replay_s`) are refused as
already posted instead of posted twice.

Written every `interval_s` by one thread, at most `max_writes` API writes a round (status patches
first, then Events in row order), so a plant-wide event (forty presses at once) reaches the API
server over a few rounds instead of at once; the store is the queue, so nothing is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from plantwatch.contracts.names import ALERT_RULE, API_VERSION, GATEWAY_MANAGER, SENSOR_NODE
from plantwatch.contracts.times import iso
from plantwatch.ingest.periodic import PeriodicReport
from plantwatch.plant.load import Plant
from plantwatch.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

FIRING, RESOLVED = "firing", "resolved"
#: The Event each reported state becomes: (type, reason).
EVENT_KINDS = {FIRING: ("Warning", "AlertFiring"), RESOLVED: ("Normal", "AlertResolved")}
#: The API server stores longer Event messages, but `kubectl describe` is read by people.
MESSAGE_MAX = 1024


class AlertRow(NamedTuple):
    """One row of the store's alert_events."""

    id: int
    fingerprint: str
    rule: str
    node: str
    sensor: str
    state: str
    severity: str
    ts: float
    summary: str


COLUMNS = ", ".join(AlertRow._fields)
#: The rows that decide the status as it stands: each fingerprint's latest event and each rule's latest firing.
CURRENT_ROWS = f"""
SELECT {COLUMNS} FROM alert_events WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY fingerprint ORDER BY ts DESC, id DESC) AS k FROM alert_events
    ) AS latest WHERE k = 1
    UNION
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY rule ORDER BY ts DESC, id DESC) AS k FROM alert_events WHERE state = '{FIRING}'
    ) AS last_fired WHERE k = 1
)"""


class AlertLedger:
    """Each rule's alerts as the events so far say (pure): fold rows in, in any order and more than once."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[float, int, str, str]] = {}  # fingerprint → (ts, id, rule, state)
        self._last_fired: dict[str, float] = {}  # rule → ts

    def fold(self, rows: Iterable[AlertRow]) -> None:
        for row in rows:
            if (row.ts, row.id) > self._latest.get(row.fingerprint, (-math.inf, -1, "", ""))[:2]:
                self._latest[row.fingerprint] = (row.ts, row.id, row.rule, row.state)
            if row.state == FIRING and row.ts > self._last_fired.get(row.rule, -math.inf):
                self._last_fired[row.rule] = row.ts

    def statuses(self, rules: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each rule's `firingCount` and, once one of its alerts has fired, `lastFired`."""
        firing = Counter(rule for _, _, rule, state in self._latest.values() if state == FIRING)
        out = {}
        for rule in rules:
            status: dict[str, Any] = {"firingCount": firing[rule]}
            if rule in self._last_fired:
                status["lastFired"] = iso(int(self._last_fired[rule]))
            out[rule] = status
        return out


def event_name(row: AlertRow) -> str:
    """The Event's name, from the alert and the transition: the same row always gets the same name."""
    digest = hashlib.sha256(f"{row.fingerprint}\0{row.state}\0{row.ts!r}".encode()).hexdigest()[:16]
    return f"{row.node[:200]}.{digest}"


def alert_event(row: AlertRow, namespace: str, node_uid: str | None) -> dict[str, Any] | None:
    """The core/v1 Event on the row's SensorNode, or None for a state that is not announced.

    With the node's uid, `kubectl describe sensornode` lists it (it matches Events by uid).
    The timestamps are the alert's, not the posting's.
    """
    if row.state not in EVENT_KINDS:
        return None
    type_, reason = EVENT_KINDS[row.state]
    involved = {"apiVersion": API_VERSION, "kind": SENSOR_NODE, "name": row.node, "namespace": namespace}
    if node_uid:
        involved["uid"] = node_uid
    when = iso(int(row.ts))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(row), "namespace": namespace},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": row.summary[:MESSAGE_MAX],
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "source": {"component": GATEWAY_MANAGER},
        "reportingComponent": GATEWAY_MANAGER,
        "reportingInstance": GATEWAY_MANAGER,
    }


class AlertStatusReporter(PeriodicReport):
    """Patches the plant's AlertRules' status and posts the alerts' Events from the store, on its own thread."""

    def __init__(
        self,
        store: SqliteStore,
        namespace: str,
        plant: Plant,
        interval_s: float = 5.0,
        max_writes: int = 50,
        replay_s: float = 600.0,
        fold_batch: int = 10_000,
    ):
        super().__init__("alert-status", interval_s, log)
        self._store = store
        self._namespace = namespace
        self._rules = [r.name for r in plant.rules]
        self._max_writes = max_writes
        self._replay_s = replay_s
        self._fold_batch = fold_batch
        self._ledger = AlertLedger()
        self._folded: int | None = None  # the last row folded into the ledger
        self._posted = 0  # the last row whose Event was posted (or is not one)
        self._reported: dict[str, dict[str, Any]] = {}
        self._uids: dict[str, str] = {}

    def _rows(self, where: str, params: tuple) -> list[AlertRow]:
        return [AlertRow(*r) for r in self._store.query(f"SELECT {COLUMNS} FROM alert_events WHERE {where}", params)]

    def _prime(self, now: float) -> None:
        """The ledger from the current rows; Events from the rows of the last `replay_s` (posted before or not)."""
        # The cursor first: a row committed meanwhile is folded again next round, which changes nothing.
        last = self._store.query("SELECT coalesce(max(id), 0) FROM alert_events")[0][0]
        self._ledger.fold(AlertRow(*r) for r in self._store.query(CURRENT_ROWS))
        first_recent = self._store.query("SELECT min(id) FROM alert_events WHERE ts >= ?", (now - self._replay_s,))[0][0]
        self._folded, self._posted = last, last if first_recent is None else min(last, first_recent - 1)

    def report(self, now: float) -> None:
        # Not at the top: the Kubernetes client takes ~0.4 s to import (see node_status.py).
        from plantwatch.kube import apply_status

        if self._folded is None:
            self._prime(now)
        rows = self._rows("id > ? ORDER BY id LIMIT ?", (self._folded, self._fold_batch))
        self._ledger.fold(rows)
        if rows:
            self._folded = rows[-1].id
        budget = self._max_writes
        for rule, status in self._ledger.statuses(self._rules).items():
            if budget == 0:
                return
            if self._reported.get(rule) == status:
                continue
            body = {"apiVersion": API_VERSION, "kind": ALERT_RULE, "metadata": {"name": rule, "namespace": self._namespace}}
            apply_status(body, status, GATEWAY_MANAGER)
            self._reported[rule] = status
            budget -= 1
        if budget == 0:
            return
        for row in self._rows("id > ? AND id <= ? ORDER BY id LIMIT ?", (self._posted, self._folded, budget)):
            self._post(row)
            self._posted = row.id

    def _post(self, row: AlertRow) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        from plantwatch.kube import api_client

        event = alert_event(row, self._namespace, self._node_uid(row.node))
        if event is None:
            return
        try:
            client.CoreV1Api(api_client()).create_namespaced_event(self._namespace, event)
        except ApiException as exc:
            if exc.status != 409:  # 409: posted before this gateway restarted
                raise

    def _node_uid(self, node: str) -> str | None:
        """The SensorNode's uid (read through its status subresource, which the gateway may get), or None when it is gone."""
        if node not in self._uids:
            from kubernetes.client.rest import ApiException

            from plantwatch.kube import dynamic

            resource = dynamic().resources.get(api_version=API_VERSION, kind=SENSOR_NODE)
            try:
                self._uids[node] = dynamic().get(resource.status, name=node, namespace=self._namespace).metadata.uid
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return None
        return self._uids[node]
