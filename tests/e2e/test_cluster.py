"""The control plane itself: the edge's fake nodes are Ready and take pods as the real edge would."""

from __future__ import annotations

import json

JETSON = {
    "plantwatch.io/hardware": "jetson",
    "kubernetes.io/arch": "arm64",
    "nvidia.com/gpu.present": "true",
    "plantwatch.io/accelerator": "nvidia",
}
PI = {"plantwatch.io/hardware": "raspberry-pi", "kubernetes.io/arch": "arm64"}
PAUSE = "registry.k8s.io/pause:3.10"


def get(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def is_ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def test_edge_nodes_are_ready_with_their_labels(edge_cluster):
    cluster = edge_cluster
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")["items"]}
    expected = {"jetson-01": JETSON, "rpi-01": PI, "rpi-02": PI, "rpi-03": PI}
    for name, labels in expected.items():
        assert labels.items() <= nodes[name]["metadata"]["labels"].items(), name
        assert is_ready(nodes[name]), name
    assert nodes["jetson-01"]["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in nodes["rpi-01"]["status"]["allocatable"]


def test_a_deployment_runs_on_the_pis(edge_cluster, namespace):
    cluster = edge_cluster
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "pi-work"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "pi-work"}},
                    "template": {
                        "metadata": {"labels": {"app": "pi-work"}},
                        "spec": {
                            "nodeSelector": {"plantwatch.io/hardware": "raspberry-pi"},
                            "containers": [{"name": "pause", "image": PAUSE}],
                        },
                    },
                },
            }
        ),
    )
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/pi-work", "--timeout=90s")
    pods = get(cluster, "pods", "-n", namespace, "-l", "app=pi-work")["items"]
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Running" and is_ready(p) for p in pods)
    assert {p["spec"]["nodeName"] for p in pods} <= {"rpi-01", "rpi-02", "rpi-03"}


def test_a_gpu_pod_lands_on_the_jetson(edge_cluster, namespace):
    cluster = edge_cluster
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "gpu-work"},
                "spec": {
                    "containers": [{"name": "pause", "image": PAUSE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                    # the Jetson's taint (edge/k3s/nodes.yaml): only GPU work tolerates it
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            }
        ),
    )
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/gpu-work", "--timeout=90s")
    pod = get(cluster, "pod", "-n", namespace, "gpu-work")
    assert pod["spec"]["nodeName"] == "jetson-01"
    assert pod["status"]["phase"] == "Running"
