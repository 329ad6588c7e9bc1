"""Backtest: what alert rules would have done over a store's history, before they are applied.

`plantwatch rules backtest -f plant/ -f tuned-rule.yaml --store plant.db` replays the stored
readings of the series the rules select through a fresh RuleEngine (the live gateway's, see
engine.py), in timestamp order, and feeds the events it emits to the live notifier
(alerts/notifier.py) on a throwaway store, with event time as its clock. What comes out is
what the live path would have done: each alert episode (when it fired, its severity path,
when it resolved) and the notifications each receiver would have been sent (firing,
repeat, escalation, resolved), after grouping, group wait and interval, repeats,
escalation tiers, inhibition among the tried rules and the nodes' maintenance windows.
Silences are not applied: they are live state of the store, not part of the plant.

How the replay follows the live path, and where it cannot:
- Readings are streamed per series through the store's primary key (node, sensor, ts), a
  page at a time, and merged by timestamp: memory stays bounded whatever the store holds.
- The engine starts empty at the start of the range: an alert already firing then fires
  again at its first reading, and `for` counts from the first reading of the range.
- Absence rules fire exactly `after` past a watch's last reading (or past the start of the
  range); the gateway checks every half second, so live times are up to that much later.
  Between readings the engine is ticked only when a watch falls due, so a month of history
  costs a tick per silence, not one per second.
- The notifier is stepped at each event and at each time its state says something falls
  due (a group's wait or interval, a repeat, an escalation tier, a maintenance window's
  edge); the live notifier steps every 0.2 s, so its messages go out within that of these.
- Only the tried rules run: a critical alert of a rule left out does not inhibit them.

Pure parts (episodes, due times, the report) are separate from the store reading and the
throwaway notifier (`backtest`).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantwatch.alerts.lifecycle import Alert, Group, ReceiverRouting, RuleRouting, Told
from plantwatch.alerts.notification import Notification
from plantwatch.alerts.notifier import Notifier
from plantwatch.contracts.times import iso, parse_timestamp
from plantwatch.plant.load import Plant, PlantError, manifest_files, plant_from_documents, plant_series, read_manifests, rule_selects
from plantwatch.plant.model import duration_seconds, is_plantwatch
from plantwatch.readings import AlertEvent, Reading
from plantwatch.rules.engine import RuleEngine
from plantwatch.store.alert_state import AlertState
from plantwatch.store.sqlite import SqliteStore

#: Notification kinds, in the order reports show them.
KINDS = ("firing", "repeat", "escalation", "resolved")
#: Readings held in memory at once, over all series (each series pages through the store).
ROWS_IN_MEMORY = 200_000
#: The store's columns a backtest reads.
READING_COLUMNS = ("node", "sensor", "ts", "type", "value", "unit")
STORE_HELP = "the SQLite file of `plantwatch up --db` or of the gateway (`serve ingest --db`)"


class BacktestError(ValueError):
    """The backtest cannot run; the message (one line) says what was wrong and what is accepted."""


# --- the plant: later files replace rules of the same name ---


def load_plant(paths: Iterable[str | Path]) -> tuple[Plant, dict[str, str]]:
    """The plant of the files, in order, where an AlertRule replaces an earlier one of the same name;
    with {replaced rule name: the file it now comes from}."""
    docs: list[tuple[str, Any]] = []
    problems: list[str] = []
    for f in manifest_files(paths):
        found, wrong = read_manifests(f)
        problems.extend(wrong)
        docs.extend(found or ())
    if problems:
        raise PlantError(problems)
    rules: dict[str, int] = {}
    replaced: dict[str, str] = {}
    kept: list[tuple[str, Any] | None] = []
    for where, doc in docs:
        if isinstance(doc, dict) and is_plantwatch(doc) and doc.get("kind") == "AlertRule":
            name = (doc.get("metadata") or {}).get("name")
            if name in rules:
                kept[rules[name]] = None
                replaced[name] = where
            rules[name] = len(kept)
        kept.append((where, doc))
    plant = plant_from_documents(d for d in kept if d is not None)
    if not plant.nodes:
        raise BacktestError(
            "the files hold no SensorNode: give the plant with the rule (-f plant/ -f rule.yaml), a rule selects its nodes' series"
        )
    if not plant.rules:
        raise BacktestError("the files hold no AlertRule to try (-f plant/ -f rule.yaml)")
    return plant, replaced


def choose(plant: Plant, names: Iterable[str]) -> Plant:
    """The plant with only the named rules (none named: all of them)."""
    names = list(names)
    if not names:
        return plant
    known = {r.name for r in plant.rules}
    if unknown := [n for n in names if n not in known]:
        raise BacktestError(f"--rule {', '.join(unknown)}: no such AlertRule in the files (rules: {', '.join(sorted(known))})")
    return dataclasses.replace(plant, rules=tuple(r for r in plant.rules if r.name in names))


# --- episodes (pure) ---


@dataclass
class Episode:
    """One alert episode: from its first firing event to its resolve (None: still firing at the end)."""

    fingerprint: str
    rule: str
    node: str
    sensor: str
    #: When it fired, and when its condition started to hold (`for` before that).
    started: float
    since: float | None
    #: (when, severity) of the firing and each change of level.
    path: list[tuple[float, str]]
    resolved: float | None = None

    def duration(self, end: float) -> float:
        return (self.resolved if self.resolved is not None else end) - self.started

    def events(self) -> list[tuple[str, str, str, float]]:
        """(fingerprint, state, severity, ts) of the events that made it, as the store's alert_events holds them."""
        out = [(self.fingerprint, "firing", severity, ts) for ts, severity in self.path]
        if self.resolved is not None:
            out.append((self.fingerprint, "resolved", self.path[-1][1], self.resolved))
        return out


