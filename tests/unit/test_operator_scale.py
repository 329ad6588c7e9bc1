"""The operator at a plant's size, without a cluster: rendering 5,000 nodes keeps every object under the
API server's limit, a node added rewrites one shard, and a burst of changes is one render."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from plantwatch.plant.load import load_plant, matched_series, plant_series, rule_selects
from plantwatch_operator import render
from plantwatch_operator.coalesce import Coalescer, Pace, plant_event_marks
from plantwatch_operator.config import Config
from plantwatch_operator.render import CONFIGMAP_BUDGET, PLANT_CONFIGMAP, plant_manifest, render_ingestion
from plantwatch_operator.retrain import render_retrain
from plantwatch_operator.verdicts import parse, series_kinds

CONFIG = Config(image="plantwatch:test", broker_url="mqtt://broker:1883")
#: The API server refuses an object larger than this (etcd's request limit, 1.5 MiB, less its overhead).
OBJECT_LIMIT = 1024 * 1024


def node(i: int) -> dict:
    name = f"node-{i:05d}"
    return {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "SensorNode",
        "metadata": {"name": name, "labels": {"plantwatch.io/line": f"line-{i % 10}"}},
        "spec": {
            "hardware": "esp32",
            "payload": {"format": "esp32-json", "topic": f"sensors/line-{i % 10}/{name}/data"},
            "sensors": [
                {"name": s, "type": t, "unit": u, "field": f, "range": {"min": "0", "max": "100"}}
                for s, t, u, f in [
                    ("temperature", "temperature", "celsius", "temperature_c"),
                    ("vibration", "vibration", "g", "vibration_g"),
                    ("current", "current", "ampere", "current_a"),
                ]
            ],
        },
    }


RULE = {
    "apiVersion": "plantwatch.io/v1alpha1",
    "kind": "AlertRule",
    "metadata": {"name": "overtemperature"},
    "spec": {
        "selector": {"sensorType": "temperature"},
        "condition": {"type": "Threshold", "threshold": {"direction": "Above", "warning": "70", "critical": "90"}},
        "receivers": ["console"],
    },
}


def rendered(nodes: int) -> list[dict]:
    return render_ingestion("plant-a", [plant_manifest(node(i)) for i in range(nodes)] + [plant_manifest(RULE)], CONFIG)


def gateway_folder(objects: list[dict], folder) -> None:
    """Lay the plant's ConfigMaps out as the gateway's projected volume does."""
    by_name = {o["metadata"]["name"]: o["data"]["plant.yaml"] for o in objects if o["kind"] == "ConfigMap"}
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "plant"]
    for source in volume["projected"]["sources"]:
        ref = source["configMap"]
        (folder / ref.get("items", [{"path": "plant.yaml"}])[0]["path"]).write_text(by_name[ref["name"]])


def test_a_5000_node_plant_renders_into_objects_the_api_server_accepts():
    objects = rendered(5000)
    for o in objects:
        size = len(json.dumps(o))
        assert size < OBJECT_LIMIT, f"{o['kind']} {o['metadata']['name']} is {size} bytes"
    configmaps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert len(configmaps) > 2 and configmaps[0]["metadata"]["name"] == PLANT_CONFIGMAP
    assert all(len(c["data"]["plant.yaml"]) <= CONFIGMAP_BUDGET for c in configmaps)
    names = [d["metadata"]["name"] for c in configmaps for d in yaml.load_all(c["data"]["plant.yaml"], Loader=yaml.CSafeLoader)]
    assert sorted(names) == sorted([*(f"node-{i:05d}" for i in range(5000)), "overtemperature"])


def test_the_gateway_loads_a_sharded_plant_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "CONFIGMAP_BUDGET", 16 * 1024)  # shards at 200 nodes as at a few thousand
    objects = rendered(200)
    assert sum(o["kind"] == "ConfigMap" for o in objects) > 2
    gateway_folder(objects, tmp_path)
    plant = load_plant(tmp_path)
    assert len(plant.nodes) == 200 and [r.name for r in plant.rules] == ["overtemperature"]


def test_a_small_plant_stays_in_one_configmap():
    configmaps = [o for o in rendered(50) if o["kind"] == "ConfigMap"]
    assert [c["metadata"]["name"] for c in configmaps] == [PLANT_CONFIGMAP]
    assert len(list(yaml.safe_load_all(configmaps[0]["data"]["plant.yaml"]))) == 51


def test_a_node_added_to_a_sharded_plant_changes_its_shard_alone():
    before = {o["metadata"]["name"]: o["data"] for o in rendered(3000) if o["kind"] == "ConfigMap"}
    after = {o["metadata"]["name"]: o["data"] for o in rendered(3001) if o["kind"] == "ConfigMap"}
    assert before.keys() == after.keys()
    changed = [name for name in after if after[name] != before[name]]
    assert len(before) > 2 and len(changed) == 1 and changed[0] != PLANT_CONFIGMAP


def test_the_retraining_job_reads_the_same_shards_as_the_gateway():
    from plantwatch.plant.model import parse_resource

    detector = parse_resource(
        {
            "apiVersion": "plantwatch.io/v1alpha1",
            "kind": "DetectorModel",
            "metadata": {"name": "wear", "namespace": "plant-a"},
            "spec": {
                "source": {"url": {"url": "https://models.invalid/m.onnx", "sha256": "0" * 64}},
                "features": {"sensors": ["temperature"], "window": 30, "step": 5, "aggregations": ["last"]},
                "threshold": "0.6",
                "retrain": {"schedule": "0 3 * * *", "window": "7d"},
            },
        }
    )
    [cronjob] = [o for o in render_retrain(detector, CONFIG, shards=4) if o["kind"] == "CronJob"]
    volumes = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    [plant] = [v for v in volumes if v["name"] == "plant"]
    assert [s["configMap"]["name"] for s in plant["projected"]["sources"]] == [
        PLANT_CONFIGMAP,
        *(f"{PLANT_CONFIGMAP}-nodes-{i}" for i in range(4)),
    ]


def test_a_changed_spec_is_judged_afresh_and_an_unchanged_one_is_remembered():
    body = {**node(1), "metadata": {**node(1)["metadata"], "uid": "u1", "generation": 1}}
    assert parse(body) is parse(json.loads(json.dumps(body)))
    broken = json.loads(json.dumps(body))
    broken["spec"]["sensors"][0]["type"] = "smell"
    assert isinstance(parse(broken), str) and "smell" in parse(broken)


def test_a_burst_of_marks_is_rendered_once_and_a_mark_while_rendering_once_more():
    runs: list[str] = []
    started, release = threading.Event(), threading.Event()

    def work(key: str) -> None:
        runs.append(key)
        if len(runs) == 1:
            started.set()
            release.wait(10)

    c = Coalescer(work, quiet=0.05, longest=0.5)
    for _ in range(500):
        c.mark("plant-a")
    assert started.wait(10)
    for _ in range(500):  # while the first render runs
        c.mark("plant-a")
    c.mark("plant-b")
    release.set()
    deadline = time.monotonic() + 10
    while c.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(runs) == ["plant-a", "plant-a", "plant-b"]


def test_a_failed_render_is_retried():
    runs: list[str] = []

    def work(key: str) -> None:
        runs.append(key)
        if len(runs) == 1:
            raise RuntimeError("API server gone")

    c = Coalescer(work, quiet=0.01, longest=0.05, retry=0.05)
    c.mark("plant-a")
    deadline = time.monotonic() + 10
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runs == ["plant-a", "plant-a"]


def test_pace_spaces_writes_to_its_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pace = Pace(rate=50, burst=5, clock=lambda: now[0], sleep=sleep)
    for _ in range(105):
        pace.wait()
    assert now[0] == pytest.approx(100 / 50)  # the burst free, then one write per 1/50 s


def test_only_a_change_a_render_reads_marks_the_plant():
    seen: dict = {}
    meta = {"uid": "u1", "generation": 1, "labels": {"plantwatch.io/line": "a"}}
    assert plant_event_marks(seen, None, meta)  # listed at start: the plant is rendered once
    assert not plant_event_marks(seen, "MODIFIED", meta)  # a status write: same generation and labels
    assert plant_event_marks(seen, "MODIFIED", {**meta, "generation": 2})  # the spec changed
    assert plant_event_marks(seen, "MODIFIED", {**meta, "generation": 2, "labels": {"plantwatch.io/line": "b"}})
    assert plant_event_marks(seen, "MODIFIED", {**meta, "generation": 2, "labels": {"plantwatch.io/line": "b"}, "deletionTimestamp": "x"})
    assert plant_event_marks(seen, "DELETED", meta)
    assert seen == {}  # an object gone is forgotten: a thousand deleted nodes leave nothing behind


def test_rules_counted_over_series_kinds_match_every_series():
    nodes = [parse(node(i)) for i in range(60)]
    nodes += [parse({**node(60), "metadata": {"name": "node-lone", "labels": {"plantwatch.io/line": "line-3", "zone": "b"}}})]
    series = plant_series(nodes, [])
    rules = [
        parse(RULE),
        parse(
            {
                **RULE,
                "metadata": {"name": "line-3"},
                "spec": {
                    **RULE["spec"],
                    "selector": {"sensor": "vibration", "nodeSelector": {"matchLabels": {"plantwatch.io/line": "line-3"}}},
                },
            }
        ),
        parse(
            {**RULE, "metadata": {"name": "zone-b"}, "spec": {**RULE["spec"], "selector": {"nodeSelector": {"matchLabels": {"zone": "b"}}}}}
        ),
        parse({**RULE, "metadata": {"name": "none"}, "spec": {**RULE["spec"], "selector": {"sensorType": "pressure"}}}),
    ]
    kinds = series_kinds(series)
    assert len(kinds) < len(series) / 5  # the point: a few kinds stand for many series
    for rule in rules:
        counted = sum(n for (n_, s, t), n in kinds if rule_selects(rule, n_, s, t))
        assert counted == matched_series(rule, series), rule.name
    assert [matched_series(r, series) for r in rules] == [61, 7, 3, 0]  # the cases differ
