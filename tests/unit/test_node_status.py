"""The gateway's Online condition (pure)."""

from __future__ import annotations

from plantwatch.ingest.node_status import online_condition

NOW = 1767254400.0


def test_online_silent_never_seen_and_transition_times():
    never = online_condition(False, None, 5.0, None, NOW)
    assert (never["status"], never["reason"]) == ("False", "NeverSeen")
    up = online_condition(True, NOW, 5.0, never, NOW + 1)
    assert (up["status"], up["reason"], up["lastTransitionTime"]) == ("True", "Reporting", "2026-01-01T08:00:01Z")
    still = online_condition(True, NOW + 9, 5.0, up, NOW + 10)
    assert still["lastTransitionTime"] == "2026-01-01T08:00:01Z"
    silent = online_condition(False, NOW + 9, 5.0, still, NOW + 20)
    assert (silent["status"], silent["reason"]) == ("False", "Silent") and "no reading for 11s" in silent["message"]