class Episodes:
    """Folds alert events (in time order) into episodes."""

    def __init__(self) -> None:
        self.closed: list[Episode] = []
        self._open: dict[str, Episode] = {}

    def add(self, events: Iterable[AlertEvent]) -> None:
        for e in events:
            current = self._open.get(e.fingerprint)
            if e.state == "firing":
                if current is None:
                    self._open[e.fingerprint] = Episode(e.fingerprint, e.rule, e.node, e.sensor, e.ts, e.since, [(e.ts, e.severity)])
                else:
                    current.path.append((e.ts, e.severity))
            elif current is not None:
                current.resolved = e.ts
                self.closed.append(self._open.pop(e.fingerprint))

    def all(self) -> list[Episode]:
        return sorted([*self.closed, *self._open.values()], key=lambda e: (e.rule, e.started, e.fingerprint))


# --- when something falls due (pure) ---


def later(base: float, delta: float) -> float:
    """The first time t with t - base >= delta: base + delta, past any rounding, so that a check
    `now - base >= delta` made at it holds (the engine's absence, the lifecycle's repeats and tiers)."""
    t = base + delta
    while t - base < delta:
        t = math.nextafter(t, math.inf)
    return t


def notifier_due(
    now: float,
    alerts: Iterable[Alert],
    told: Mapping[tuple[str, str, float], Told],
    groups: Mapping[tuple[str, str], Group],
    rules: Mapping[str, RuleRouting],
    receivers: Mapping[str, ReceiverRouting],
    windows: Mapping[str, list[tuple[float, float]]],
) -> float | None:
    """The next time after `now` at which the lifecycle (alerts/lifecycle.py) may decide something
    without a new event: a waiting group's wait or interval, a repeat, an escalation tier, or the
    edge of a maintenance window of a node with a firing alert. None: nothing until the next event."""
    times = []
    for g in groups.values():
        cfg = receivers.get(g.receiver)
        if g.pending_since is not None and cfg is not None:
            times.append(g.pending_since + cfg.wait_s if g.last_sent is None else max(g.pending_since, g.last_sent + cfg.interval_s))
    firing = {(a.fingerprint, a.starts_at): a for a in alerts if a.status == "firing"}
    for t in told.values():
        a = firing.get((t.fingerprint, t.starts_at))
        cfg = receivers.get(t.receiver)
        if a is None or cfg is None or t.severity is None or t.resolved or a.rule not in rules:
            continue
        times.append(later(t.last_sent, cfg.resend_s if cfg.resend_s is not None else rules[a.rule].repeat_s))
    for a in firing.values():
        if a.rule in rules:
            times.extend(later(a.starts_at, after) for after, _ in rules[a.rule].escalation)
        times.extend(edge for start, end in windows.get(a.node, ()) for edge in (start, end))
    return min((t for t in times if t > now), default=None)


