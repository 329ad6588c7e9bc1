"""Per-node data quality (pure): readings out of physical range, Sparkplug sequence breaks and clock skew over a sliding window.

The pipeline shows the ledger every message it could attribute to a node, with what validation made
of it (`observe`); the node status writer (ingest/node_status.py) asks for each node's `Figures` and
turns them into the SensorNode's `InRange`, `Sequential` and `ClockInSync` conditions (`judge`) and
its `status.quality`.

- Out of range: values refused as `out_of_range` against the sensor's declared `range` (in its
  declared unit: the gateway converts none) among all values the node sent for its declared sensors.
- Sequence: Sparkplug B is the only payload format with a sequence number (seq 0..255, +1 per
  message). A message refused as `sequence_gap` (a seq other than the next: messages were lost, so
  the gateway asks for a rebirth; or data before that rebirth) counts as a break; the rate is breaks
  among the node's Sparkplug messages. Other formats carry none: `Sequential` is Unknown for them.
- Clock skew: a message's own timestamp minus the gateway's receive time (positive: the node's
  clock is ahead), median and worst; messages refused as `timestamp_skew` (beyond the gateway's
  --max-future/--max-past policy) count as skewed. A message without a timestamp is stamped on
  receipt and says nothing about the node's clock.

The window is `WINDOW_S` in `BUCKET_S` buckets, so memory per node is bounded: each bucket keeps its
counts and the skews of its first `SKEW_SAMPLES` timestamped messages (at 1 message/s, all of them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

from plantwatch.ingest.validate import CompiledNode, Rejection
from plantwatch.readings import Reading

#: The sliding window the figures cover, and its buckets.
WINDOW_S = 300.0
BUCKET_S = 30.0
#: Skews kept per bucket for the median (the first ones; the worst is tracked over all).
SKEW_SAMPLES = 64
SEQUENCED_FORMATS = frozenset({"sparkplug-b"})
#: Edges (of a percentage, or of |skew| in seconds) between which a figure may move without a status
#: write: the message's exact figure is refreshed with the next write anyway.
PERCENT_EDGES = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0)
SKEW_EDGES = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass(frozen=True)
class Thresholds:
    """When a quality condition turns False (the gateway's --quality-* flags)."""

    #: `InRange` is False above this share of values out of their sensor's range.
    max_out_of_range_percent: float = 1.0
    #: `Sequential` is False above this share of Sparkplug messages out of sequence.
    max_gap_percent: float = 0.0
    #: `ClockInSync` is False when the median |skew| exceeds this, or any message was refused for its timestamp.
    max_clock_skew_s: float = 10.0


@dataclass(slots=True)
class _Bucket:
    start: float
    checked: int = 0
    out_of_range: Counter[str] = field(default_factory=Counter)  # sensor → values out of its range
    sequenced: int = 0
    breaks: int = 0
    skews: list[float] = field(default_factory=list)
    worst: float = 0.0
    timestamped: int = 0
    refused_skew: int = 0


@dataclass(frozen=True)
class Figures:
    """A node's data quality over the window: what `status.quality` carries."""

    window_s: float
    checked: int
    out_of_range: int
    #: sensor → (values out of range, its declared range and unit as text), worst first.
    by_sensor: tuple[tuple[str, int, str], ...]
    sequenced: bool
    messages: int
    breaks: int
    timestamped: int
    skew_median: float | None
    skew_worst: float | None
    refused_skew: int

    @property
    def out_of_range_percent(self) -> float | None:
        return 100.0 * self.out_of_range / self.checked if self.checked else None

    @property
    def gap_percent(self) -> float | None:
        return 100.0 * self.breaks / self.messages if self.messages else None

    def status(self) -> dict:
        """`status.quality`: counts as integers, rates and seconds as decimal strings (as readingsPerMinute)."""
        out: dict = {"windowSeconds": int(self.window_s), "readings": self.checked, "outOfRange": self.out_of_range}
        if self.out_of_range_percent is not None:
            out["outOfRangePercent"] = f"{self.out_of_range_percent:.1f}"
        if self.sequenced:
            out["sequencedMessages"], out["sequenceBreaks"] = self.messages, self.breaks
            if self.gap_percent is not None:
                out["sequenceBreakPercent"] = f"{self.gap_percent:.1f}"
        out["clockSkewRefused"] = self.refused_skew
        if self.skew_median is not None:
            out["clockSkewMedianSeconds"] = f"{self.skew_median:.1f}"
            out["clockSkewWorstSeconds"] = f"{self.skew_worst:.1f}"
        return out


class QualityLedger:
    """Each node's quality buckets; `observe` is on the pipeline's hot path, so it does little per message."""

    def __init__(self, nodes: Sequence[CompiledNode], window_s: float = WINDOW_S, bucket_s: float = BUCKET_S):
        self.window_s, self.bucket_s = window_s, bucket_s
        self._buckets: dict[str, list[_Bucket]] = {n.name: [] for n in nodes}
        self._sequenced = {n.name for n in nodes if n.format in SEQUENCED_FORMATS}
        #: (node, payload field) → (sensor, its range as text), for the messages.
        self._ranges = {
            (n.name, f): (s.name, f"[{s.low:g}, {s.high:g}]" + (f" {s.unit}" if s.unit else ""))
            for n in nodes
            for f, s in n.sensors.items()
        }

    def _bucket(self, node: str, now: float) -> _Bucket:
        buckets = self._buckets[node]
        start = now - now % self.bucket_s
        if not buckets or buckets[-1].start < start:
            buckets.append(_Bucket(start))
            horizon = now - self.window_s
            while buckets[0].start + self.bucket_s <= horizon:
                del buckets[0]
        return buckets[-1] if buckets[-1].start <= start else self._older(buckets, start)

    @staticmethod
    def _older(buckets: list[_Bucket], start: float) -> _Bucket:
        """A message processed with an earlier clock than the newest bucket's (a batch prepared late): its own bucket."""
        for b in reversed(buckets):
            if b.start <= start:
                return b
        return buckets[0]

    def observe(self, node: str, now: float, accepted: list[Reading], rejections: list[Rejection]) -> None:
        """One message of `node` received at `now`: its accepted readings and its rejections."""
        if node not in self._buckets:
            return
        b = self._bucket(node, now)
        b.checked += len(accepted)
        if accepted:
            ts = accepted[0].ts
            # Validation stamps a reading without a timestamp with `now` itself (the same object): it
            # says nothing about the node's clock. An identity test, not a comparison, costs nothing.
            if ts is not now:
                skew = ts - now
                b.timestamped += 1
                if len(b.skews) < SKEW_SAMPLES:
                    b.skews.append(skew)
                if abs(skew) > abs(b.worst):
                    b.worst = skew
        if node in self._sequenced:
            b.sequenced += 1
        for r in rejections:
            reason = r.reason
            if reason == "out_of_range":
                b.checked += 1
                b.out_of_range[r.field or ""] += 1
            elif reason == "sequence_gap":
                b.breaks += 1
            elif reason == "timestamp_skew":
                b.refused_skew += 1

    def figures(self, now: float) -> dict[str, Figures]:
        """Every declared node's figures over the window ending `now`.

        May run on another thread than `observe`, without a lock (one per message would cost the hot
        path): it reads copies, which the GIL makes whole (a list or dict copied in C).
        """
        horizon = now - self.window_s
        out = {}
        for node, buckets in self._buckets.items():
            live = [b for b in list(buckets) if b.start + self.bucket_s > horizon]
            skews = [s for b in live for s in list(b.skews)]
            worst = max((b.worst for b in live if b.timestamped), key=abs, default=None)
            fields: Counter[str] = Counter()
            for b in live:
                fields.update(dict(b.out_of_range))
            by_sensor = []
            for f, n in sorted(fields.items(), key=lambda kv: (-kv[1], kv[0])):
                sensor, declared = self._ranges.get((node, f), (f, "its range"))
                by_sensor.append((sensor, n, declared))
            out[node] = Figures(
                self.window_s,
                sum(b.checked for b in live),
                sum(fields.values()),
                tuple(by_sensor),
                node in self._sequenced,
                sum(b.sequenced for b in live),
                sum(b.breaks for b in live),
                sum(b.timestamped for b in live),
                median(skews) if skews else None,
                worst,
                sum(b.refused_skew for b in live),
            )
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    type: str
    status: str
    reason: str
    message: str


def _window(f: Figures) -> str:
    return f"in the last {f.window_s / 60:g} min" if f.window_s % 60 == 0 else f"in the last {f.window_s:g}s"


def judge(f: Figures, t: Thresholds) -> tuple[Verdict, Verdict, Verdict]:
    """The three quality conditions from a node's figures: InRange, Sequential, ClockInSync."""
    return _in_range(f, t), _sequential(f, t), _clock(f, t)


def _in_range(f: Figures, t: Thresholds) -> Verdict:
    pct = f.out_of_range_percent
    if pct is None:
        return Verdict("InRange", "Unknown", "NoReadings", f"no reading checked against a range {_window(f)}")
    text = f"{pct:.1f} % of readings out of range {_window(f)} ({f.out_of_range} of {f.checked}"
    if f.by_sensor:
        text += "; " + ", ".join(f"{sensor} outside {rng}: {n}" for sensor, n, rng in f.by_sensor[:3])
    text += f"); limit {t.max_out_of_range_percent:g} %"
    if pct > t.max_out_of_range_percent:
        return Verdict("InRange", "False", "OutOfRange", text)
    return Verdict("InRange", "True", "WithinRange", text)


def _sequential(f: Figures, t: Thresholds) -> Verdict:
    if not f.sequenced:
        return Verdict("Sequential", "Unknown", "NoSequenceNumbers", "its payload format carries no sequence number (sparkplug-b does)")
    pct = f.gap_percent
    if pct is None:
        return Verdict("Sequential", "Unknown", "NoMessages", f"no Sparkplug message {_window(f)}")
    lost = ": messages lost, rebirth requested" if f.breaks else ""
    text = f"{pct:.1f} % of Sparkplug messages out of sequence {_window(f)} ({f.breaks} of {f.messages}{lost})"
    text += f"; limit {t.max_gap_percent:g} %"
    if pct > t.max_gap_percent:
        return Verdict("Sequential", "False", "SequenceGaps", text)
    return Verdict("Sequential", "True", "InSequence", text)


def _clock(f: Figures, t: Thresholds) -> Verdict:
    if f.skew_median is None and not f.refused_skew:
        return Verdict("ClockInSync", "Unknown", "NoTimestamps", f"no timestamped reading {_window(f)}")
    parts = []
    if f.skew_median is not None:
        parts.append(f"median skew {f.skew_median:+.1f}s, worst {f.skew_worst:+.1f}s over {f.timestamped} messages {_window(f)}")
    if f.refused_skew:
        parts.append(f"{f.refused_skew} messages refused for their timestamp")
    text = "; ".join(parts) + f" (payload time minus receive time; limit ±{t.max_clock_skew_s:g}s)"
    if f.refused_skew or (f.skew_median is not None and abs(f.skew_median) > t.max_clock_skew_s):
        return Verdict("ClockInSync", "False", "ClockSkew", text)
    return Verdict("ClockInSync", "True", "InSync", text)


def _edge(value: float | None, edges: tuple[float, ...]) -> int | None:
    """Which of the fixed intervals `value` lies in (sign kept for skews): a figure's bucket."""
    if value is None:
        return None
    index = next((i for i, e in enumerate(edges) if abs(value) <= e), len(edges))
    return int(math.copysign(index + 1, value))


def change_key(f: Figures, verdicts: Sequence[Verdict]) -> tuple:
    """What must change before the status is written again: a condition's status or reason, or a figure's bucket."""
    return (
        tuple((v.type, v.status, v.reason) for v in verdicts),
        _edge(f.out_of_range_percent, PERCENT_EDGES),
        _edge(f.gap_percent, PERCENT_EDGES),
        _edge(f.skew_median, SKEW_EDGES),
    )
