"""Node presence (pure): the status topic's births and Last Wills, and a node's Online state from them and its heartbeat.

A node publishes retained `online` on `<prefix>/status` right after connecting (its birth),
and registers retained `offline` there, QoS 1, as its Last Will, which the broker publishes
when the connection drops (firmware/lib/plantwatch_core: `<prefix>/data` carries the
readings). So the status topic is the data topic's last level replaced by `status`: the
gateway derives it from `spec.payload.topic` for every node but Sparkplug ones, which have
NBIRTH/NDEATH instead (ingest/sparkplug_sessions.py), both ending up here as Announcements.

`offline` makes a node Offline at once (reason `LastWill`) until it publishes again;
`online` makes it Online until its heartbeat (interval × missed beats) passes without a reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from plantwatch.contracts.topics import STATUS_LEVEL, status_topic
from plantwatch.ingest.validate import Rejection

#: The status topic's last level, beside the data topic's.
ONLINE, OFFLINE = b"online", b"offline"
#: Bytes of a status payload beyond which it is refused as `oversized` rather than `malformed`.
STATUS_MAX_BYTES = 64
#: The longest topic a SensorNode can have (the CRD's spec.payload.topic maxLength) plus its
#: status level: no message on a longer topic can be a node's.
MAX_TOPIC_CHARS = 512 + len(STATUS_LEVEL) + 1


def status_owners(nodes: Iterable[tuple[str, str, str]]) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """From (name, payload format, data topic) of every node: status topic → node, and the ambiguous status topics.

    A status topic several nodes' data topics share (they hang off one prefix), or that is
    another node's data topic, names no node: it is listed with the nodes it could be.
    """
    nodes = list(nodes)
    data_topics = {topic for _, _, topic in nodes}
    candidates: dict[str, list[str]] = {}
    for name, fmt, topic in nodes:
        status = status_topic(topic)
        if fmt != "sparkplug-b" and status not in data_topics:
            candidates.setdefault(status, []).append(name)
    owners = {t: names[0] for t, names in candidates.items() if len(names) == 1}
    return owners, {t: tuple(sorted(names)) for t, names in candidates.items() if len(names) > 1}


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a node (or the broker, for its Last Will) said about its connection."""

    online: bool
    #: The gateway's clock when it arrived (status messages carry no timestamp).
    at: float
    #: The Online condition's reason while it holds: `Birth`, `LastWill` or `DeviceDeath`.
    reason: str
    #: What arrived where, for the condition's message.
    message: str


def parse_status(topic: str, payload: bytes, now: float) -> Announcement | Rejection:
    """A status message: `online` (a birth) or `offline` (a Last Will), exactly, as the firmware sends them."""
    if payload == ONLINE:
        return Announcement(True, now, "Birth", f"`online` on {topic} (the node's birth after connecting)")
    if payload == OFFLINE:
        return Announcement(False, now, "LastWill", f"`offline` on {topic} (the node's Last Will: the broker lost its connection)")
    if len(payload) > STATUS_MAX_BYTES:
        return Rejection("oversized", f"status payload of {len(payload)} bytes on {topic}; accepted: `online` or `offline`")
    return Rejection("malformed", f"status payload {bytes(payload)!r} on {topic}; accepted: exactly `online` or `offline`")


def topic_problem(topic: str) -> str | None:
    """Why no node can publish on `topic` (MQTT forbids it, or it reads like an escape from a node's topic space); None if it could."""
    if len(topic) > MAX_TOPIC_CHARS:
        return f"is {len(topic)} characters; no SensorNode's topic is longer than {MAX_TOPIC_CHARS}"
    if "\x00" in topic:
        return "contains NUL, which MQTT forbids in a topic"
    if "+" in topic or "#" in topic:
        return "contains an MQTT wildcard ('+' or '#'), which a published topic must not"
    if "\ufffd" in topic:
        return "is not valid UTF-8"
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in topic):
        return "contains control characters"
    if any(level in (".", "..") for level in topic.split("/")):
        return "has a `.` or `..` level (topics are not paths: nothing resolves it to a node's topic)"
    return None


@dataclass(frozen=True, slots=True)
class Presence:
    """A node's Online state and why: the SensorNode's `Online` condition."""

    online: bool
    reason: str
    message: str


def node_presence(now: float, silence_s: float, last_seen: float | None, announced: Announcement | None) -> Presence:
    """Judge a node from its newest reading's time and its newest announcement still in force.

    An `offline` announcement is in force until the node's next reading (the pipeline drops
    it then); an `online` one counts as a sign of life when it arrived.
    """
    heartbeat = f"heartbeat allows {silence_s:g}s"
    if announced is not None and not announced.online:
        return Presence(False, announced.reason, announced.message)
    if last_seen is not None and now - last_seen <= silence_s:
        return Presence(True, "Reporting", f"readings arrive within the heartbeat ({silence_s:g}s)")
    if announced is not None and now - announced.at <= silence_s:
        return Presence(True, announced.reason, f"{announced.message}; no reading yet ({heartbeat})")
    if announced is not None and (last_seen is None or announced.at > last_seen):
        return Presence(False, "Silent", f"no reading in the {now - announced.at:.0f}s since {announced.message}; {heartbeat}")
    if last_seen is None:
        return Presence(False, "NeverSeen", "no reading from this node since the gateway started")
    return Presence(False, "Silent", f"no reading for {now - last_seen:.0f}s ({heartbeat})")
