"""What `plantwatch up --simulate` does to a plant: which fault on which node and sensor, when, for how long.

Pure: the plant and the user's choice (`--scenario`, `--sim-interval`) in, a Plan out, which
plantwatch.sim.fleet publishes. A choice is `KIND[:NODE[/SENSOR]][=VALUE][@START[+DURATION]]`
(docs/simulator.md); without one the default plan exercises the plant's own rules:

- each Threshold rule (the first MAX_RULE_EXCURSIONS) gets an excursion on the first sensor it
  selects: the value ramps past the rule's levels one by one in the rule's direction (down for
  `Below`), holds past the first long enough for the rule's `for`, and comes back, so the alert
  fires, escalates and resolves;
- with an Absence rule, one node it watches falls silent for the rule's `after` plus
  SILENCE_BEYOND_S, so the absence alert fires and resolves;
- bad payloads go out at a rate that stays a small fraction of the readings.

Every series rests on the good side of the rules that watch it (a user's rule whose level
sits below the sensor type's usual value would otherwise fire from the first reading).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from plantwatch.plant.load import Plant, rule_selects
from plantwatch.plant.model import SensorNode, duration_seconds
from plantwatch.rules.engine import CompiledRule

#: Typical operating values by sensor type (a plant at rest), and their noise.
BASELINES = {
    "temperature": (45.0, 0.5),
    "humidity": (45.0, 2.0),
    "pressure": (1013.0, 3.0),
    "vibration": (1.5, 0.3),
    "current": (12.0, 1.0),
    "voltage": (3.7, 0.05),
    "noise": (65.0, 3.0),
    "speed": (1450.0, 20.0),
}

#: Every fault kind and what it does, as `up`'s help and docs/simulator.md say it.
KINDS = {
    "excursion": "the value ramps past a Threshold rule's levels in the rule's direction, holds, and comes back (alias: overheat)",
    "silence": "the node publishes nothing",
    "bad": "malformed or invalid messages, in turn: bad JSON, out of range, NaN, a wrong device id, an unknown topic",
    "drift": "the value creeps away from its resting value, VALUE per minute",
    "dropouts": "a fraction VALUE (default 0.3) of the readings is not sent",
    "skew": "timestamps are VALUE seconds off (default 600: ahead, past the gateway's --max-future-seconds)",
    "duplicates": "a fraction VALUE (default 1) of the messages is sent twice",
}
ALIASES = {"overheat": "excursion"}
#: Kinds that may name a sensor; the others act on a node's whole messages.
SENSOR_KINDS = ("excursion", "drift", "dropouts")
SYNTAX = "KIND[:NODE[/SENSOR]][=VALUE][@START[+DURATION]]"
#: How many Threshold rules the default plan exercises.
MAX_RULE_EXCURSIONS = 3
#: Seconds a default silence lasts beyond the Absence rule's `after`: the alert fires, then resolves.
SILENCE_BEYOND_S = 30.0
#: The default plan's first excursion starts here, the next ones this far apart.
FIRST_EXCURSION_S = 3.0
STAGGER_S = 3.0
#: When a fault starts without @START.
DEFAULT_START_S = {"bad": 2.0, "silence": 4.0}
#: At most one bad message per this many readings, and never more than one per BAD_EVERY_MIN_S.
READINGS_PER_BAD = 10
BAD_EVERY_MIN_S = 2.0

_CHOICE = re.compile(
    r"(?P<kind>[a-z-]+)(?::(?P<node>[^/=@]+)(?:/(?P<sensor>[^=@]+))?)?(?:=(?P<value>[^@]+))?(?:@(?P<start>[^+]+)(?:\+(?P<duration>.+))?)?"
)


class ScenarioError(ValueError):
    """A choice that cannot be planned: what was wrong and what is accepted, in one line."""


@dataclass(frozen=True)
class Interval:
    """How long a node waits between readings: its heartbeat (low None), or low..high seconds at random."""

    low: float | None = None
    high: float | None = None

    def bounds(self, heartbeat_s: float) -> tuple[float, float]:
        return (heartbeat_s, heartbeat_s) if self.low is None else (self.low, self.high)

    def describe(self) -> str:
        if self.low is None:
            return "each node at its heartbeat interval"
        if self.low == self.high:
            return f"every node every {self.low:g}s"
        return f"every node at random intervals of {self.low:g}-{self.high:g}s"


def parse_interval(text: str) -> Interval:
    """`heartbeat`, `SECONDS` or `random:MIN-MAX`; ValueError naming the accepted forms."""
    accepted = "accepted: heartbeat (each node's own), SECONDS (e.g. 2), random:MIN-MAX (e.g. random:1-10)"
    if text == "heartbeat":
        return Interval()
    m = re.fullmatch(r"random:([0-9.]+)-([0-9.]+)", text)
    try:
        low, high = (float(m[1]), float(m[2])) if m else (float(text), float(text))
    except ValueError:
        raise ValueError(f"{text!r} is no interval; {accepted}") from None
    if not (math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"{text!r}: seconds must be > 0 (and MIN <= MAX); {accepted}")
    return Interval(low, high)


@dataclass(frozen=True)
class Fault:
    """One fault on one node (None: every node) and sensor (None: the node's whole messages)."""

    kind: str
    node: str | None
    sensor: str | None
    start_s: float
    #: None: until the run ends.
    end_s: float | None
    #: The kind's VALUE: drift per minute, dropouts' and duplicates' fraction, skew's seconds, bad's seconds between messages.
    amount: float | None = None
    #: An excursion's (seconds after start_s, mean value) corners, linear between.
    path: tuple[tuple[float, float], ...] = ()
    #: An excursion's noise: small enough that a value held past a level stays past it.
    noise: float = 0.0
    #: What the fault is for, as the banner says it (the rule it fires).
    why: str = ""

    def active(self, t: float) -> bool:
        return t >= self.start_s and (self.end_s is None or t < self.end_s)

    def on(self, node: str, sensor: str | None = None) -> bool:
        return (self.node is None or self.node == node) and (self.sensor is None or sensor is None or self.sensor == sensor)

    def describe(self) -> str:
        where = "every node" if self.node is None else self.node + (f"/{self.sensor}" if self.sensor else "")
        when = f"from {self.start_s:g}s " + (f"to {self.end_s:g}s" if self.end_s is not None else "on")
        what = {
            "excursion": lambda: " -> ".join(
                f"{round(v, 2):g}" for i, (_, v) in enumerate(self.path) if i == 0 or v != self.path[i - 1][1]
            ),
            "silence": lambda: "publishes nothing",
            "bad": lambda: f"one bad message every {self.amount:g}s",
            "drift": lambda: f"{self.amount:+g} per minute",
            "dropouts": lambda: f"{self.amount:.0%} of readings not sent",
            "skew": lambda: f"timestamps {abs(self.amount):g}s {'ahead' if self.amount >= 0 else 'behind'}",
            "duplicates": lambda: f"{self.amount:.0%} of messages sent twice",
        }[self.kind]()
        return f"{self.kind} on {where} {when}: {what}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class Plan:
    """The faults, the intervals between readings, and every series' resting (mean, noise)."""

    faults: tuple[Fault, ...]
    interval: Interval
    resting: Mapping[tuple[str, str], tuple[float, float]]
    #: What the plan could not do (rules it does not exercise), for the banner.
    notes: tuple[str, ...] = ()

    def mean(self, node: str, sensor: str, t: float) -> tuple[float, float]:
        """The series' (mean, noise) at t seconds into the run: resting, or where its excursion and drift take it."""
        mean, noise = self.resting[(node, sensor)]
        for f in self.faults:
            if f.sensor != sensor or f.node != node or not f.active(t):
                continue
            if f.kind == "excursion":
                mean, noise = _along(f.path, t - f.start_s), f.noise
            elif f.kind == "drift":
                mean += f.amount * (t - f.start_s) / 60
        return mean, noise

    def active(self, kind: str, node: str, t: float, sensor: str | None = None) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind and f.on(node, sensor) and f.active(t)), None)

    def describe(self) -> list[str]:
        lines = [f.describe() for f in self.faults] or ["no faults: clean readings"]
        return [*lines, f"readings from {self.interval.describe()}", *self.notes]