class AbsenceClock:
    """When the engine's absence watches fall due: a watch fires at its last reading + `after`.

    Mirrors the engine's watches from their snapshot keys (rule/node/sensor, `*`: any sensor of
    the node), told of every reading fed to the engine and of every absence that fired, so the
    replay ticks the engine only at those times. A heap holds each quiet watch once; a reading
    only moves its watch's last time, and a stale heap entry is pushed back when it surfaces.
    """

    def __init__(self, watch_keys: Iterable[str], after_s: Mapping[str, float], start: float):
        self._after: dict[str, float] = {}
        self._by_series: dict[tuple[str, str], list[str]] = {}
        self._by_node: dict[str, list[str]] = {}
        for key in watch_keys:
            rule, node, sensor = key.split("/", 2)
            self._after[key] = after_s[rule]
            (self._by_node.setdefault(node, []) if sensor == "*" else self._by_series.setdefault((node, sensor), [])).append(key)
        self._last = dict.fromkeys(self._after, start)
        self._fired: set[str] = set()
        self._heap = [(later(start, after), key) for key, after in self._after.items()]
        heapq.heapify(self._heap)
        #: Watches per series, node-wide ones included (filled as series appear).
        self._watching: dict[tuple[str, str], list[str]] = {}

    def __bool__(self) -> bool:
        return bool(self._after)

    def seen(self, node: str, sensor: str, ts: float) -> None:
        keys = self._watching.get((node, sensor))
        if keys is None:
            keys = self._watching[(node, sensor)] = self._by_series.get((node, sensor), []) + self._by_node.get(node, [])
        for key in keys:
            if ts > self._last[key]:
                self._last[key] = ts
                if key in self._fired:
                    self._fired.discard(key)
                    heapq.heappush(self._heap, (later(ts, self._after[key]), key))

    def due_before(self, limit: float, inclusive: bool = False) -> float | None:
        """The earliest time before `limit` (or at it) that a quiet watch falls due; None if none does.

        A heap entry's time is a lower bound of its watch's (readings only move it later), so only
        entries that would otherwise fall due are brought up to date: a reading costs one comparison.
        """
        heap = self._heap
        while heap and (heap[0][0] < limit or inclusive and heap[0][0] == limit):
            due, key = heap[0]
            actual = later(self._last[key], self._after[key])
            if actual == due:
                return due
            heapq.heapreplace(heap, (actual, key))
        return None

    def ticked(self, now: float, events: Iterable[AlertEvent]) -> None:
        """The engine was ticked at `now`: the watches due then fired (events name them)."""
        for e in events:
            if e.fingerprint in self._after and e.state == "firing":
                self._fired.add(e.fingerprint)
        quiet = []
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            if key not in self._fired:  # a stale entry: its watch heard a reading since
                quiet.append((later(self._last[key], self._after[key]), key))
        for entry in quiet:
            heapq.heappush(self._heap, entry)


# --- the report (pure) ---


@dataclass
class RuleReport:
    name: str
    #: Stored series the rule selects.
    series: int
    episodes: list[Episode] = field(default_factory=list)


