"""Keyed scale-out of the gateway (pure): which shard a node is in, which replica owns a shard.

A plant's nodes are split into a fixed number of shards by a stable hash of their key
(the node's name; a Sparkplug edge node's group and name, so its births and its devices'
data meet in one shard). Each shard is one persistent MQTT session subscribed to exactly
its nodes' topics, so every reading of a series goes through one session, in order.
Replicas own shards; the assignment depends only on (shards, replicas), so every replica
computes the same one without talking to the others. docs/scale-out.md says why.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from plantwatch.ingest.status_topics import status_owners

#: Enough shards to spread a plant over a handful of replicas; fixed for a plant's life,
#: because changing it moves nodes between MQTT sessions (see docs/scale-out.md).
DEFAULT_SHARDS = 16
SPARKPLUG = "spBv1.0"
#: The shard whose session also takes every topic no SensorNode publishes to (dead letters).
UNKNOWN_SHARD = 0


def shard_of(key: str, shards: int) -> int:
    """The shard of a node key: a hash every process and Python version agrees on (not `hash()`)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def node_key(name: str, payload_format: str, topic: str) -> str:
    """What a node is sharded by: its name; for Sparkplug its edge node (births come per edge node)."""
    if payload_format == "sparkplug-b":
        parts = topic.split("/")
        return f"{SPARKPLUG}/{parts[1]}/{parts[3]}"
    return name


def node_filter(payload_format: str, topic: str) -> str:
    """The subscription that brings a node's messages: its topic, or its edge node's every message type."""
    if payload_format == "sparkplug-b":
        parts = topic.split("/")
        return f"{SPARKPLUG}/{parts[1]}/+/{parts[3]}/#"  # '#' also matches the edge node's own NBIRTH/NDATA level
    return topic


def assignment(shards: int, replicas: int) -> tuple[int, ...]:
    """The replica that owns each shard, balanced (loads differ by at most one).

    Built by adding replicas one at a time: replica r takes shards/(r+1) shards, each from
    the most loaded replica before it. So a scale-up moves shards only to the new
    replicas, a scale-down only away from the removed ones, never between survivors.
    """
    if shards < 1 or replicas < 1:
        raise ValueError(f"shards ({shards}) and replicas ({replicas}) must both be at least 1")
    owner = [0] * shards
    load = [shards] + [0] * (replicas - 1)
    for new in range(1, replicas):
        for _ in range(shards // (new + 1)):
            donor = max(range(new), key=lambda r: (load[r], -r))
            moved = max(k for k in range(shards) if owner[k] == donor)
            owner[moved] = new
            load[donor] -= 1
            load[new] += 1
    return tuple(owner)


def owned_shards(index: int, shards: int, replicas: int) -> list[int]:
    """The shards replica `index` (0-based) of `replicas` consumes."""
    if not 0 <= index < replicas:
        raise ValueError(f"replica index {index} is outside 0..{replicas - 1} (replicas: {replicas})")
    return [k for k, r in enumerate(assignment(shards, replicas)) if r == index]


def ordinal(hostname: str) -> int:
    """The replica index in a StatefulSet pod's name (`plantwatch-gateway-2` → 2)."""
    m = re.search(r"-(\d+)$", hostname)
    if not m:
        raise ValueError(f"hostname {hostname!r} does not end in -<ordinal> (a StatefulSet pod's name does); give --replica-index")
    return int(m.group(1))


@dataclass(frozen=True)
class ShardPlan:
    """Where each node of a plant goes: its shard, and each shard's subscriptions."""

    shards: int
    #: node name → shard
    node_shard: dict[str, int]
    #: shard → the exact filters of its nodes (their data and status topics)
    filters: dict[int, tuple[str, ...]]
    #: The plant's `<first level>/#` filters: the unknown shard subscribes to these instead,
    #: which covers its own nodes and every topic no node publishes to.
    wildcards: tuple[str, ...]
    #: topic (or Sparkplug edge node key) → shard, for the unknown shard to skip others' messages
    topic_shard: dict[str, int]

    @classmethod
    def of(cls, nodes: list[tuple[str, str, str]], shards: int) -> ShardPlan:
        """From (name, payload format, topic) of every node."""
        if shards < 1:
            raise ValueError(f"shards must be at least 1, not {shards}")
        node_shard: dict[str, int] = {}
        filters: dict[int, set[str]] = {k: set() for k in range(shards)}
        topic_shard: dict[str, int] = {}
        for name, fmt, topic in nodes:
            key = node_key(name, fmt, topic)
            k = shard_of(key, shards)
            node_shard[name] = k
            filters[k].add(node_filter(fmt, topic))
            topic_shard[key if fmt == "sparkplug-b" else topic] = k
        for status, name in status_owners(nodes)[0].items():  # a node's births and Last Will meet its readings in one session
            filters[node_shard[name]].add(status)
            topic_shard[status] = node_shard[name]
        wildcards = tuple(sorted({topic.split("/", 1)[0] + "/#" for _, _, topic in nodes}))
        return cls(shards, node_shard, {k: tuple(sorted(f)) for k, f in filters.items()}, wildcards, topic_shard)

    def subscriptions(self, shard: int, dead_letter_unknown: bool) -> list[str]:
        """What shard's session subscribes to; empty when the shard has no nodes and takes no unknowns."""
        if shard == UNKNOWN_SHARD and dead_letter_unknown:
            return list(self.wildcards)
        return list(self.filters[shard])

    def shard_of_topic(self, topic: str) -> int | None:
        """The shard a message belongs to; None when no node publishes there (the unknown shard's)."""
        k = self.topic_shard.get(topic)
        if k is None and topic.startswith(SPARKPLUG + "/"):
            parts = topic.split("/", 4)
            if len(parts) >= 4:
                k = self.topic_shard.get(f"{SPARKPLUG}/{parts[1]}/{parts[3]}")
        return k
