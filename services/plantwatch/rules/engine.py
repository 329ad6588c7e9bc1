"""Alert rule evaluation per series: readings and clock ticks in, alert events out.

Pure and single-threaded: the caller owns the clock (reading timestamps for value
conditions, `tick(now)` for absence) and the I/O. One alert exists per rule and
series (its fingerprint); it is pending while the condition holds for less than the
rule's `for`, firing after, and resolved when the condition clears (past the
hysteresis for thresholds).

`for` applies once, to the alert becoming firing at any level: a threshold series
past any of its levels is pending, whichever level it is at (a reading past critical
waits like one past warning), and when `for` has elapsed the alert fires at the level
of the reading that completes it, so the event's severity always matches the value it
reports (a spike to critical that fell back within `for` is the transient `for` is
there to ignore). Once firing, moving between warning, critical and emergency, up or
down (down past the hysteresis), is immediate and emits a firing event with the new
severity; resolving is immediate too. Every event carries `since`, when the condition
started to hold (the start of pending), which stays the same across level changes.

Each rule sees a series in event-time order: a reading no newer than the last one the
rule evaluated for that series (a late reading, or one redelivered to a shard's new
owner after the old owner had already committed it) is stored but leaves the alert as
it is. That makes the state idempotent under redelivery, which a checkpointed shard
(`snapshot`/`restore`) relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plantwatch.plant.load import Plant
from plantwatch.plant.model import AlertRule, duration_seconds, selector_matches
from plantwatch.readings import AlertEvent, Reading
from plantwatch.rules import summary as summaries

LEVELS = ("warning", "critical", "emergency")


@dataclass(frozen=True)
class CompiledRule:
    """An AlertRule with numbers parsed, ready for the hot path."""

    name: str
    type: str
    for_s: float
    severity: str
    #: The rule's summary template; None: the default summary of the condition type.
    summary: str | None
    #: Threshold levels as (severity, value), least severe first.
    levels: tuple[tuple[str, float], ...] = ()
    above: bool = True
    hysteresis: float = 0.0
    absence_after_s: float = 0.0
    max_per_minute: float = 0.0
    score_above: float | None = None

    @classmethod
    def of(cls, rule: AlertRule, detector_thresholds: dict[str, float]) -> CompiledRule:
        spec = rule.spec
        cond = spec.condition
        summary = spec.annotations.summary if spec.annotations and spec.annotations.summary else None
        base = dict(name=rule.name, type=cond.type, for_s=duration_seconds(spec.for_), severity=spec.severity, summary=summary)
        if cond.type == "Threshold":
            t = cond.threshold
            levels = tuple((lvl, getattr(t, lvl)) for lvl in LEVELS if getattr(t, lvl) is not None)
            return cls(**base, levels=levels, above=t.direction == "Above", hysteresis=t.hysteresis)
        if cond.type == "Absence":
            return cls(**base, absence_after_s=duration_seconds(cond.absence.after))
        if cond.type == "RateOfChange":
            return cls(**base, max_per_minute=cond.rate_of_change.max_per_minute)
        score = cond.anomaly_score
        above = score.above if score.above is not None else detector_thresholds.get(score.detector, 0.5)
        return cls(**base, score_above=above)

    def level(self, value: float, current: str | None) -> str | None:
        """The most severe level the value is at; a level already firing holds until past the hysteresis."""
        found = None
        rank = LEVELS.index(current) if current in LEVELS else -1
        for i, (name, threshold) in enumerate(self.levels):
            if self.above:
                reached = value >= threshold or (i <= rank and value > threshold - self.hysteresis)
            else:
                reached = value <= threshold or (i <= rank and value < threshold + self.hysteresis)
            if reached:
                found = name
        return found

    def threshold(self, severity: str | None) -> float | None:
        """The limit an event reports: the level at `severity`, or (None: resolved) the value past
        which a threshold alert resolves; the rule's one limit for the other condition types."""
        if self.type == "Threshold":
            if severity is None:
                lowest = self.levels[0][1]
                return lowest - self.hysteresis if self.above else lowest + self.hysteresis
            return dict(self.levels).get(severity)
        if self.type == "Absence":
            return self.absence_after_s
        if self.type == "RateOfChange":
            return self.max_per_minute
        return self.score_above


