"""The edge description (edge/k3s) is consistent, and the e2e fake nodes come from it."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import edge_nodes


def test_fake_nodes_are_the_k3s_nodes():
    configs = {yaml.safe_load(p.read_text())["node-name"]: yaml.safe_load(p.read_text())
               for p in (ROOT / "edge" / "k3s" / "nodes").glob("*.yaml")}
    nodes = {n["metadata"]["name"]: n for n in edge_nodes()}
    assert nodes.keys() == configs.keys() == {"jetson-01", "rpi-01", "rpi-02", "rpi-03"}
    for name, config in configs.items():
        for label in config["node-label"]:
            key, value = label.split("=", 1)
            assert nodes[name]["metadata"]["labels"][key] == value
    assert nodes["jetson-01"]["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in nodes["rpi-01"]["status"]["capacity"]


def test_only_the_jetson_is_a_server():
    servers = [p.stem for p in (ROOT / "edge" / "k3s" / "nodes").glob("*.yaml")
               if "disable" in yaml.safe_load(p.read_text())]
    assert servers == ["jetson-01"]