def _along(path: tuple[tuple[float, float], ...], t: float) -> float:
    for (t0, v0), (t1, v1) in zip(path, path[1:]):
        if t < t1:
            return v0 + (v1 - v0) * max(t - t0, 0) / (t1 - t0)
    return path[-1][1]


def baseline(sensor) -> tuple[float, float]:
    """A sensor's usual (mean, noise): its type's, or 30% up its range when the type's is outside it."""
    mean, noise = BASELINES.get(sensor.type, (None, None))
    if sensor.range is not None:
        low, high = float(sensor.range.min), float(sensor.range.max)
        if mean is None or not low <= mean <= high:
            mean, noise = low + (high - low) * 0.3, (high - low) * 0.01
    return (mean if mean is not None else 1.0), (noise if noise is not None else 0.1)


def _numeric(node: SensorNode):
    return [s for s in node.spec.sensors if s.type != "image"]


def _range(sensor) -> tuple[float, float]:
    return (float(sensor.range.min), float(sensor.range.max)) if sensor.range is not None else (-math.inf, math.inf)


def _thresholds(plant: Plant, node: SensorNode, sensor) -> list[CompiledRule]:
    return [
        CompiledRule.of(r, {})
        for r in plant.rules
        if r.spec.condition.type == "Threshold" and rule_selects(r, node, sensor.name, sensor.type)
    ]


