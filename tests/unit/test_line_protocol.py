"""The InfluxDB store's line protocol (pure): escaping, types, timestamps; and its on-disk spool."""

from __future__ import annotations

import base64
import hashlib

import pytest

from plantwatch.readings import AlertEvent, Reading
from plantwatch.store.influx import (
    Spool,
    SpoolDepth,
    SpoolFullError,
    alerts_line_protocol,
    chunks,
    dead_letter_lines,
    ns,
    to_line_protocol,
    to_wide_line_protocol,
)


def test_reading_line():
    r = Reading("press-1", "temp", "temperature", 21.5, 1700000000.123, "C")
    assert to_line_protocol([r]) == b"reading,node=press-1,sensor=temp,type=temperature,unit=C value=21.5 1700000000123000000"


def test_lines_are_joined_by_newlines_and_empty_input_is_empty():
    rs = [Reading("n", "s", "t", float(i), 1.0 + i) for i in range(3)]
    assert to_line_protocol(rs).split(b"\n") == [to_line_protocol([r]) for r in rs]
    assert to_line_protocol([]) == b""


def test_the_wide_layout_writes_a_point_per_node_and_timestamp_with_a_field_per_sensor():
    message = [
        Reading("press-1", "temperature", "temperature", 45.5, 1700000000.5, "celsius"),
        Reading("press-1", "vibration", "vibration", 1, 1700000000.5, "g"),
    ]
    later = Reading("press-1", "temperature", "temperature", 46.0, 1700000001.5, "celsius")
    other = Reading("pump 2", "flow", "flow", 3.25, 1700000001.5, "")
    assert to_wide_line_protocol([*message, later, other]).split(b"\n") == [
        b"node_readings,node=press-1 temperature=45.5,vibration=1.0 1700000000500000000",
        b"node_readings,node=press-1 temperature=46.0 1700000001500000000",
        b"node_readings,node=pump\\ 2 flow=3.25 1700000001500000000",
    ]
    assert to_wide_line_protocol([]) == b""


def test_the_wide_layout_names_a_field_once_per_point():
    """A message redelivered within one batch repeats its readings: the repeat starts a new point (same key, same
    values: InfluxDB keeps one), never a point naming a field twice, which InfluxDB would refuse."""
    message = [Reading("n", s, "t", v, 5.0) for s, v in (("a", 1.0), ("b", 2.0))]
    assert to_wide_line_protocol(message + message).split(b"\n") == [b"node_readings,node=n a=1.0,b=2.0 5000000000"] * 2


@pytest.mark.parametrize("v", [float("nan"), float("inf")])
def test_the_wide_layout_refuses_non_finite_values_too(v):
    with pytest.raises(ValueError, match="line protocol has no"):
        to_wide_line_protocol([Reading("n", "s", "t", v, 1.0)])


def test_tag_values_escape_space_comma_and_equals():
    r = Reading("hall 1,line=2", "a b", "t=x", 1.0, 1.0, "m/s 2")
    assert to_line_protocol([r]) == (rb"reading,node=hall\ 1\,line\=2,sensor=a\ b,type=t\=x,unit=m/s\ 2 value=1.0 1000000000")


def test_empty_unit_is_left_out_because_line_protocol_has_no_empty_tag_values():
    assert to_line_protocol([Reading("n", "s", "t", 1.0, 1.0, "")]) == b"reading,node=n,sensor=s,type=t value=1.0 1000000000"


def test_integer_values_are_written_as_floats_so_the_field_type_never_changes():
    assert to_line_protocol([Reading("n", "s", "t", 21, 1.0)]).endswith(b" value=21.0 1000000000")


def test_values_round_trip_exactly():
    for v in (0.1, -1e-300, 1e20, 123456789.123456789, 2.0**60):
        line = to_line_protocol([Reading("n", "s", "t", v, 1.0)])
        assert float(line.split(b"value=")[1].split(b" ")[0]) == v


@pytest.mark.parametrize("v", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(v):
    with pytest.raises(ValueError, match="non-finite"):
        to_line_protocol([Reading("n", "s", "t", v, 1.0)])


def test_timestamps_are_whole_microseconds_in_nanoseconds():
    assert 1700000000.123 * 1e9 != 1700000000123000000  # the float noise that rounding removes
    assert ns(1700000000.123) == 1700000000123000000
    assert ns(1700000000.123456) == 1700000000123456000
    assert ns(0.0) == 0


def test_alert_event_line():
    a = AlertEvent("hot/press-1/temp", "hot", "press-1", "temp", "firing", "critical", 95.5, 1700000000.5, 'temp "high" \\ 95.5 > 90')
    assert alerts_line_protocol([a]) == (
        b"alert_event,node=press-1,rule=hot,sensor=temp,severity=critical,state=firing "
        b'fingerprint="hot/press-1/temp",summary="temp \\"high\\" \\\\ 95.5 > 90",value=95.5 1700000000500000000'
    )


def test_alert_event_without_value_has_no_value_field():
    a = AlertEvent("silent/n/s", "silent", "n", "s", "resolved", "warning", None, 2.0, "back")
    assert alerts_line_protocol([a]) == (
        b'alert_event,node=n,rule=silent,sensor=s,severity=warning,state=resolved fingerprint="silent/n/s",summary="back" 2000000000'
    )


def test_dead_letters_received_together_are_distinct_points():
    lines = list(dead_letter_lines([(1.0, "t/a", "malformed", "bad", b"\xff\x00"), (1.0, "t/a", "malformed", "bad", b"x")]))
    sha = hashlib.sha256(b"\xff\x00").hexdigest()
    assert (
        lines[0]
        == f'dead_letter,reason=malformed topic="t/a",detail="bad",payload="/wA=",payload_bytes=2i,payload_sha256="{sha}" 1000000000'
    )
    assert base64.b64decode("/wA=") == b"\xff\x00"
    assert lines[1].endswith(" 1000000001")


def test_chunks():
    assert list(chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunks([], 2)) == []


def test_spool_keeps_order_and_depth_across_restarts(tmp_path):
    spool = Spool(tmp_path, 1000)
    spool.append(b"one")
    spool.append(b"three")
    assert spool.depth() == SpoolDepth(2, 8)
    (tmp_path / "00000000000000000099.tmp").write_bytes(b"half")  # a crash mid-write
    again = Spool(tmp_path, 1000)
    assert again.depth() == SpoolDepth(2, 8)
    assert again.oldest()[1] == b"one"
    again.pop_oldest()
    again.append(b"four")
    assert [again.oldest()[1]] == [b"three"]
    names = sorted(p.name for p in tmp_path.glob("*.lp"))
    assert names == ["00000000000000000002.lp", "00000000000000000003.lp"]
    assert not list(tmp_path.glob("*.tmp"))


def test_spool_full_raises_and_keeps_what_it_has(tmp_path):
    spool = Spool(tmp_path, 10)
    spool.append(b"12345678")
    with pytest.raises(SpoolFullError, match="spool_max_bytes=10"):
        spool.append(b"abc")
    assert spool.depth() == SpoolDepth(1, 8)


def test_rejected_batches_are_kept_apart_and_never_replayed(tmp_path):
    spool = Spool(tmp_path, 100)
    spool.append(b"bad")
    spool.append(b"good")
    moved = spool.reject_oldest()
    assert moved.parent.name == "rejected" and moved.read_bytes() == b"bad"
    assert spool.oldest()[1] == b"good" and spool.depth() == SpoolDepth(1, 4)
    assert Spool(tmp_path, 100).depth() == SpoolDepth(1, 4)
