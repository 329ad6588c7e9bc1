"""The gateway's Online condition (pure)."""

from __future__ import annotations

from plantwatch.ingest.node_status import online_condition
from plantwatch.ingest.status_topics import node_presence

NOW = 1767254400.0


def test_online_silent_never_seen_and_transition_times():
    never = online_condition(node_presence(NOW, 5.0, None, None), None, NOW)
    assert (never["status"], never["reason"]) == ("False", "NeverSeen")
    up = online_condition(node_presence(NOW + 1, 5.0, NOW, None), never, NOW + 1)
    assert (up["status"], up["reason"], up["lastTransitionTime"]) == ("True", "Reporting", "2026-01-01T08:00:01Z")
    still = online_condition(node_presence(NOW + 10, 5.0, NOW + 9, None), up, NOW + 10)
    assert still["lastTransitionTime"] == "2026-01-01T08:00:01Z"
    silent = online_condition(node_presence(NOW + 20, 5.0, NOW + 9, None), still, NOW + 20)
    assert (silent["status"], silent["reason"]) == ("False", "Silent") and "no reading for 11s" in silent["message"]