@dataclass
class Report:
    start: float
    end: float
    readings: int
    series: int
    rules: list[RuleReport]
    #: receiver → kind → notifications the receiver would have been sent.
    notifications: dict[str, dict[str, int]]
    #: rule name → the file whose version was tried instead of the plant's.
    replaced: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": iso(self.start),
            "to": iso(self.end),
            "readings": self.readings,
            "series": self.series,
            "rules": [
                {
                    "name": r.name,
                    "series": r.series,
                    "replaces_plant_rule_from": self.replaced.get(r.name),
                    "episodes": [
                        {
                            "fingerprint": e.fingerprint,
                            "node": e.node,
                            "sensor": e.sensor,
                            "severities": [{"at": iso(ts), "severity": s} for ts, s in e.path],
                            "since": None if e.since is None else iso(e.since),
                            "started": iso(e.started),
                            "resolved": None if e.resolved is None else iso(e.resolved),
                            "firing_at_end": e.resolved is None,
                            "duration_s": round(e.duration(self.end), 3),
                        }
                        for e in r.episodes
                    ],
                    "totals": {"episodes": len(r.episodes), "firing_s": round(sum(e.duration(self.end) for e in r.episodes), 3)},
                }
                for r in self.rules
            ],
            "notifications": {rcv: {k: kinds.get(k, 0) for k in KINDS} for rcv, kinds in sorted(self.notifications.items())},
            "silences_applied": False,
        }


