"""Placement as edge/k3s describes it, decided by the control plane's own scheduler on the edge's nodes.

The fake nodes are made from edge/k3s/nodes.yaml (tests/e2e/cluster.py), so their labels, taints and
capacity are the real edge's: the Jetson (GPU, tainted nvidia.com/gpu=present:NoSchedule) and three Pis.
kwok runs whatever the scheduler binds, so where a pod lands is where it would run on the edge:

- the inference pods of a cuda/tensorrt DetectorModel: on the Jetson, by the operator's toleration and
  node selector, with one nvidia.com/gpu;
- the gateway, the chart's broker and cpu inference: on a Pi (the operator's and the chart's preferred
  node affinity), never on the Jetson. A preferred affinity only prefers: what guarantees it is the
  Jetson's taint (held by the first test) and that none of these pods tolerates it (the second).
"""

from __future__ import annotations

import copy
import json
import subprocess

import yaml

from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.cluster import edge_devices, edge_nodes
from tests.e2e.test_operator import crds, get, operator, running_pods, wait_for  # noqa: F401 (fixtures)

HELM = ROOT / ".cache" / "bin" / "helm"
CHART = ROOT / "charts" / "plantwatch"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def tolerates_gpu_taint(pod: dict) -> bool:
    return any(
        t.get("key") == GPU_TAINT["key"] and t.get("effect") in (None, "", GPU_TAINT["effect"]) and t.get("operator") == "Exists"
        for t in pod["spec"].get("tolerations", [])
    )


def test_the_fake_nodes_are_the_edge_as_nodes_yaml_describes_it(edge_cluster):
    nodes = {n["metadata"]["name"]: n for n in get(edge_cluster, "nodes", "-l", "plantwatch.io/hardware")["items"]}
    described = {n["metadata"]["name"]: n for n in edge_nodes()}
    assert nodes.keys() == described.keys() == {d["name"] for d in edge_devices()}
    for name, node in nodes.items():
        assert described[name]["metadata"]["labels"].items() <= node["metadata"]["labels"].items(), name
        assert node["spec"].get("taints", []) == described[name]["spec"]["taints"], name
    assert nodes["jetson-01"]["spec"]["taints"] == [GPU_TAINT]
    assert nodes["jetson-01"]["status"]["allocatable"]["nvidia.com/gpu"] == "1"


def test_gpu_inference_on_the_jetson_and_everything_else_on_the_pis(edge_cluster, operator, namespace):  # noqa: F811
    cluster, ns = edge_cluster, namespace
    pis = {d["name"] for d in edge_devices() if d["hardware"] == "raspberry-pi"}
    cpu = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    gpu = copy.deepcopy(cpu)
    gpu["metadata"]["name"], gpu["spec"]["executionProvider"] = "spindle-wear", "tensorrt"
    for f in ("nodes.yaml", "bearing-wear-model.yaml"):
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE_PLANT / f))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([cpu, gpu]))
    # the chart's broker, as `helm install` renders it (its claim binds one of the session's volumes)
    broker = subprocess.run(
        [str(HELM), "template", "edge", str(CHART), "--kube-version", "1.36.0", "--namespace", ns]
        + ["-s", "templates/broker-deployment.yaml", "-s", "templates/broker-persistentvolumeclaim.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=broker)

    def placed(selector: str) -> dict:
        (pod,) = wait_for(lambda: running_pods(cluster, ns, selector), f"a running pod for {selector}")
        return pod

    tensorrt = placed("plantwatch.io/detector=spindle-wear")
    assert tensorrt["spec"]["nodeName"] == "jetson-01"
    assert tensorrt["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert tolerates_gpu_taint(tensorrt) and tensorrt["spec"]["nodeSelector"] == {"plantwatch.io/accelerator": "nvidia"}

    for what, selector in (
        ("cpu inference", "plantwatch.io/detector=bearing-wear"),
        ("the gateway", "app.kubernetes.io/component=gateway"),
        ("the chart's broker", "app.kubernetes.io/instance=edge,app.kubernetes.io/component=broker"),
    ):
        pod = placed(selector)
        assert pod["spec"]["nodeName"] in pis, f"{what} on {pod['spec']['nodeName']}, not on a Pi"
        assert not tolerates_gpu_taint(pod), f"{what} tolerates the Jetson's GPU taint"
        assert "nvidia.com/gpu" not in json.dumps(pod["spec"]["containers"][0].get("resources", {})), what