def resting(plant: Plant, node: SensorNode, sensor) -> tuple[float, float]:
    """The sensor's baseline, moved (and its noise narrowed) to the good side of every Threshold rule that watches it."""
    mean, noise = baseline(sensor)
    ok_low, ok_high = _range(sensor)
    for rule in _thresholds(plant, node, sensor):
        first = rule.levels[0][1]
        if rule.above:
            ok_high = min(ok_high, first - rule.hysteresis)
        else:
            ok_low = max(ok_low, first + rule.hysteresis)

    def fits(m: float, n: float) -> bool:
        return ok_low + 4 * n < m < ok_high - 4 * n

    if fits(mean, noise):
        return mean, noise
    if mean >= ok_high - 4 * noise:
        mean = ok_high - max(5 * noise, 0.1 * abs(ok_high))
    else:
        mean = ok_low + max(5 * noise, 0.1 * abs(ok_low))
    if fits(mean, noise) or not (math.isfinite(ok_low) and math.isfinite(ok_high) and ok_low < ok_high):
        return mean, noise  # rules that leave no good side are the user's to see fire
    return (ok_low + ok_high) / 2, min(noise, (ok_high - ok_low) / 12)


def _excursion(rule: CompiledRule, rest: tuple[float, float], sensor, interval_s: float) -> tuple[tuple, float, list[str]]:
    """(path, noise, levels passed) past the rule's levels that the sensor's range can hold, one hold each.

    The first level is held for the rule's `for` plus three readings (the alert fires at the
    first reading after `for`); each further level for three readings (escalation is immediate).
    """
    mean, noise = rest
    low, high = _range(sensor)
    sign = 1 if rule.above else -1
    levels = sorted(((name, v) for name, v in rule.levels if low <= v <= high), key=lambda lv: sign * lv[1])
    if not levels:
        return (), noise, []
    top = levels[-1][1]
    margin = max(4 * noise, 0.05 * abs(top - mean))
    ramp, hold = max(2.0, 2 * interval_s), 3 * interval_s
    path, t, held = [(0.0, mean)], 0.0, noise
    for i, (_, level) in enumerate(levels):
        room = abs(levels[i + 1][1] - level) / 2 if i + 1 < len(levels) else margin
        value = min(max(level + sign * min(margin, room), low), high)
        held = min(held, abs(value - level) / 4)
        t += ramp
        path.append((t, value))
        t += hold + (rule.for_s if i == 0 else 0)
        path.append((t, value))
    path.append((t + ramp, mean))
    return tuple(path), held, [f"{name} {v:g}" for name, v in levels]


