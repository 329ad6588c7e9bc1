"""Mosquitto's `$SYS/broker/...` topics and the plant's topic patterns as metric state (pure: no I/O).

`BrokerStats.apply(topic, payload)` turns one `$SYS` message into the value it reports;
`TopicPatterns` says which configured pattern a plant topic falls under, so that metric
labels are the operator's patterns, never raw topics (whose number is the traffic's).

Mosquitto publishes its cumulative counters from zero again when it restarts. A counter
here never goes backwards: a value below the last one means the broker restarted, and
what it had counted before is carried over, as Prometheus's `rate()` expects of a `_total`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

SYS_PREFIX = "$SYS/broker/"
#: What the exporter subscribes to for the broker's own figures.
SYS_SUBSCRIPTION = SYS_PREFIX + "#"

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class Series:
    """A metric the exporter serves from one or more `$SYS` topics (without the namespace prefix)."""

    name: str
    kind: Kind
    help: str


#: `$SYS/broker/<suffix>` → the series it feeds. Topics not listed (deprecated aliases such as
#: clients/active, build details) are ignored.
SYS_SERIES: dict[str, Series] = {
    "clients/connected": Series("clients_connected", "gauge", "Clients connected to the broker now."),
    "clients/disconnected": Series("clients_disconnected", "gauge", "Clients with a persistent session that are not connected now."),
    "clients/maximum": Series("clients_maximum", "gauge", "The most clients connected at once since the broker started."),
    "clients/expired": Series("clients_expired_total", "counter", "Persistent sessions the broker expired."),
    "subscriptions/count": Series("subscriptions", "gauge", "Subscriptions active on the broker."),
    "shared_subscriptions/count": Series("shared_subscriptions", "gauge", "Shared subscriptions active on the broker."),
    "messages/received": Series("messages_received_total", "counter", "MQTT packets of any type the broker received."),
    "messages/sent": Series("messages_sent_total", "counter", "MQTT packets of any type the broker sent."),
    "publish/messages/received": Series("publish_messages_received_total", "counter", "PUBLISH messages the broker received."),
    "publish/messages/sent": Series("publish_messages_sent_total", "counter", "PUBLISH messages the broker sent."),
    "publish/messages/dropped": Series(
        "publish_messages_dropped_total", "counter", "PUBLISH messages the broker dropped (a client's queue or in-flight window full)."
    ),
    "bytes/received": Series("received_bytes_total", "counter", "Bytes the broker received."),
    "bytes/sent": Series("sent_bytes_total", "counter", "Bytes the broker sent."),
    "publish/bytes/received": Series("publish_received_bytes_total", "counter", "Bytes of PUBLISH payloads the broker received."),
    "publish/bytes/sent": Series("publish_sent_bytes_total", "counter", "Bytes of PUBLISH payloads the broker sent."),
    "retained messages/count": Series("retained_messages", "gauge", "Retained messages the broker holds."),
    "store/messages/count": Series("stored_messages", "gauge", "Messages in the broker's store (retained, queued and in flight)."),
    "store/messages/bytes": Series("stored_messages_bytes", "gauge", "Payload bytes of the messages in the broker's store."),
    "heap/current": Series("heap_bytes", "gauge", "Heap the broker uses (only when mosquitto was built with memory tracking)."),
    "heap/maximum": Series("heap_maximum_bytes", "gauge", "The most heap the broker used (only with memory tracking)."),
    "uptime": Series("uptime_seconds", "gauge", "Seconds since the broker started."),
}

#: `$SYS/broker/load/<what>/<interval>`: the broker's moving averages per minute over 1, 5 and 15 minutes.
LOAD_SERIES: dict[str, Series] = {
    "messages/received": Series("load_messages_received_per_minute", "gauge", "MQTT packets received per minute, averaged."),
    "messages/sent": Series("load_messages_sent_per_minute", "gauge", "MQTT packets sent per minute, averaged."),
    "publish/received": Series("load_publish_received_per_minute", "gauge", "PUBLISH messages received per minute, averaged."),
    "publish/sent": Series("load_publish_sent_per_minute", "gauge", "PUBLISH messages sent per minute, averaged."),
    "publish/dropped": Series("load_publish_dropped_per_minute", "gauge", "PUBLISH messages dropped per minute, averaged."),
    "bytes/received": Series("load_received_bytes_per_minute", "gauge", "Bytes received per minute, averaged."),
    "bytes/sent": Series("load_sent_bytes_per_minute", "gauge", "Bytes sent per minute, averaged."),
    "connections": Series("load_connections_per_minute", "gauge", "Connections opened per minute, averaged."),
    "sockets": Series("load_sockets_per_minute", "gauge", "Sockets opened per minute, averaged."),
}
LOAD_INTERVALS = ("1min", "5min", "15min")
#: Mosquitto's duplicates of store/messages/count, and deprecated or build-time topics, read and dropped.
_IGNORED = {"messages/stored", "clients/active", "clients/inactive", "clients/total", "timestamp"}
_UPTIME = re.compile(r"^(\d+) seconds$")


class SysValueError(ValueError):
    """A known `$SYS` topic whose value is not what mosquitto sends (a number, `N seconds`, a version line)."""


@dataclass
class BrokerStats:
    """The broker's figures as last reported; counters carried over broker restarts.

    `values` holds (series name, interval or "") → value; `version` the broker's version line.
    """

    values: dict[tuple[str, str], float] = field(default_factory=dict)
    version: str | None = None
    #: The last raw value of each counter, and what earlier broker lives had counted (added to it).
    _raw: dict[str, float] = field(default_factory=dict)
    _carried: dict[str, float] = field(default_factory=dict)

    def apply(self, topic: str, payload: bytes) -> bool:
        """Record one `$SYS` message; True when it fed a series, False for a topic not exported.

        SysValueError for an exported topic whose value cannot be read.
        """
        if not topic.startswith(SYS_PREFIX):
            return False
        suffix = topic[len(SYS_PREFIX) :]
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = None
        if suffix == "version":
            if not text:
                raise SysValueError(f"{topic}: expected a version line, got {payload[:40]!r}")
            self.version = text.removeprefix("mosquitto version ").strip()
            return True
        if suffix.startswith("load/"):
            what, _, interval = suffix[len("load/") :].rpartition("/")
            series = LOAD_SERIES.get(what)
            if series is None or interval not in LOAD_INTERVALS:
                return False
            self.values[(series.name, interval)] = _number(topic, text, payload)
            return True
        series = SYS_SERIES.get(suffix)
        if series is None:
            return False
        if suffix == "uptime":
            match = _UPTIME.match(text or "")
            if match is None:
                raise SysValueError(f"{topic}: expected 'N seconds', got {payload[:40]!r}")
            value = float(match.group(1))
        else:
            value = _number(topic, text, payload)
        if series.kind == "counter":
            value = self._monotonic(series.name, value)
        self.values[(series.name, "")] = value
        return True

    def _monotonic(self, name: str, raw: float) -> float:
        last = self._raw.get(name)
        if last is not None and raw < last:  # the broker restarted and counts from zero again
            self._carried[name] = self._carried.get(name, 0.0) + last
        self._raw[name] = raw
        return self._carried.get(name, 0.0) + raw


def _number(topic: str, text: str | None, payload: bytes) -> float:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise SysValueError(f"{topic}: expected a non-negative number, got {payload[:40]!r}")
    return value


@dataclass(frozen=True)
class TopicPattern:
    """A configured MQTT topic filter (`plant/+/+/telemetry`, `sensors/#`) and the payload format of its messages."""

    pattern: str
    format: str

    def matches(self, topic: str) -> bool:
        return topic_matches(self.pattern, topic)


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching: `+` one level, `#` (last) any rest; wildcards never match a `$` topic's first level."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


def parse_pattern(text: str, default_format: str, formats: tuple[str, ...]) -> TopicPattern:
    """`FILTER` or `FILTER=FORMAT` → a TopicPattern; ValueError saying what is accepted."""
    pattern, fmt = text.rpartition("=")[::2] if "=" in text else (text, default_format)
    if fmt not in formats:
        raise ValueError(f"topic pattern {text!r}: payload format {fmt!r} cannot be decoded here; accepted: {', '.join(formats)}")
    levels = pattern.split("/")
    if not pattern or pattern.startswith("$"):
        raise ValueError(f"topic pattern {text!r}: expected an MQTT topic filter such as plant/+/+/telemetry (not empty, not $SYS)")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError(f"topic pattern {text!r}: '+' must be a whole level and '#' the whole last level")
    return TopicPattern(pattern, fmt)


class TopicPatterns:
    """The configured patterns, first match wins; a topic's match is remembered (bounded: anyone may publish)."""

    #: Topics remembered before the memory is emptied; a plant has a few hundred.
    CACHE_SIZE = 4096

    def __init__(self, patterns: list[TopicPattern]):
        self.patterns = patterns
        self._cache: dict[str, TopicPattern | None] = {}

    def find(self, topic: str) -> TopicPattern | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        found = self._cache[topic] = next((p for p in self.patterns if p.matches(topic)), None)
        return found
