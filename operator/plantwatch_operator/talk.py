"""What the operator tells the person running it (pure): a start-up line, one line per reconcile that changed
something, and warnings where a user must act, each bounded in length however large the plant.

A render collects what it wrote into a `Report` (objects applied or deleted, statuses written, and the
Warning Events those status changes carry); `reconcile_lines` turns it into at most one INFO line and a
few WARNING lines. Nothing is said for a render that wrote nothing, and a warning comes from a condition
that changed, so a refused resource is named once per change, not at every render.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Names listed in a group before the rest are counted ("a, b, c and 997 more").
NAMES_SHOWN = 3
#: Objects applied listed one by one before the rest are counted by kind and action.
OBJECTS_SHOWN = 8
#: The condition that says whether each kind is in use: what a reconcile line reports.
MAIN_CONDITION = {"SensorNode": "Ready", "AlertRule": "Accepted", "AlertReceiver": "Accepted", "DetectorModel": "Available"}
#: Conditions False for no fault of the user's: a rule Prometheus cannot evaluate (no Prometheus Operator, a
#: condition PromQL cannot say) still alerts through the gateway. Their Events stay; no warning.
INFORMATIONAL = ("PrometheusRule",)


@dataclass(frozen=True)
class Written:
    """One object the operator wrote: `action` is created, updated or deleted."""

    kind: str
    name: str
    action: str


@dataclass(frozen=True)
class StatusWritten:
    """A status the operator wrote: the object, and its main condition as written (status, reason)."""

    kind: str
    name: str
    condition: str
    status: str
    reason: str


@dataclass(frozen=True)
class Refusal:
    """A condition that turned False or Unknown on an object (a Warning Event): something a user must fix."""

    kind: str
    name: str
    condition: str
    status: str
    reason: str
    message: str


@dataclass
class Report:
    """What one reconcile of a namespace wrote."""

    namespace: str
    objects: list[Written] = field(default_factory=list)
    statuses: list[StatusWritten] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def status(self, kind: str, name: str, conditions: Iterable[Mapping[str, str]]) -> None:
        """Record a status write from the conditions it carries (its kind's main condition, else its first)."""
        conditions = list(conditions)
        main = next((c for c in conditions if c.get("type") == MAIN_CONDITION.get(kind)), conditions[0] if conditions else None)
        if main is None:
            self.statuses.append(StatusWritten(kind, name, "status", "True", ""))
        else:
            self.statuses.append(StatusWritten(kind, name, main["type"], main["status"], main.get("reason", "")))


def plural(count: int, kind: str) -> str:
    return f"{count} {kind}" if count == 1 else f"{count} {kind}s"


def names(items: list[str]) -> str:
    """`a, b, c` or `a, b, c and 997 more`: a group of any size in a bounded line."""
    shown = ", ".join(items[:NAMES_SHOWN])
    return f"{shown} and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else shown


def objects_phrase(objects: list[Written]) -> str:
    """`applied 3 objects (Deployment/plantwatch-gateway updated, ...)`; past OBJECTS_SHOWN, the rest by kind and action."""
    applied = [o for o in objects if o.action != "deleted"]
    deleted = [o for o in objects if o.action == "deleted"]
    parts = []
    for verb, group in (("applied", applied), ("deleted", deleted)):
        if not group:
            continue
        listed = [f"{o.kind}/{o.name}" + ("" if verb == "deleted" else f" {o.action}") for o in group[:OBJECTS_SHOWN]]
        rest: dict[tuple[str, str], int] = defaultdict(int)
        for o in group[OBJECTS_SHOWN:]:
            rest[o.kind, o.action] += 1
        listed += [f"{plural(n, kind)} {action}" for (kind, action), n in rest.items()]
        parts.append(f"{verb} {plural(len(group), 'object')} ({', '.join(listed)})")
    return ", ".join(parts)


def statuses_phrase(statuses: list[StatusWritten]) -> str:
    """`2 SensorNodes Ready (press-01, press-02), 1 AlertRule Accepted=False UnknownReceiver (bad-rule)`."""
    groups: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for s in statuses:
        groups[s.kind, s.condition, s.status, s.reason].append(s.name)
    phrases = []
    for (kind, condition, status, reason), group in groups.items():
        state = condition if status == "True" else f"{condition}={status} {reason}".rstrip()
        phrases.append(f"{plural(len(group), kind)} {state} ({names(group)})")
    return ", ".join(phrases)


def reconcile_lines(report: Report) -> tuple[str | None, list[str]]:
    """The INFO line (None when the reconcile wrote nothing) and the WARNING lines: one per refused object
    while a group is small, one per (kind, condition, reason) past NAMES_SHOWN, so a thousand nodes refused
    at once are one line."""
    said = [p for p in (objects_phrase(report.objects), statuses_phrase(report.statuses)) if p]
    info = f"{report.namespace}: {'; '.join(said)}" if said else None
    groups: dict[tuple[str, str, str, str], list[Refusal]] = defaultdict(list)
    for r in report.refusals:
        if r.condition in INFORMATIONAL:
            continue
        groups[r.kind, r.condition, r.status, r.reason].append(r)
    warnings = []
    for (kind, condition, status, reason), group in groups.items():
        if len(group) <= NAMES_SHOWN:
            warnings += [f"{report.namespace}: {kind} {r.name} {condition}={status} {reason}: {r.message}" for r in group]
        else:
            first = group[0]
            warnings.append(
                f"{report.namespace}: {plural(len(group), kind)} {condition}={status} {reason} ({names([r.name for r in group])}); "
                f"{first.name}: {first.message}"
            )
    return info, warnings


def startup_line(
    version: str,
    namespaces: list[str],
    peering: str | None,
    peering_lifetime: str,
    metrics_port: int | None,
    liveness_port: int | None,
    identity: str,
    lease_seconds: int,
    settings: Mapping[str, object],
) -> str:
    """One line with what this process is and does: its version, where it looks, how it shares the work with
    its peers and other installs, where it is probed, and the settings that shape what it renders."""
    watched = ", ".join(namespaces) if namespaces else "all"
    mode = f"peering {peering!r} (standby takes over after {peering_lifetime}s)" if peering else "standalone (no peering)"
    metrics = f"metrics and /readyz on :{metrics_port}" if metrics_port else "no metrics port"
    liveness = f"liveness on :{liveness_port}/healthz" if liveness_port else "no liveness port"
    rest = "; ".join(f"{k} {v}" for k, v in settings.items())
    return (
        f"plantwatch operator {version}: watching namespaces {watched}; {mode}; {metrics}; {liveness}; "
        f"namespace claim as {identity!r} (Lease, {lease_seconds}s); {rest}"
    )


def failure(namespace: str, exc: BaseException, retry: float) -> tuple[str, bool]:
    """A failed render in one line, and whether it is an API server's refusal (then no traceback helps the
    reader). A 403 names what RBAC refused, as the API server words it, and where to grant it."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if not isinstance(status, int):
        return f"{namespace}: rendering failed ({type(exc).__name__}: {exc}); retrying every {retry:g}s", False
    try:
        said = json.loads(body)["message"] if body else str(getattr(exc, "reason", ""))
    except (ValueError, KeyError, TypeError):
        said = str(body)
    line = f"{namespace}: the API server refused a request ({status} {getattr(exc, 'reason', '')}): {said}; retrying every {retry:g}s"
    if status == 403:
        line += ". The operator's RBAC does not allow it: grant it in its Role or ClusterRole (operator/deploy/, or the chart's)"
    return line, True
