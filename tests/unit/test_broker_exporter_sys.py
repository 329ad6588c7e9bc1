"""The broker exporter's pure parts: `$SYS` messages into state (restarts carried over) and topic patterns."""

from __future__ import annotations

import pytest

from plantwatch.ingest.formats import DECODABLE
from plantwatch.monitoring.sys_topics import BrokerStats, SysValueError, TopicPattern, TopicPatterns, parse_pattern, topic_matches


def test_known_topics_become_values_and_unknown_ones_are_ignored():
    stats = BrokerStats()
    assert stats.apply("$SYS/broker/clients/connected", b"3")
    assert stats.apply("$SYS/broker/uptime", b"42 seconds")
    assert stats.apply("$SYS/broker/retained messages/count", b"40")
    assert stats.apply("$SYS/broker/load/bytes/received/5min", b"12.50")
    assert stats.apply("$SYS/broker/version", b"mosquitto version 2.0.11")
    for ignored in ("$SYS/broker/clients/active", "$SYS/broker/something/new", "$SYS/broker/load/bytes/received/2min", "plant/a"):
        assert not stats.apply(ignored, b"7")
    assert stats.values == {
        ("clients_connected", ""): 3.0,
        ("uptime_seconds", ""): 42.0,
        ("retained_messages", ""): 40.0,
        ("load_received_bytes_per_minute", "5min"): 12.5,
    }
    assert stats.version == "2.0.11"


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("$SYS/broker/clients/connected", b"many"),
        ("$SYS/broker/bytes/sent", b"-1"),
        ("$SYS/broker/messages/received", b"nan"),
        ("$SYS/broker/uptime", b"forever"),
        ("$SYS/broker/load/sockets/1min", b"\xff"),
        ("$SYS/broker/version", b""),
    ],
)
def test_unreadable_values_are_errors_that_name_the_topic_and_change_nothing(topic, payload):
    stats = BrokerStats()
    stats.apply("$SYS/broker/clients/connected", b"2")
    with pytest.raises(SysValueError, match=f"^{topic.replace('$', '[$]')}: expected"):
        stats.apply(topic, payload)
    assert stats.values == {("clients_connected", ""): 2.0}


def test_counters_never_go_backwards_across_broker_restarts_while_gauges_follow_the_broker():
    stats = BrokerStats()
    for raw in (b"10", b"25"):
        stats.apply("$SYS/broker/publish/messages/received", raw)
        stats.apply("$SYS/broker/clients/connected", raw)
    # The broker restarts: its counters count from zero again.
    stats.apply("$SYS/broker/publish/messages/received", b"4")
    stats.apply("$SYS/broker/clients/connected", b"4")
    assert stats.values[("publish_messages_received_total", "")] == 29.0
    assert stats.values[("clients_connected", "")] == 4.0
    stats.apply("$SYS/broker/publish/messages/received", b"6")
    assert stats.values[("publish_messages_received_total", "")] == 31.0
    # And again: what both earlier lives counted stays.
    stats.apply("$SYS/broker/publish/messages/received", b"1")
    assert stats.values[("publish_messages_received_total", "")] == 32.0


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("plant/+/+/telemetry", "plant/hall-1/press-01/telemetry", True),
        ("plant/+/+/telemetry", "plant/hall-1/telemetry", False),
        ("plant/+/+/telemetry", "plant/hall-1/press-01/telemetry/x", False),
        ("sensors/#", "sensors", True),
        ("sensors/#", "sensors/a/b/c", True),
        ("#", "$SYS/broker/uptime", False),
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("plant/+", "plant/", True),
    ],
)
def test_topic_filters_match_as_mqtt_does(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


def test_patterns_take_a_format_and_refuse_what_mqtt_or_the_decoders_would():
    assert parse_pattern("sensors/+/+/data", "esp32-json", DECODABLE) == TopicPattern("sensors/+/+/data", "esp32-json")
    assert parse_pattern("pi/+/data=rpi-json", "esp32-json", DECODABLE) == TopicPattern("pi/+/data", "rpi-json")
    for bad, said in [
        ("sensors/#/data", "'#' the whole last level"),
        ("sensors/a+/data", "'[+]' must be a whole level"),
        ("$SYS/#", "not \\$SYS"),
        ("", "not empty"),
        ("x/+=sparkplug-b", "accepted: esp32-json"),
        ("x/+=yaml", "payload format 'yaml'"),
    ]:
        with pytest.raises(ValueError, match=said):
            parse_pattern(bad, "esp32-json", DECODABLE)


def test_the_first_matching_pattern_counts_a_topic_and_the_memory_of_topics_is_bounded():
    first, second = TopicPattern("a/+", "esp32-json"), TopicPattern("a/#", "rpi-json")
    patterns = TopicPatterns([first, second])
    assert patterns.find("a/b") is first
    assert patterns.find("a/b/c") is second
    assert patterns.find("b/c") is None
    for i in range(TopicPatterns.CACHE_SIZE * 2):
        assert patterns.find(f"a/{i}") is first
    assert len(patterns._cache) <= TopicPatterns.CACHE_SIZE
