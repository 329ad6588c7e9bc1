"""Sparkplug B: wire format round trips, signed types, session rules (births, aliases, seq gaps)."""

from __future__ import annotations

import pytest

from plantwatch.ingest import sparkplug as sp


def payload(seq, *metrics, ts=1767254400000):
    return sp.Payload(ts, seq, tuple(metrics))


def test_topics():
    t = sp.parse_topic("spBv1.0/plant-a/DDATA/edge-1/press-3")
    assert t == sp.Topic("plant-a", "DDATA", "edge-1", "press-3")
    assert sp.topic(t) == "spBv1.0/plant-a/DDATA/edge-1/press-3"
    with pytest.raises(sp.SparkplugError):
        sp.parse_topic("spBv1.0/plant-a/HELLO/edge-1")


@pytest.mark.parametrize(
    "datatype, value",
    [
        (sp.INT8, -5),
        (sp.INT16, -300),
        (sp.INT32, -2_000_000),
        (sp.INT64, -(2**40)),
        (sp.UINT32, 4_000_000_000),
        (sp.UINT64, 2**63 + 5),
        (sp.DOUBLE, 21.125),
        (sp.BOOLEAN, True),
        (sp.STRING, "ok"),
        (sp.FLOAT, 1.5),
    ],
)
def test_metric_values_round_trip(datatype, value):
    p = payload(3, sp.Metric("m", 7, 1767254400123, datatype, value))
    (m,) = sp.decode_payload(sp.encode_payload(p)).metrics
    assert (m.name, m.alias, m.timestamp, m.datatype, m.value) == ("m", 7, 1767254400123, datatype, value)


def test_truncated_payloads_are_malformed_not_crashes():
    blob = sp.encode_payload(payload(1, sp.Metric("temperature", 1, None, sp.DOUBLE, 20.0)))
    for cut in range(1, len(blob)):
        try:
            sp.decode_payload(blob[:cut])
        except sp.SparkplugError as exc:
            assert exc.reason == "malformed"


def test_birth_aliases_data_and_death():
    s = sp.EdgeNodeSession()
    birth = sp.Topic("g", "NBIRTH", "edge-1")
    out = sp.apply(s, birth, payload(0, sp.Metric("temperature", 1, None, sp.DOUBLE, 20.5), sp.Metric("vibration", 2, None, sp.FLOAT, 1.5)))
    assert out.values == {"temperature": 20.5, "vibration": 1.5} and s.online
    data = sp.Topic("g", "NDATA", "edge-1")
    out = sp.apply(s, data, payload(1, sp.Metric(None, 1, None, sp.DOUBLE, 21.0)))  # alias only
    assert out.values == {"temperature": 21.0} and not out.rebirth
    out = sp.apply(s, sp.Topic("g", "NDEATH", "edge-1"), payload(None))
    assert out.offline and not s.online


def test_sequence_gap_requests_rebirth_and_ignores_data_until_then():
    s = sp.EdgeNodeSession()
    sp.apply(s, sp.Topic("g", "NBIRTH", "e"), payload(254, sp.Metric("t", 1, None, sp.DOUBLE, 1.0)))
    assert sp.apply(s, sp.Topic("g", "NDATA", "e"), payload(255, sp.Metric(None, 1, None, sp.DOUBLE, 2.0))).values == {"t": 2.0}
    assert sp.apply(s, sp.Topic("g", "NDATA", "e"), payload(0, sp.Metric(None, 1, None, sp.DOUBLE, 3.0))).values == {"t": 3.0}  # wraps
    gap = sp.apply(s, sp.Topic("g", "NDATA", "e"), payload(5, sp.Metric(None, 1, None, sp.DOUBLE, 4.0)))
    assert gap.rebirth and gap.values == {} and "expected 1" in gap.problem
    still = sp.apply(s, sp.Topic("g", "NDATA", "e"), payload(6, sp.Metric(None, 1, None, sp.DOUBLE, 5.0)))
    assert still.rebirth and still.values == {}
    reborn = sp.apply(s, sp.Topic("g", "NBIRTH", "e"), payload(0, sp.Metric("t", 1, None, sp.DOUBLE, 6.0)))
    assert reborn.values == {"t": 6.0} and s.online


def test_rebirth_request_is_an_ncmd():
    where, body = sp.rebirth_request(sp.Topic("g", "NDATA", "edge-1"), 1767254400000)
    assert where == "spBv1.0/g/NCMD/edge-1"
    (m,) = sp.decode_payload(body).metrics
    assert (m.name, m.value) == (sp.REBIRTH_METRIC, True)


def test_device_births_and_deaths():
    s = sp.EdgeNodeSession()
    sp.apply(s, sp.Topic("g", "NBIRTH", "e"), payload(0))
    out = sp.apply(s, sp.Topic("g", "DBIRTH", "e", "press"), payload(1, sp.Metric("current", 9, None, sp.DOUBLE, 12.0)))
    assert out.values == {"current": 12.0}
    assert sp.apply(s, sp.Topic("g", "DDATA", "e", "press"), payload(2, sp.Metric(None, 9, None, sp.DOUBLE, 13.0))).values == {
        "current": 13.0
    }
    assert sp.apply(s, sp.Topic("g", "DDEATH", "e", "press"), payload(3)).offline
