"""The gateway's Sparkplug sessions are bounded against hostile births: aliases of the plant's own
devices only, at most MAX_ALIASES per edge node, a bounded few strangers; every eviction counted."""

from __future__ import annotations

import yaml
from prometheus_client import REGISTRY

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.sparkplug_sessions import MAX_STRANGER_SESSIONS
from plantwatch.plant.load import plant_from_documents
from plantwatch.store.sqlite import SqliteStore

NOW = 1767254400.0
NODE = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: cell-plc}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {format: sparkplug-b, topic: spBv1.0/plant-a/DDATA/edge-7/press-3, maxBytes: 1048576}
  sensors:
    - {name: temperature, type: temperature, field: Press/Temperature, range: {min: "-40", max: "200"}}
"""


def evictions(structure: str) -> float:
    return REGISTRY.get_sample_value("plantwatch_state_evictions_total", {"structure": structure}) or 0.0


def birth(seq: int, aliases: range, name: str = "m") -> sp.Payload:
    return sp.Payload(None, seq, tuple(sp.Metric(f"{name}/{a}", a, None, sp.DOUBLE, 1.0) for a in aliases))


def test_a_session_keeps_at_most_max_aliases_and_forgets_the_oldest_birth_first():
    s = sp.EdgeNodeSession()
    sp.apply(s, sp.Topic("g", "NBIRTH", "e"), birth(0, range(0)))
    per_device = sp.MAX_ALIASES // 4
    forgotten = 0
    for i in range(6):  # six devices of a quarter of the cap each: the first two make room
        out = sp.apply(s, sp.Topic("g", "DBIRTH", "e", f"d{i}"), birth(1 + i, range(per_device)))
        forgotten += out.evicted
    assert s.alias_count == sum(map(len, s.aliases.values())) == sp.MAX_ALIASES
    assert list(s.aliases) == ["d2", "d3", "d4", "d5"] and forgotten == 2 * per_device
    # a device born again moves to the back and replaces its table (no duplicates counted)
    sp.apply(s, sp.Topic("g", "DBIRTH", "e", "d2"), birth(7, range(10)))
    assert list(s.aliases)[-1] == "d2" and s.alias_count == 3 * per_device + 10
    # one birth larger than the cap keeps the first MAX_ALIASES of its aliases
    out = sp.apply(s, sp.Topic("g", "DBIRTH", "e", "huge"), birth(8, range(sp.MAX_ALIASES + 5)))
    assert s.alias_count == sp.MAX_ALIASES and list(s.aliases) == ["huge"] and out.evicted == 3 * per_device + 10 + 5


def test_a_session_keeps_the_aliases_of_its_devices_only():
    s = sp.EdgeNodeSession(devices=frozenset({"press"}))
    sp.apply(s, sp.Topic("g", "NBIRTH", "e"), birth(0, range(3)))
    sp.apply(s, sp.Topic("g", "DBIRTH", "e", "intruder"), birth(1, range(1000)))
    sp.apply(s, sp.Topic("g", "DBIRTH", "e", "press"), birth(2, range(5, 7), "p"))
    assert s.aliases == {"press": {5: "p/5", 6: "p/6"}} and s.alias_count == 2
    data = sp.Payload(None, 3, (sp.Metric(None, 6, None, sp.DOUBLE, 4.0),))
    assert sp.apply(s, sp.Topic("g", "DDATA", "e", "press"), data).values == {"p/6": 4.0}


def pipeline(tmp_path, sent=None):
    plant = plant_from_documents([("node", yaml.safe_load(NODE))])
    return Pipeline(
        plant,
        SqliteStore(tmp_path / "p.db"),
        publish=(lambda t, b: sent.append((t, b))) if sent is not None else None,
        now=NOW,
    )


def message(kind: str, edge: str, seq: int, payload: sp.Payload | None = None, device: str | None = None):
    """A Sparkplug message stamped 0.1 s per seq after NOW."""
    t = sp.Topic("plant-a", kind, edge, device if kind.startswith("D") else None)
    p = payload or sp.Payload(None, seq, ())
    return sp.topic(t), sp.encode_payload(sp.Payload(int(NOW * 1000) + 100 * seq, seq, p.metrics))


def test_births_of_strangers_and_of_unknown_devices_grow_no_alias_table(tmp_path):
    p = pipeline(tmp_path)
    p.process(
        [
            message("NBIRTH", "edge-7", 0),
            message("DBIRTH", "edge-7", 1, sp.Payload(None, 1, (sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 60.0),)), "press-3"),
        ],
        NOW,
    )
    batch = []
    for i in range(200):  # a known edge node with devices nobody declared, and strangers, each with 100 aliases
        batch.append(message("DBIRTH", "edge-7", 2 + i, birth(0, range(100)), f"fake-{i}"))
        batch.append(message("NBIRTH", f"stranger-{i}", 0, birth(0, range(100))))
        batch.append(message("DDATA", f"stranger-{i}", 1, sp.Payload(None, 1, (sp.Metric(None, 3, None, sp.DOUBLE, 1.0),)), "d"))
    p.process(batch, NOW)
    held = sum(s.alias_count for s in (*p.sparkplug._sessions.values(), *p.sparkplug._stranger_sessions.values()))
    assert held == 1  # the plant's own device's one alias
    # every unknown device's birth and every stranger's birth and alias-only data is still dead-lettered
    assert p.rejected["unknown_node"] == 600
    seq = 2 + 200
    p.process([message("DDATA", "edge-7", seq, sp.Payload(None, seq, (sp.Metric(None, 1, None, sp.DOUBLE, 61.0),)), "press-3")], NOW + 1)
    assert p.store.query("SELECT value FROM readings ORDER BY ts, value") == [(60.0,), (61.0,)]


def test_forgotten_strangers_are_counted(tmp_path):
    p = pipeline(tmp_path)
    before = evictions("sparkplug_stranger_sessions")
    p.process([message("NBIRTH", f"s-{i}", 0) for i in range(MAX_STRANGER_SESSIONS + 7)], NOW)
    assert len(p.sparkplug._stranger_sessions) == MAX_STRANGER_SESSIONS
    assert evictions("sparkplug_stranger_sessions") - before == 7


def test_alias_evictions_are_counted(tmp_path):
    p = pipeline(tmp_path)
    before = evictions("sparkplug_aliases")
    p.process([message("NBIRTH", "edge-7", 0), message("DBIRTH", "edge-7", 1, birth(1, range(sp.MAX_ALIASES + 3)), "press-3")], NOW)
    assert evictions("sparkplug_aliases") - before == 3
