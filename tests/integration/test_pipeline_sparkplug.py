"""Sparkplug B through the pipeline: births, alias-only data, a lost message → rebirth request."""

from __future__ import annotations

import yaml

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.pipeline import Pipeline, check_plant
from plantwatch.plant.load import plant_from_documents
from plantwatch.store.sqlite import SqliteStore

NODE = """
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {name: cell-plc}
spec:
  hardware: generic
  deviceId: edge-7
  payload: {format: sparkplug-b, topic: spBv1.0/plant-a/DDATA/edge-7/press-3}
  sensors:
    - {name: temperature, type: temperature, field: Press/Temperature, range: {min: "-40", max: "200"}}
    - {name: current, type: current, field: Press/Current, range: {min: "0", max: "100"}}
"""
NOW = 1767254400.0


def pipeline(tmp_path, sent):
    plant = plant_from_documents([("node", yaml.safe_load(NODE))])
    assert check_plant(plant) == []
    return Pipeline(
        plant,
        SqliteStore(tmp_path / "p.db"),
        publish=lambda topic, body: sent.append((topic, body)),
        now=NOW,
    )


def msg(kind, seq, *metrics, at=0.0, device="press-3"):
    """A message of edge-7 (device press-3), stamped `at` seconds after NOW plus 0.1 s per seq."""
    t = sp.Topic("plant-a", kind, "edge-7", device if kind.startswith("D") else None)
    return sp.topic(t), sp.encode_payload(sp.Payload(int((NOW + at) * 1000) + 100 * seq, seq, tuple(metrics)))


def test_sparkplug_session_to_readings_and_rebirth(tmp_path):
    sent = []
    p = pipeline(tmp_path, sent)
    p.process(
        [
            msg("NBIRTH", 0),
            msg("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 61.5), sp.Metric("Press/Current", 2, None, sp.FLOAT, 11.5)),
            msg("DDATA", 2, sp.Metric(None, 1, None, sp.DOUBLE, 62.0)),
        ],
        NOW,
    )
    assert p.readings_stored == 3 and sum(p.rejected.values()) == 0
    p.process([msg("DDATA", 7, sp.Metric(None, 2, None, sp.FLOAT, 12.0))], NOW + 1)  # seq 3..6 were lost
    assert p.rejected["sequence_gap"] == 1 and p.readings_stored == 3
    (ncmd,) = [(t, b) for t, b in sent if "/NCMD/" in t]
    assert ncmd[0] == "spBv1.0/plant-a/NCMD/edge-7"
    assert sp.decode_payload(ncmd[1]).metrics[0].name == sp.REBIRTH_METRIC
    p.process([msg("NBIRTH", 0, at=2), msg("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 63.0), at=2)], NOW + 2)
    assert p.readings_stored == 4 and p.online(NOW + 2)["cell-plc"]
    p.process([msg("NDEATH", 0, at=3)], NOW + 3)  # the edge node says goodbye (or its will does)
    assert p.online(NOW + 3)["cell-plc"] is False


def test_out_of_range_metric_is_rejected_and_unknown_edge_nodes_reported(tmp_path):
    sent = []
    p = pipeline(tmp_path, sent)
    p.process([msg("NBIRTH", 0), msg("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 900.0))], NOW)
    assert p.rejected["out_of_range"] == 1
    stranger = (
        sp.topic(sp.Topic("plant-a", "NBIRTH", "edge-99")),
        sp.encode_payload(sp.Payload(None, 0, (sp.Metric("x", 1, None, sp.DOUBLE, 1.0),))),
    )
    p.process([stranger, ("spBv1.0/plant-a/NDATA/edge-7", b"\xff\xff")], NOW)
    assert p.rejected["unknown_node"] == 1 and p.rejected["malformed"] == 1


def test_a_sparkplug_node_needs_its_data_topic():
    bad = yaml.safe_load(NODE)
    bad["spec"]["payload"]["topic"] = "spBv1.0/plant-a/NBIRTH/edge-7"
    (problem,) = check_plant(plant_from_documents([("node", bad)]))
    assert problem.startswith("SensorNode cell-plc: spec.payload.topic") and "NDATA" in problem


def test_unknown_node_policy_ignore(plant, tmp_path):
    from plantwatch.ingest.validate import Policy

    p = Pipeline(plant, SqliteStore(tmp_path / "i.db"), policy=Policy(unknown_node="ignore"), now=NOW)
    p.process([("sensors/nowhere/x/data", b"{}")], NOW)
    assert sum(p.rejected.values()) == 0 and p.messages == 1


def test_strangers_sparkplug_sessions_are_bounded_and_the_plants_own_are_kept(tmp_path):
    """Anyone may publish under spBv1.0/: a session per unknown edge node must not grow the gateway forever."""
    from plantwatch.ingest.sparkplug_sessions import MAX_STRANGER_SESSIONS

    sent = []
    p = pipeline(tmp_path, sent)
    p.process([msg("NBIRTH", 0), msg("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 60.0))], NOW)
    strangers = MAX_STRANGER_SESSIONS + 50
    for i in range(strangers):
        p.process(
            [
                (
                    sp.topic(sp.Topic("plant-a", "NBIRTH", f"stranger-{i}")),
                    sp.encode_payload(sp.Payload(None, 0, (sp.Metric("x", 1, None, sp.DOUBLE, 1.0),))),
                )
            ],
            NOW,
        )
    assert p.rejected["unknown_node"] == strangers  # every stranger is still dead-lettered
    held = len(p.sparkplug._sessions) + len(p.sparkplug._stranger_sessions)
    assert held <= MAX_STRANGER_SESSIONS + 1
    # the plant's own edge node kept its session: alias-only data still decodes, no rebirth asked
    p.process([msg("DDATA", 2, sp.Metric(None, 1, None, sp.DOUBLE, 61.0))], NOW + 1)
    assert p.store.query("SELECT value FROM readings WHERE sensor = 'temperature' ORDER BY ts") == [(60.0,), (61.0,)]
    assert not any("NCMD" in topic for topic, _ in sent)
