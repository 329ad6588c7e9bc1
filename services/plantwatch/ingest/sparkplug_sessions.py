"""The gateway as a Sparkplug host: a session per edge node (the plant's, and a bounded few strangers) and rebirth requests.

sparkplug.py is the protocol (pure: topics, payloads, one session's state machine);
here is which sessions the gateway keeps and what a message on the namespace yields:
the readings of the SensorNode it belongs to, its rejections, and a rebirth request
when its edge node lost messages.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from plantwatch import metrics
from plantwatch.ingest import sparkplug
from plantwatch.ingest.codecs import Sample
from plantwatch.ingest.status_topics import Announcement
from plantwatch.ingest.validate import CompiledNode, Policy, Rejection, check_sample
from plantwatch.readings import Reading

SPARKPLUG_PREFIX = sparkplug.NAMESPACE + "/"
#: The Sparkplug messages that carry readings (births carry their metrics' current values).
_SPARKPLUG_READINGS = frozenset({"NBIRTH", "DBIRTH", "NDATA", "DDATA"})
#: At most one rebirth request per edge node in this many seconds (the births take a moment).
REBIRTH_INTERVAL_S = 5.0
#: Sparkplug sessions kept for edge nodes no SensorNode describes (least recently heard from
#: forgotten first): enough to dead-letter a few strangers sensibly, and bounded, since anyone
#: may publish under the namespace. One forgotten and heard from again is asked for a rebirth.
MAX_STRANGER_SESSIONS = 1024


def sparkplug_key(topic: str) -> tuple[str, str, str | None]:
    """(group, edge node, device) of a Sparkplug SensorNode's data topic; ValueError if it is not one."""
    try:
        t = sparkplug.parse_topic(topic)
    except sparkplug.SparkplugError as exc:
        raise ValueError(exc.detail) from None
    if t.message_type not in ("NDATA", "DDATA") or (t.message_type == "DDATA") != (t.device is not None):
        raise ValueError(
            f"topic {topic!r}: a sparkplug-b node's topic is its data topic, "
            f"{sparkplug.NAMESPACE}/<group>/NDATA/<edge node> or .../DDATA/<edge node>/<device>"
        )
    return t.group, t.edge_node, t.device