@dataclass
class _AlertState:
    severity: str | None = None
    #: When the condition started to hold: the start of pending, kept while firing.
    since: float | None = None
    last_value: float | None = None
    last_ts: float | None = None


@dataclass
class _Watch:
    """An absence watch: a rule over one node (or one of its sensors)."""

    rule: CompiledRule
    node: str
    sensor: str | None
    last_seen: float
    firing: bool = False


class RuleEngine:
    """Evaluates every AlertRule of a plant against the readings of its series."""

    def __init__(self, plant: Plant, now: float):
        self._plant = plant
        thresholds = {d.name: d.spec.threshold for d in plant.detectors if d.spec.threshold is not None}
        self._compiled = {r.name: CompiledRule.of(r, thresholds) for r in plant.rules}
        self._nodes = {n.name: n for n in plant.nodes}
        self._series_rules: dict[tuple[str, str, str], list[CompiledRule]] = {}
        self._states: dict[str, _AlertState] = {}
        self._watches = self._absence_watches(now)
        self._watches_by_node: dict[str, list[_Watch]] = {}
        for w in self._watches:
            self._watches_by_node.setdefault(w.node, []).append(w)

    def _absence_watches(self, now: float) -> list[_Watch]:
        watches = []
        for rule in self._plant.rules:
            if rule.spec.condition.type != "Absence":
                continue
            sel = rule.spec.selector
            for node in self._plant.nodes:
                if not selector_matches(sel.node_selector, node.meta.labels):
                    continue
                if sel.sensor is None and sel.sensor_type is None:
                    watches.append(_Watch(self._compiled[rule.name], node.name, None, now))
                    continue
                for s in node.spec.sensors:
                    if (sel.sensor is None or sel.sensor == s.name) and (sel.sensor_type is None or sel.sensor_type == s.type):
                        watches.append(_Watch(self._compiled[rule.name], node.name, s.name, now))
        return watches

    def _rules_for(self, r: Reading) -> list[CompiledRule]:
        key = (r.node, r.sensor, r.type)
        rules = self._series_rules.get(key)
        if rules is None:
            node = self._nodes.get(r.node)
            matched = self._plant.rules_for(node, r.sensor, r.type) if node else []
            # An AnomalyScore rule watches its own detector's scores (sensor = the DetectorModel's
            # name), not every anomaly_score series its selector happens to match.
            rules = [
                self._compiled[m.name]
                for m in matched
                if m.spec.condition.type != "Absence"
                and (m.spec.condition.type != "AnomalyScore" or m.spec.condition.anomaly_score.detector == r.sensor)
            ]
            self._series_rules[key] = rules
        return rules

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        """Evaluate one reading; return the alert transitions it causes."""
        events: list[AlertEvent] = []
        for w in self._watches_by_node.get(r.node, ()):
            if (w.sensor is None or w.sensor == r.sensor) and r.ts > w.last_seen:
                silent_since, w.last_seen = w.last_seen, r.ts
                if w.firing:
                    w.firing = False
                    events.append(
                        self._event(w.rule, r.node, w.sensor or "*", "resolved", w.rule.severity, r.value, r.ts, silent_since, r.unit)
                    )
        rules = self._series_rules.get((r.node, r.sensor, r.type))
        if rules is None:
            rules = self._rules_for(r)
        for rule in rules:
            fingerprint = f"{rule.name}/{r.node}/{r.sensor}"
            state = self._states.get(fingerprint)
            if state is None:
                state = self._states[fingerprint] = _AlertState()
            elif state.last_ts is not None and r.ts <= state.last_ts:
                continue
            target = self._target(rule, state, r)
            state.last_value, state.last_ts = r.value, r.ts
            event = self._advance(rule, state, target, r)
            if event:
                events.append(event)
        return events

    def _target(self, rule: CompiledRule, state: _AlertState, r: Reading) -> str | None:
        if rule.type == "Threshold":
            return rule.level(r.value, state.severity)
        if rule.type == "RateOfChange":
            if state.last_ts is None or r.ts <= state.last_ts:
                return state.severity
            rate = abs(r.value - state.last_value) / (r.ts - state.last_ts) * 60.0
            return rule.severity if rate > rule.max_per_minute else None
        if rule.type == "AnomalyScore":
            return rule.severity if r.value > rule.score_above else None
        return None

    def _advance(self, rule: CompiledRule, state: _AlertState, target: str | None, r: Reading) -> AlertEvent | None:
        if target is None:
            since, state.since = state.since, None
            if state.severity is not None:
                previous, state.severity = state.severity, None
                return self._event(rule, r.node, r.sensor, "resolved", previous, r.value, r.ts, since, r.unit)
            return None
        if state.severity is not None:
            if target != state.severity:
                state.severity = target
                return self._event(rule, r.node, r.sensor, "firing", target, r.value, r.ts, state.since, r.unit)
            return None
        # Only a pending alert starts the clock: one restored firing from a snapshot that predates
        # `since` keeps it unknown rather than claiming it began at the restore.
        if state.since is None:
            state.since = r.ts
        if r.ts - state.since >= rule.for_s:
            state.severity = target
            return self._event(rule, r.node, r.sensor, "firing", target, r.value, r.ts, state.since, r.unit)
        return None

    def tick(self, now: float) -> list[AlertEvent]:
        """Advance the clock: absence watches whose node fell silent start firing."""
        events = []
        for w in self._watches:
            silent = now - w.last_seen
            if not w.firing and silent >= w.rule.absence_after_s:
                w.firing = True
                # The value of an absence is the silence, in seconds, as is its threshold (`after`).
                events.append(
                    self._event(w.rule, w.node, w.sensor or "*", "firing", w.rule.severity, round(silent, 3), now, w.last_seen, "s")
                )
        return events

    def snapshot(self) -> dict[str, Any]:
        """The per-series state as plain values (JSON-ready), for a checkpoint.

        An alert is [severity, since, last value, last ts]. Snapshots written before `since` was kept
        while firing hold None there for firing alerts; they restore, and those alerts' events carry
        no `since` (their summaries leave the duration out).
        """
        return {
            "alerts": {fp: [s.severity, s.since, s.last_value, s.last_ts] for fp, s in self._states.items()},
            "watches": {f"{w.rule.name}/{w.node}/{w.sensor or '*'}": [w.last_seen, w.firing] for w in self._watches},
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue from a snapshot; series of the snapshot that this plant no longer has are dropped."""
        for fp, (severity, since, last_value, last_ts) in snapshot["alerts"].items():
            if fp.split("/", 1)[0] in self._compiled:
                self._states[fp] = _AlertState(severity, since, last_value, last_ts)
        for w in self._watches:
            saved = snapshot["watches"].get(f"{w.rule.name}/{w.node}/{w.sensor or '*'}")
            if saved is not None:
                w.last_seen, w.firing = saved

    def firing(self) -> list[str]:
        """The fingerprints (rule/node/sensor) of the alerts firing now, absences included."""
        alerts = [fp for fp, s in self._states.items() if s.severity is not None]
        return alerts + [f"{w.rule.name}/{w.node}/{w.sensor or '*'}" for w in self._watches if w.firing]

    def firing_counts(self) -> dict[tuple[str, str], int]:
        """How many alerts fire now per (rule, severity), absences included."""
        counts: dict[tuple[str, str], int] = {}
        for fp, s in self._states.items():
            if s.severity is not None:
                key = (fp.split("/", 1)[0], s.severity)
                counts[key] = counts.get(key, 0) + 1
        for w in self._watches:
            if w.firing:
                key = (w.rule.name, w.rule.severity)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def silent_nodes(self) -> set[str]:
        """Nodes that an absence rule currently reports as silent."""
        return {w.node for w in self._watches if w.firing}

    def _event(
        self,
        rule: CompiledRule,
        node: str,
        sensor: str,
        state: str,
        severity: str,
        value: float | None,
        ts: float,
        since: float | None,
        unit: str,
    ) -> AlertEvent:
        firing = state == "firing"
        threshold = rule.threshold(severity if firing else None)
        spec = self._nodes[node].spec if node in self._nodes else None
        facts = summaries.Facts(
            rule.name,
            rule.type,
            node,
            sensor,
            state,
            severity,
            value,
            unit,
            threshold,
            "above" if rule.above == firing else "below",
            spec.equipment if spec else None,
            spec.location if spec else None,
            None if since is None else ts - since,
        )
        summary = summaries.render_or_default(rule.summary, facts)
        return AlertEvent(
            f"{rule.name}/{node}/{sensor}", rule.name, node, sensor, state, severity, value, ts, summary, unit, threshold, since
        )
