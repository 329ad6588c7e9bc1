"""The edge is described once (edge/k3s/nodes.yaml): the k3s configs and the e2e fake nodes agree with it."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT
from tests.e2e.cluster import edge_devices, edge_nodes, k3s_labels, k3s_taints

K3S = ROOT / "edge" / "k3s"


def config_labels(role: str) -> dict[str, str]:
    config = yaml.safe_load((K3S / f"{role}-config.yaml").read_text())
    return dict(label.split("=", 1) for label in config["node-label"])


def test_the_k3s_configs_label_each_device_as_described():
    for device in edge_devices():
        assert config_labels(device["role"]) == k3s_labels(device), device["name"]


def test_the_k3s_configs_taint_each_device_as_described():
    for device in edge_devices():
        config = yaml.safe_load((K3S / f"{device['role']}-config.yaml").read_text())
        assert config.get("node-taint", []) == device.get("taints", []), device["name"]
    # the GPU node only: tolerated by the GPU inference pods alone (operator/plantwatch_operator/render.py)
    assert {d["name"]: k3s_taints(d) for d in edge_devices() if d.get("taints")} == {
        "jetson-01": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    }


def test_the_jetson_is_the_only_server_and_the_only_gpu():
    devices = {d["name"]: d for d in edge_devices()}
    assert [n for n, d in devices.items() if d["role"] == "server"] == ["jetson-01"]
    assert [n for n, d in devices.items() if "nvidia.com/gpu" in d["capacity"]] == ["jetson-01"]
    assert {d["role"] for d in devices.values()} == {"server", "agent"}


def test_the_fake_nodes_are_the_described_devices():
    devices = {d["name"]: d for d in edge_devices()}
    nodes = {n["metadata"]["name"]: n for n in edge_nodes()}
    assert nodes.keys() == devices.keys() == {"jetson-01", "rpi-01", "rpi-02", "rpi-03"}
    for name, node in nodes.items():
        device = devices[name]
        assert k3s_labels(device).items() <= node["metadata"]["labels"].items()
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == device["arch"]
        assert node["status"]["capacity"] == node["status"]["allocatable"] == device["capacity"]
        assert node["spec"]["taints"] == k3s_taints(device)