class SparkplugSessions:
    """The Sparkplug sessions of a plant's sparkplug-b SensorNodes' edge nodes, and of strangers.

    `announce` is the pipeline's: births and deaths reach the nodes' Online state as the
    status topic's `online` and `offline` do (NDEATH is the edge node's Last Will).
    """

    def __init__(self, nodes: list[CompiledNode], policy: Policy, announce: Callable[[str, Announcement], None]):
        self.nodes = {sparkplug_key(c.topic): c for c in nodes}
        self.policy = policy
        self._announce = announce
        #: Sparkplug sessions of the plant's edge nodes (a fixed set), and of strangers (bounded, LRU).
        self._sessions: dict[tuple[str, str], sparkplug.EdgeNodeSession] = {}
        #: The devices (None: the edge node itself) of each of the plant's edge nodes: a session keeps their aliases only.
        self._known_edges: dict[tuple[str, str], frozenset[str | None]] = {}
        for group, edge, device in self.nodes:
            self._known_edges[(group, edge)] = self._known_edges.get((group, edge), frozenset()) | {device}
        self._stranger_sessions: OrderedDict[tuple[str, str], sparkplug.EdgeNodeSession] = OrderedDict()
        self._rebirth_asked: dict[tuple[str, str], float] = {}

    def message(
        self, topic: str, payload: bytes, now: float, outbox: list[tuple[str, bytes]]
    ) -> tuple[CompiledNode | None, list[Reading], list[Rejection]]:
        """Advance the edge node's session; request a rebirth (into `outbox`) when it lost messages."""
        try:
            t = sparkplug.parse_topic(topic)
        except sparkplug.SparkplugError as exc:
            return None, [], [Rejection(exc.reason, exc.detail)]
        if t.message_type in ("NCMD", "DCMD", "STATE"):
            return None, [], []  # commands and host state: ours or another host's, not readings
        node = self.nodes.get((t.group, t.edge_node, t.device))
        limit = node.max_bytes if node else 65536
        if len(payload) > limit:
            return node, [], [Rejection("oversized", f"{len(payload)} bytes; this node's payload.maxBytes is {limit}")]
        try:
            message = sparkplug.decode_payload(payload)
        except sparkplug.SparkplugError as exc:
            return node, [], [Rejection(exc.reason, exc.detail)]
        session = self._session((t.group, t.edge_node))
        outcome = sparkplug.apply(session, t, message)
        if outcome.evicted:
            metrics.STATE_EVICTIONS.labels("sparkplug_aliases").inc(outcome.evicted)
        if outcome.offline:  # NDEATH takes the edge node's devices with it; DDEATH only its device
            said = _death(t, now)
            for (group, edge, device), dead in self.nodes.items():
                if (group, edge) == (t.group, t.edge_node) and (t.device is None or device == t.device):
                    self._announce(dead.name, said)
        elif node is not None and t.message_type in ("NBIRTH", "DBIRTH") and not outcome.rebirth:
            self._announce(node.name, Announcement(True, now, "Birth", f"Sparkplug {t.message_type} on {topic}"))
        rejections = []
        if outcome.rebirth:
            key = (t.group, t.edge_node)
            if now - self._rebirth_asked.get(key, -1e18) >= REBIRTH_INTERVAL_S:
                self._rebirth_asked[key] = now
                outbox.append(sparkplug.rebirth_request(t, int(now * 1000)))
            rejections.append(Rejection("sequence_gap", f"{outcome.problem}; rebirth requested from {t.edge_node}"))
        if node is None:
            # Judged by the message, not by what it resolves to: a stranger's aliases are never kept.
            if outcome.rebirth or not message.metrics or t.message_type not in _SPARKPLUG_READINGS or self.policy.unknown_node == "ignore":
                return None, [], rejections
            return (
                None,
                [],
                [
                    *rejections,
                    Rejection("unknown_node", f"no SensorNode is Sparkplug {t.group}/{t.edge_node}" + (f"/{t.device}" if t.device else "")),
                ],
            )
        if not outcome.values:
            return node, [], rejections
        ts = outcome.timestamp_ms / 1000.0 if outcome.timestamp_ms is not None else None
        readings: list[Reading] = []
        check_sample(node, Sample(outcome.values, ts), now, self.policy, readings, rejections)
        return node, readings, rejections

    def _session(self, key: tuple[str, str]) -> sparkplug.EdgeNodeSession:
        """The edge node's Sparkplug session; a stranger's is kept only among the most recent few, without aliases."""
        devices = self._known_edges.get(key)
        if devices is not None:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = sparkplug.EdgeNodeSession(devices=devices)
            return session
        strangers = self._stranger_sessions
        session = strangers.get(key)
        if session is not None:
            strangers.move_to_end(key)
            return session
        session = strangers[key] = sparkplug.EdgeNodeSession(devices=frozenset())
        if len(strangers) > MAX_STRANGER_SESSIONS:
            forgotten, _ = strangers.popitem(last=False)
            self._rebirth_asked.pop(forgotten, None)
            metrics.STATE_EVICTIONS.labels("sparkplug_stranger_sessions").inc()
        return session


def _death(t: sparkplug.Topic, now: float) -> Announcement:
    if t.device is None:
        return Announcement(
            False, now, "LastWill", f"Sparkplug NDEATH of edge node {t.group}/{t.edge_node} (its Last Will, or it disconnected)"
        )
    return Announcement(False, now, "DeviceDeath", f"Sparkplug DDEATH of device {t.group}/{t.edge_node}/{t.device}")
