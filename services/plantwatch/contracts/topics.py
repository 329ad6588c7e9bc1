"""A node's MQTT topics beside its data topic: what the gateway reads and the broker's ACL grants alike.

`sensors/hall-1/x/data` → `sensors/hall-1/x/status` (the node's `online` birth and `offline`
Last Will) and `sensors/hall-1/x/cmd` (commands to the node); a one-level topic `x` is its own
prefix: `x/status`, `x/cmd`.
"""

from __future__ import annotations

STATUS_LEVEL, COMMAND_LEVEL = "status", "cmd"


def _parent(data_topic: str) -> str:
    prefix, sep, _ = data_topic.rpartition("/")
    return prefix if sep else data_topic


def status_topic(data_topic: str) -> str:
    return f"{_parent(data_topic)}/{STATUS_LEVEL}"


def command_topic(data_topic: str) -> str:
    return f"{_parent(data_topic)}/{COMMAND_LEVEL}"
