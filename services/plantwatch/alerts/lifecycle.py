"""What to tell whom, and when: the alert lifecycle after the rules (pure; the notifier does the I/O).

The rule engine decides that an alert fires or resolves (rules/engine.py); its events are
stored with the batch that caused them. From those stored alerts this module decides,
at a given time, which notifications are due — as Alertmanager does, with ThingsBoard's
acknowledgements on top:

- **Receivers.** An alert goes to its rule's `receivers`; while it fires unacknowledged,
  each `escalation` tier adds its receivers once the alert has fired for the tier's `after`.
- **Muting, checked at send time.** A firing alert is not announced (nor repeated, nor
  escalated) while a silence matches its labels, while its node is in a maintenance window,
  or while a critical or emergency alert fires on the same series (inhibition of the
  info and warning alerts of other rules there). Muting only delays: an alert still firing
  when its silence or window ends is announced then. A resolve goes to every receiver that
  was told of the firing, muted or not, so nobody is left believing a fault is still on.
  An alert that fired and resolved before anyone was told (a backlog replayed after an
  outage, a short fault between two steps) is announced firing, then resolved — unless it
  started muted by a silence or a maintenance window, which then kept it quiet for good.
- **Grouping.** Per receiver, alerts with the same values of the receiver's `grouping.by`
  labels form a group. A group's first message waits `wait` for more alerts (forty presses
  overheating at once make one message, not forty); later changes go out at most every
  `interval`. A message carries the alerts that changed: new, re-levelled or resolved.
- **Repeats.** A group whose firing alerts were all told repeats them every repeatInterval
  (the shortest of their rules'), unless they are acknowledged or muted.
- **Exactly once.** Each (receiver, alert episode) is told of its firing once and of its
  resolve once: the `Told` records that say so are stored in the same transaction as the
  notifications they produce (alerts/notifier.py), so a crash repeats neither.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

SEVERITIES = ("info", "warning", "critical", "emergency")
#: Alerts at these severities inhibit the info and warning alerts of the same series.
INHIBITING = ("critical", "emergency")
INHIBITED = ("info", "warning")


@dataclass(slots=True)
class Alert:
    """One alert's current state, as stored (store/alert_state.py). Not frozen, like Told and Group:
    thousands are built at every step, and a frozen dataclass costs twice as much to build."""

    fingerprint: str
    rule: str
    node: str
    sensor: str
    severity: str
    #: "firing" or "resolved".
    status: str
    value: float | None
    summary: str
    starts_at: float
    ends_at: float | None = None
    acked_by: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The text it fired with (`summary` is the resolve's once resolved).
    firing_summary: str | None = None


@dataclass(frozen=True)
class Matcher:
    """A silence's label matcher, as Alertmanager's: `=`, `!=`, `=~`, `!~` (regexes anchored)."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        hit = re.fullmatch(self.value, got) is not None if self.is_regex else got == self.value
        return hit == self.is_equal


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class RuleRouting:
    """What the lifecycle needs of an AlertRule."""

    receivers: tuple[str, ...]
    #: (after seconds, receivers) per escalation tier, in order.
    escalation: tuple[tuple[float, tuple[str, ...]], ...] = ()
    repeat_s: float = 3600.0


@dataclass(frozen=True)
class ReceiverRouting:
    """What the lifecycle needs of a receiver."""

    group_by: tuple[str, ...] = ("rule",)
    wait_s: float = 10.0
    interval_s: float = 60.0
    #: Re-send firing alerts every this many seconds even when acknowledged (Alertmanager's
    #: resend: it resolves an alert it stops hearing about); None: the rules' repeatInterval.
    resend_s: float | None = None


@dataclass(slots=True)
class Told:
    """What one receiver has been told of one alert episode (the episode starts at `starts_at`)."""

    receiver: str
    fingerprint: str
    starts_at: float
    #: The severity it was told firing at; None while only pending in a group.
    severity: str | None = None
    resolved: bool = False
    last_sent: float = 0.0


@dataclass(slots=True)
class Group:
    """A receiver's group: when its pending changes first appeared, and when it last sent."""

    receiver: str
    key: str
    #: When the group's oldest unsent change appeared (None: nothing waiting).
    pending_since: float | None = None
    last_sent: float | None = None


