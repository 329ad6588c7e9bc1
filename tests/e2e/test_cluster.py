"""The control plane itself: the edge's fake nodes are Ready and take pods as the real edge would."""

from __future__ import annotations

import json

from tests.e2e.cluster import edge_nodes
from tests.e2e.conftest import wait_for


def get(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_edge_nodes_are_ready_with_their_labels(edge_cluster):
    cluster = edge_cluster
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")["items"]}
    for expected in edge_nodes():
        node = nodes[expected["metadata"]["name"]]
        assert expected["metadata"]["labels"].items() <= node["metadata"]["labels"].items()
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    jetson = nodes["jetson-01"]
    assert jetson["status"]["allocatable"]["nvidia.com/gpu"] == "1"


def test_pods_run_on_the_pis_and_gpu_pods_on_the_jetson(edge_cluster, namespace):
    cluster = edge_cluster
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pi-work"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "pi-work"}},
                 "template": {"metadata": {"labels": {"app": "pi-work"}}, "spec": {
                     "nodeSelector": {"plantwatch.io/hardware": "raspberry-pi"},
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}}))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu-work"},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}))

    def running() -> list[dict] | None:
        pods = get(cluster, "pods", "-n", namespace)["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return pods if len(pods) == 4 and len(ok) == 4 else None

    pods = wait_for(running, "4 pods Running on the fake edge nodes")
    placed = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    assert placed.pop("gpu-work") == "jetson-01"
    assert set(placed.values()) <= {"rpi-01", "rpi-02", "rpi-03"}
