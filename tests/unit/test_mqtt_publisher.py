"""The publisher (dead letters, rebirth requests) is bounded: beyond its queue, messages are dropped and counted."""

from __future__ import annotations

from prometheus_client import REGISTRY

from plantwatch.mqtt.publisher import Publisher


def evictions(structure: str) -> float:
    return REGISTRY.get_sample_value("plantwatch_state_evictions_total", {"structure": structure}) or 0.0


def test_a_bounded_publisher_drops_and_counts_what_would_queue_beyond_its_cap():
    before = evictions("mqtt_publish_queue")
    pub = Publisher("mqtt://127.0.0.1:1", max_queued=10)  # never connected: everything would wait in the client
    for i in range(1000):
        pub.publish("plantwatch/dead-letter/x", b"%d" % i)
    assert pub.dropped == 990 and evictions("mqtt_publish_queue") - before == 990