@dataclass(frozen=True)
class Planned:
    """A notification to create: which alerts, to whom, why."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    kind: str
    alerts: tuple[Alert, ...]
    key: str


@dataclass
class Plan:
    notifications: list[Planned] = field(default_factory=list)
    told: list[Told] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    #: Resolved episodes nobody had been told of that need no further look: announced now (their
    #: resolve follows through `told`), or muted when they started. (fingerprint, starts_at).
    settled: list[tuple[str, float]] = field(default_factory=list)


def muted_by(alert: Alert, now: float, silences: Iterable[Silence], maintenance: bool, firing: Iterable[Alert]) -> str | None:
    """Why a firing alert is not to be announced now (`silence <id>`, `maintenance`, `inhibited by <fp>`), or None."""
    for s in silences:
        if s.active(now) and s.matches(alert.labels):
            return f"silence {s.id}"
    if maintenance:
        return "maintenance"
    if alert.severity in INHIBITED:
        for other in firing:
            if (
                other.fingerprint != alert.fingerprint
                and other.status == "firing"
                and other.severity in INHIBITING
                and (other.node, other.sensor) == (alert.node, alert.sensor)
            ):
                return f"inhibited by {other.fingerprint}"
    return None


def receivers_now(alert: Alert, routing: RuleRouting, now: float) -> list[tuple[str, bool]]:
    """(receiver, is escalation) the firing alert should reach now: the rule's, then each tier reached while unacknowledged."""
    out = [(r, False) for r in routing.receivers]
    if alert.status == "firing" and alert.acked_by is None:
        for after, names in routing.escalation:
            if now - alert.starts_at >= after:
                out.extend((r, True) for r in names if all(r != o for o, _ in out))
    return out