def _peak_path(rest: float, peak: float, hold_s: float) -> tuple[tuple[float, float], ...]:
    return ((0.0, rest), (5.0, peak), (5.0 + hold_s, peak), (10.0 + hold_s, rest))


def _seconds(text: str, what: str, choice: str) -> float:
    try:
        value = float(text)
    except ValueError:
        try:
            value = float(duration_seconds(text))
        except ValueError:
            raise ScenarioError(f"--scenario {choice!r}: {what} {text!r}: expected seconds (5, 2.5) or a duration (30s, 1m30s)") from None
    if not (math.isfinite(value) and value >= 0):
        raise ScenarioError(f"--scenario {choice!r}: {what} {text!r} must be >= 0 seconds")
    return value


class _Planner:
    def __init__(self, plant: Plant, interval: Interval):
        self.plant, self.interval = plant, interval
        self.nodes = {n.name: n for n in plant.nodes}
        self.resting = {(n.name, s.name): resting(plant, n, s) for n in plant.nodes for s in _numeric(n)}
        #: Per series, when its last excursion ends: a second one waits for it.
        self.busy: dict[tuple[str, str], float] = {}
        self.notes: list[str] = []

    def slowest(self, node: SensorNode) -> float:
        return self.interval.bounds(duration_seconds(node.spec.heartbeat.interval))[1]

    def watched(self, node: SensorNode) -> list:
        """The node's sensors some Threshold rule watches, in the node's order; else all its numeric ones."""
        return [s for s in _numeric(node) if _thresholds(self.plant, node, s)] or _numeric(node)

    def first_numeric(self, node: SensorNode, choice: str):
        """The sensor a choice naming only `node` acts on; ScenarioError for a node with no values (a camera)."""
        if not (sensors := self.watched(node)):
            raise ScenarioError(f"--scenario {choice!r}: {node.name} has no sensor with values (only images); name another node")
        return sensors[0]

    def excursion(
        self, node: SensorNode, sensor, start: float, duration: float | None, peak: float | None, rule: CompiledRule | None = None
    ) -> Fault:
        """Past `rule`'s levels (default: the first Threshold rule watching the series), or up to `peak`, and back."""
        rest = self.resting[(node.name, sensor.name)]
        rules = [rule] if rule else _thresholds(self.plant, node, sensor)
        path, noise, why = (), rest[1], ""
        if rules and peak is None:
            path, noise, passed = _excursion(rules[0], rest, sensor, self.slowest(node))
            why = f"fires {rules[0].name}: {', '.join(passed)}" + (f", for {rules[0].for_s:g}s" if rules[0].for_s else "")
        if not path:
            low, high = _range(sensor)
            span = high - low if math.isfinite(high - low) else 20 * rest[1]
            target = peak if peak is not None else min(rest[0] + 0.3 * span, high)
            hold = max(5.0, (rules[0].for_s if rules else 0) + 3 * self.slowest(node))
            path = _peak_path(rest[0], target, hold)
            why = f"past {rules[0].name}'s levels" if rules and peak is not None else ""
        if duration is not None:
            scale = duration / path[-1][0]
            path = tuple((t * scale, v) for t, v in path)
            if rules and path[2][0] - path[1][0] < rules[0].for_s:
                why += f"; too short to hold past the first level for {rules[0].name}'s for ({rules[0].for_s:g}s)"
        start = max(start, self.busy.get((node.name, sensor.name), 0.0))
        end = start + path[-1][0]
        self.busy[(node.name, sensor.name)] = end + 2.0
        return Fault("excursion", node.name, sensor.name, start, end, path=path, noise=noise, why=why)

    def rule_excursions(self, start: float) -> list[Fault]:
        """One excursion per Threshold rule (the first MAX_RULE_EXCURSIONS), on its first sensor not already taken."""
        faults, skipped = [], []
        for rule in (r for r in self.plant.rules if r.spec.condition.type == "Threshold"):
            series = [(n, s) for n in self.plant.nodes for s in _numeric(n) if rule_selects(rule, n, s.name, s.type)]
            if not series:
                self.notes.append(f"rule {rule.name} selects no sensor of the plant: nothing to exercise")
                continue
            if len(faults) == MAX_RULE_EXCURSIONS:
                skipped.append(rule.name)
                continue
            taken = {(f.node, f.sensor) for f in faults}
            node, sensor = next(((n, s) for n, s in series if (n.name, s.name) not in taken), series[0])
            compiled = CompiledRule.of(rule, {})
            if not _excursion(compiled, self.resting[(node.name, sensor.name)], sensor, self.slowest(node))[0]:
                self.notes.append(f"rule {rule.name}: no level within {node.name}/{sensor.name}'s range: nothing to exercise")
                continue
            faults.append(self.excursion(node, sensor, start + STAGGER_S * len(faults), None, None, compiled))
        if skipped:
            rest = ", ".join(skipped)
            self.notes.append(f"not exercised (the default takes {MAX_RULE_EXCURSIONS} rules): {rest}; name them with --scenario")
        return faults

    def silence_default(self, start: float, excursions: Sequence[Fault]) -> Fault | None:
        """The last node an Absence rule watches, preferring one without an excursion; None without an Absence rule."""
        absence = [r for r in self.plant.rules if r.spec.condition.type == "Absence"]
        watched = [(n, r) for n in self.plant.nodes for r in absence if any(rule_selects(r, n, s.name, s.type) for s in n.spec.sensors)]
        if not watched:
            return None
        busy = {f.node: f.end_s for f in excursions}
        node, rule = next(((n, r) for n, r in reversed(watched) if n.name not in busy), watched[-1])
        start = max(start, busy.get(node.name, 0.0) + 2.0)
        after = duration_seconds(rule.spec.condition.absence.after)
        why = f"fires {rule.name} after {after:g}s, then resolves"
        return Fault("silence", node.name, None, start, start + after + SILENCE_BEYOND_S, why=why)

    def bad_every(self) -> float:
        """Seconds between bad messages: one per READINGS_PER_BAD readings the plant sends, at most one per BAD_EVERY_MIN_S."""
        per_s = sum(len(_numeric(n)) * 2 / sum(self.interval.bounds(duration_seconds(n.spec.heartbeat.interval))) for n in self.plant.nodes)
        return round(max(BAD_EVERY_MIN_S, READINGS_PER_BAD / per_s if per_s else BAD_EVERY_MIN_S), 1)

    def default(self) -> list[Fault]:
        excursions = self.rule_excursions(FIRST_EXCURSION_S)
        silence = self.silence_default(DEFAULT_START_S["silence"], excursions)
        bad = Fault("bad", None, None, DEFAULT_START_S["bad"], None, amount=self.bad_every())
        return [*excursions, *([silence] if silence else []), bad]

    def choice(self, text: str) -> list[Fault]:
        m = _CHOICE.fullmatch(text)
        if m is None:
            raise ScenarioError(f"--scenario {text!r}: expected {SYNTAX}, e.g. excursion:press-1/temperature@5+30, silence:press-1@10")
        kind = ALIASES.get(m["kind"], m["kind"])
        if kind not in KINDS:
            accepted = ", ".join([*KINDS, *ALIASES, "default", "none"])
            raise ScenarioError(f"--scenario {text!r}: unknown kind {m['kind']!r}; accepted: {accepted}")
        node = sensor = None
        if m["node"] is not None:
            node = self.nodes.get(m["node"])
            if node is None:
                raise ScenarioError(f"--scenario {text!r}: no SensorNode {m['node']!r} in the plant; its nodes: {', '.join(self.nodes)}")
        if m["sensor"] is not None:
            if kind not in SENSOR_KINDS:
                raise ScenarioError(
                    f"--scenario {text!r}: {kind} acts on a node's whole messages, not one sensor; "
                    f"name the node only ({kind}:{node.name}), or use {', '.join(SENSOR_KINDS)} for a sensor"
                )
            sensor = next((s for s in _numeric(node) if s.name == m["sensor"]), None)
            if sensor is None:
                names = ", ".join(s.name for s in _numeric(node))
                raise ScenarioError(f"--scenario {text!r}: node {node.name} has no sensor {m['sensor']!r}; its sensors: {names}")
        value = None
        if m["value"] is not None:
            try:
                value = float(m["value"])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ScenarioError(f"--scenario {text!r}: VALUE {m['value']!r} is not a number")
            if kind in ("dropouts", "duplicates") and not 0 < value <= 1:
                raise ScenarioError(f"--scenario {text!r}: the VALUE of {kind} is the fraction affected, > 0 and <= 1; got {m['value']}")
            if kind == "bad" and value <= 0:
                raise ScenarioError(f"--scenario {text!r}: the VALUE of bad is the seconds between bad messages, > 0; got {m['value']}")
            if kind == "silence":
                raise ScenarioError(f"--scenario {text!r}: silence takes no VALUE")
        start = _seconds(m["start"], "START", text) if m["start"] is not None else DEFAULT_START_S.get(kind, FIRST_EXCURSION_S)
        duration = _seconds(m["duration"], "DURATION", text) if m["duration"] is not None else None
        if duration == 0:
            raise ScenarioError(f"--scenario {text!r}: DURATION must be > 0 seconds")
        end = start + duration if duration is not None else None
        if kind == "excursion":
            if node is None:
                if value is not None or duration is not None:
                    raise ScenarioError(f"--scenario {text!r}: name the NODE/SENSOR an excursion with a VALUE or DURATION is on")
                return self.rule_excursions(start)
            return [self.excursion(node, sensor or self.first_numeric(node, text), start, duration, value)]
        if kind == "silence":
            if node is None:
                found = self.silence_default(start, ())
                node = self.nodes[found.node] if found else self.plant.nodes[-1]
            return [Fault("silence", node.name, None, start, end)]
        if kind == "drift":
            if node is None:
                node = next((n for n in self.plant.nodes if _numeric(n)), None)
                if node is None:
                    raise ScenarioError(f"--scenario {text!r}: no sensor of the plant has values to drift")
            sensor = sensor or self.first_numeric(node, text)
            return [Fault("drift", node.name, sensor.name, start, end, amount=value if value is not None else self._drift(node, sensor))]
        default = {"bad": self.bad_every(), "dropouts": 0.3, "skew": 600.0, "duplicates": 1.0}[kind]
        amount = value if value is not None else default
        return [Fault(kind, node.name if node else None, sensor.name if sensor else None, start, end, amount=amount)]

    def _drift(self, node: SensorNode, sensor) -> float:
        """5% of the range (or ten noises) per minute, towards the first watching rule's levels (up without one)."""
        low, high = _range(sensor)
        rules = _thresholds(self.plant, node, sensor)
        size = 0.05 * (high - low) if math.isfinite(high - low) else 10 * self.resting[(node.name, sensor.name)][1]
        return size if not rules or rules[0].above else -size


def plan(plant: Plant, choices: Sequence[str] | None = None, interval: str | Interval = "heartbeat") -> Plan:
    """The Plan for `--scenario` choices (None or empty: the default; `none`: clean readings); ScenarioError, ValueError in words."""
    iv = parse_interval(interval) if isinstance(interval, str) else interval
    planner = _Planner(plant, iv)
    choices = list(choices or ["default"])
    if "none" in choices:
        if len(choices) > 1:
            raise ScenarioError(f"--scenario none means clean readings: it cannot go with {', '.join(c for c in choices if c != 'none')}")
        return Plan((), iv, planner.resting)
    faults: list[Fault] = []
    for text in choices:
        faults += planner.default() if text == "default" else planner.choice(text)
    return Plan(tuple(faults), iv, planner.resting, tuple(planner.notes))