def duration_text(seconds: float) -> str:
    s = round(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(h) + [f"{m}m"] * bool(m) + [f"{s}s"] * bool(s)
    return " ".join(parts[:2]) or ("0s" if seconds == 0 else f"{seconds:.3g}s")


def render(report: Report) -> str:
    """The report as a table for people."""
    out = [
        f"backtest {iso(report.start)} .. {iso(report.end)} ({duration_text(report.end - report.start)}): "
        f"{report.readings} readings of {report.series} series"
    ]
    for r in report.rules:
        firing = sum(e.duration(report.end) for e in r.episodes)
        source = f", from {report.replaced[r.name]}" if r.name in report.replaced else ""
        out.append("")
        out.append(f"AlertRule {r.name} ({r.series} series{source}): {len(r.episodes)} episodes, firing {duration_text(firing)} in all")
        if not r.episodes:
            continue
        rows = [("NODE/SENSOR", "SEVERITY", "STARTED", "RESOLVED", "DURATION")]
        for e in r.episodes:
            path = "→".join(s for i, (_, s) in enumerate(e.path) if i == 0 or s != e.path[i - 1][1])
            resolved = iso(e.resolved) if e.resolved is not None else "firing at end"
            rows.append((f"{e.node}/{e.sensor}", path, iso(e.started), resolved, duration_text(e.duration(report.end))))
        out.extend("  " + line for line in _table(rows))
    out.append("")
    out.append("notifications each receiver would have been sent (maintenance windows applied, silences not):")
    rows = [("RECEIVER", *(k.upper() for k in KINDS), "TOTAL")]
    for rcv, kinds in sorted(report.notifications.items()):
        counts = [kinds.get(k, 0) for k in KINDS]
        rows.append((rcv, *map(str, counts), str(sum(counts))))
    out.extend("  " + line for line in _table(rows) if len(rows) > 1)
    if len(rows) == 1:
        out.append("  none")
    return "\n".join(out) + "\n"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# --- the replay (I/O) ---


def open_store(path: str | Path) -> sqlite3.Connection:
    """The store, read-only; BacktestError if it is no Plantwatch store."""
    p = Path(path)
    if not p.is_file():
        raise BacktestError(f"--store {path}: no such file; give {STORE_HELP}")
    db = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(readings)")}
    except sqlite3.DatabaseError as exc:
        db.close()
        raise BacktestError(f"--store {path}: not a Plantwatch store ({exc}); give {STORE_HELP}") from None
    if not set(READING_COLUMNS) <= columns:
        db.close()
        raise BacktestError(
            f"--store {path}: not a Plantwatch store: it has no readings table ({', '.join(READING_COLUMNS)}); give {STORE_HELP}"
        )
    return db


def _edge(db: sqlite3.Connection, node: str, sensor: str, last: bool) -> float | None:
    row = db.execute(
        f"SELECT ts FROM readings WHERE node = ? AND sensor = ? ORDER BY ts {'DESC' if last else 'ASC'} LIMIT 1", (node, sensor)
    ).fetchone()
    return row[0] if row else None


def _has_readings(db: sqlite3.Connection, node: str, sensor: str, start: float, end: float) -> bool:
    q = "SELECT 1 FROM readings WHERE node = ? AND sensor = ? AND ts >= ? AND ts <= ? LIMIT 1"
    return db.execute(q, (node, sensor, start, end)).fetchone() is not None


def _pages(db: sqlite3.Connection, node: str, sensor: str, start: float, end: float, page: int) -> Iterator[tuple]:
    """The series' rows (ts, node, sensor, type, value, unit) in [start, end], by ts, `page` at a time."""
    lo, op = start, ">="
    while True:
        rows = db.execute(
            f"SELECT ts, node, sensor, type, value, unit FROM readings WHERE node = ? AND sensor = ? AND ts {op} ? AND ts <= ?"
            " ORDER BY ts LIMIT ?",
            (node, sensor, lo, end, page),
        ).fetchall()
        yield from rows
        if len(rows) < page:
            return
        lo, op = rows[-1][0], ">"


class _Unsent:
    """A receiver a backtest never calls (its notifier delivers nothing)."""

    def __init__(self, name: str):
        self.name, self.kind = name, "backtest"

    def send(self, notification: Notification, timeout: float) -> None:
        raise AssertionError(f"a backtest sends nothing (receiver {self.name})")

    def close(self) -> None:
        pass


class _Notifications:
    """The live notifier over a throwaway store, stepped in event time; it records, it never sends."""

    def __init__(self, plant: Plant, folder: Path):
        path = folder / "backtest.db"
        self.store = SqliteStore(path)
        self.state = AlertState(path, replay=True)
        names = ["console", *(r.name for r in plant.receivers)]
        self.notifier = Notifier(plant, self.state, {n: _Unsent(n) for n in names}, owner="backtest", deliver=False)
        self.windows = {
            n.name: [(parse_timestamp(w.start), parse_timestamp(w.end)) for w in n.spec.maintenance_windows] for n in plant.nodes
        }
        self.due: float | None = None

    def at(self, now: float, events: list[AlertEvent]) -> None:
        """Events at `now`: first what fell due before, then the events as the pipeline stores them, then a step."""
        self.until(now, inclusive=False)
        self.store.write(alerts=events)
        self._step(now)

    def until(self, end: float, inclusive: bool = True) -> None:
        while self.due is not None and (self.due < end or inclusive and self.due == end):
            self._step(self.due)

    def _step(self, now: float) -> None:
        self.notifier.step(now)
        with self.state.tx() as db:
            alerts, told, groups, _ = self.state.for_planning(db)
        self.due = notifier_due(now, alerts, told, groups, self.notifier.rules, self.notifier.routing, self.windows)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for receiver, kind, n in self.store.query("SELECT receiver, kind, count(*) FROM notifications GROUP BY receiver, kind"):
            out.setdefault(receiver, {})[kind] = n
        return out

    def close(self) -> None:
        self.state.close()
        self.store.close()


def backtest(
    plant: Plant, store: str | Path, start: float | None = None, end: float | None = None, replaced: Mapping[str, str] = ()
) -> Report:
    """Replay the store's readings in [start, end] (default: all stored) through the plant's rules."""
    if start is not None and end is not None and start > end:
        raise BacktestError(f"--from {iso(start)} is after --to {iso(end)}: the range must start before it ends")
    db = open_store(store)
    try:
        return _replay(plant, db, str(store), start, end, dict(replaced or {}))
    finally:
        db.close()


def _replay(plant: Plant, db: sqlite3.Connection, where: str, start: float | None, end: float | None, replaced: dict[str, str]) -> Report:
    every = plant_series(plant.nodes, plant.detectors)
    first = {(n.name, s): _edge(db, n.name, s, last=False) for n, s, _ in every}
    stored = {k for k, ts in first.items() if ts is not None}
    if not stored:
        raise BacktestError(f"--store {where}: holds no reading of any SensorNode of the plant ({len(every)} series); give {STORE_HELP}")
    selected: dict[str, set[tuple[str, str]]] = {}
    for rule in plant.rules:
        wanted = {(n.name, s) for n, s, t in every if rule_selects(rule, n, s, t)}
        selected[rule.name] = wanted & stored
        if not selected[rule.name]:
            shown = ", ".join(f"{n}/{s}" for n, s in sorted(wanted)[:5]) + (", ..." if len(wanted) > 5 else "")
            raise BacktestError(
                f"AlertRule {rule.name} matches no stored series: "
                + (f"it selects {shown}, and {where} has no reading of them" if wanted else "its selector matches no series of the plant")
                + f" (the store has readings of {len(stored)} of the plant's series)"
            )
    series = sorted(set().union(*selected.values()))
    start = min(first[k] for k in series) if start is None else start
    end = max(_edge(db, n, s, last=True) for n, s in stored) if end is None else end
    if start > end or not any(_has_readings(db, n, s, start, end) for n, s in series):
        span = f"{iso(min(first[k] for k in series))} to {iso(max(_edge(db, n, s, last=True) for n, s in series))}"
        raise BacktestError(
            f"no readings of the rules' series between {iso(start)} and {iso(end)}, stored from {span}; "
            "give --from/--to within that (RFC 3339 or epoch seconds), or neither for all of it"
        )

    engine = RuleEngine(plant, start)
    absence = {r.name: duration_seconds(r.spec.condition.absence.after) for r in plant.rules if r.spec.condition.type == "Absence"}
    clock = AbsenceClock(engine.snapshot()["watches"], absence, start)
    episodes = Episodes()
    page = max(256, ROWS_IN_MEMORY // len(series))
    rows = heapq.merge(*(_pages(db, n, s, start, end, page) for n, s in series))
    readings = 0
    with tempfile.TemporaryDirectory(prefix="plantwatch-backtest-") as folder:
        notify = _Notifications(plant, Path(folder))
        try:

            def emit(now: float, events: list[AlertEvent]) -> None:
                episodes.add(events)
                notify.at(now, events)

            for ts, node, sensor, type_, value, unit in rows:
                readings += 1
                if clock:
                    while (due := clock.due_before(ts)) is not None:
                        events = engine.tick(due)
                        clock.ticked(due, events)
                        if events:
                            emit(due, events)
                    clock.seen(node, sensor, ts)
                events = engine.on_reading(Reading(node, sensor, type_, value, ts, unit))
                if events:
                    emit(ts, events)
            while clock and (due := clock.due_before(end, inclusive=True)) is not None:
                events = engine.tick(due)
                clock.ticked(due, events)
                if events:
                    emit(due, events)
            notify.until(end)
            counts = notify.counts()
        finally:
            notify.close()

    by_rule: dict[str, list[Episode]] = {}
    for e in episodes.all():
        by_rule.setdefault(e.rule, []).append(e)
    reports = [RuleReport(r.name, len(selected[r.name]), by_rule.get(r.name, [])) for r in plant.rules]
    return Report(start, end, readings, len(series), reports, counts, {k: v for k, v in replaced.items() if k in selected})