def group_of(alert: Alert, by: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The group key of an alert for these labels, and the labels; empty `by`: each alert its own group."""
    if not by:
        return alert.fingerprint, {"fingerprint": alert.fingerprint}
    labels = {k: alert.labels.get(k, "") for k in by}
    return "{" + ",".join(f"{k}={v!r}" for k, v in labels.items()) + "}", labels


def notification_key(receiver: str, group_key: str, kind: str, alerts: Iterable[Alert], now: float) -> str:
    """Stable identity of one notification (its idempotency key)."""
    h = hashlib.sha256(f"{receiver}\n{group_key}\n{kind}\n{now!r}".encode())
    for a in alerts:
        h.update(f"\n{a.fingerprint}@{a.starts_at!r}:{a.status}:{a.severity}".encode())
    return h.hexdigest()[:32]


def plan(
    now: float,
    alerts: Iterable[Alert],
    told: Mapping[tuple[str, str, float], Told],
    groups: Mapping[tuple[str, str], Group],
    rules: Mapping[str, RuleRouting],
    receivers: Mapping[str, ReceiverRouting],
    silences: Iterable[Silence] = (),
    in_maintenance: Callable[[str, float], bool] | None = None,
) -> Plan:
    """The notifications due at `now`, with the Told and Group records to store beside them.

    `alerts` are the firing episodes and the resolved ones some receiver was told of; `told` is
    keyed by (receiver, fingerprint, starts_at).
    """
    alerts = list(alerts)
    every_silence = list(silences)
    told_of: dict[tuple[str, float], list[Told]] = {}
    for t in told.values():
        told_of.setdefault((t.fingerprint, t.starts_at), []).append(t)
    silences = [s for s in every_silence if s.active(now)]
    maintenance = in_maintenance or (lambda node, t: False)
    # the critical and emergency alerts firing on each series: what may inhibit the others there
    inhibiting: dict[tuple[str, str], list[Alert]] = {}
    for a in alerts:
        if a.status == "firing" and a.severity in INHIBITING:
            inhibiting.setdefault((a.node, a.sensor), []).append(a)
    # (receiver, group key) → changes [(alert, kind)], repeats [alert], labels
    changes: dict[tuple[str, str], list[tuple[Alert, str]]] = {}
    repeats: dict[tuple[str, str], list[Alert]] = {}
    labels_of: dict[tuple[str, str], dict[str, str]] = {}
    out = Plan()
    unseen: dict[tuple[str, float], list[str]] = {}

    for a in alerts:
        routing = rules.get(a.rule)
        if routing is None:
            continue
        if a.status == "resolved":
            told_now = told_of.get((a.fingerprint, a.starts_at), ())
            for t in told_now:
                if t.severity is not None and not t.resolved:
                    _note(receivers, t.receiver, a, changes, labels_of, "resolved")
            if told_now:
                out.settled.append((a.fingerprint, a.starts_at))
                continue
            if muted_by(a, a.starts_at, every_silence, maintenance(a.node, a.starts_at), ()):
                out.settled.append((a.fingerprint, a.starts_at))
                continue
            # fired and resolved unseen: announce the firing now, the resolve at the next step
            view = replace(a, status="firing", ends_at=None, summary=a.firing_summary or a.summary)
            names = [r for r, _ in receivers_now(view, routing, a.starts_at) if r in receivers]
            unseen[(a.fingerprint, a.starts_at)] = names
            for receiver in names:
                _note(receivers, receiver, view, changes, labels_of, "firing")
            continue
        mute = muted_by(a, now, silences, maintenance(a.node, now), inhibiting.get((a.node, a.sensor), ()))
        for receiver, escalated in receivers_now(a, routing, now):
            if receiver not in receivers:
                continue
            t = told.get((receiver, a.fingerprint, a.starts_at))
            episode_told = t is not None and t.severity is not None
            if mute is not None:
                continue
            if not episode_told:
                _note(receivers, receiver, a, changes, labels_of, "escalation" if escalated else "firing")
            elif t.severity != a.severity:
                _note(receivers, receiver, a, changes, labels_of, "firing")
            else:
                cfg = receivers[receiver]
                every = cfg.resend_s if cfg.resend_s is not None else routing.repeat_s
                if (a.acked_by is None or cfg.resend_s is not None) and now - t.last_sent >= every:
                    key, labels = group_of(a, cfg.group_by)
                    repeats.setdefault((receiver, key), []).append(a)
                    labels_of[(receiver, key)] = labels

    for gk in sorted(set(changes) | set(repeats)):
        receiver, key = gk
        cfg = receivers[receiver]
        group = groups.get(gk) or Group(receiver, key)
        changed = changes.get(gk, [])
        if changed:
            since = group.pending_since if group.pending_since is not None else now
            due = now >= since + cfg.wait_s if group.last_sent is None else now >= max(since, group.last_sent + cfg.interval_s)
            if not due:
                if group.pending_since is None:
                    out.groups.append(replace(group, pending_since=now))
                continue
            kinds = {k for _, k in changed}
            kind = "firing" if "firing" in kinds else "escalation" if "escalation" in kinds else "resolved"
            sent = tuple(a for a, _ in sorted(changed, key=lambda c: c[0].fingerprint))
        else:
            kind, sent = "repeat", tuple(sorted(repeats[gk], key=lambda a: a.fingerprint))
        n = Planned(receiver, key, labels_of[gk], kind, sent, notification_key(receiver, key, kind, sent, now))
        out.notifications.append(n)
        out.groups.append(Group(receiver, key, None, now))
        for a in sent:
            if a.status == "resolved":
                out.told.append(Told(receiver, a.fingerprint, a.starts_at, a.severity, True, now))
            else:
                out.told.append(Told(receiver, a.fingerprint, a.starts_at, a.severity, False, now))
    told_now = {(t.receiver, t.fingerprint, t.starts_at) for t in out.told}
    out.settled.extend(ep for ep, names in unseen.items() if all((r, *ep) in told_now for r in names))
    return out


def _note(
    receivers: Mapping[str, ReceiverRouting],
    receiver: str,
    a: Alert,
    changes: dict[tuple[str, str], list[tuple[Alert, str]]],
    labels_of: dict[tuple[str, str], dict[str, str]],
    kind: str,
) -> None:
    if receiver not in receivers:
        return
    key, labels = group_of(a, receivers[receiver].group_by)
    changes.setdefault((receiver, key), []).append((a, kind))
    labels_of[(receiver, key)] = labels
