"""A GPU detector's HorizontalPodAutoscaler never asks for more pods than its nodes' GPUs hold.

On the edge's fake nodes (edge/k3s/nodes.yaml: one Jetson with one nvidia.com/gpu), a tensorrt DetectorModel
asking for up to three replicas gets an HPA of at most one, and its status says why; a second Jetson joining
raises the bound to two, and its leaving lowers it again. The operator reads the Nodes through one watch,
so the bound follows without any change to the DetectorModel. Where it may not read Nodes, it says so once
and leaves the HPA unbounded (render_detector with no nodes: tests/unit/test_autoscale.py).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import EXAMPLE_PLANT
from tests.e2e.cluster import edge_devices, fake_node
from tests.e2e.host_pods import service_account_kubeconfig
from tests.e2e.test_operator import conditions, crds, get, operator, wait_for  # noqa: F401 (fixtures)

DETECTOR = "spindle-wear"
HPA = f"plantwatch-detector-{DETECTOR}"


def wait_capped(cluster, ns: str, replicas: int, what: str) -> None:
    """Until the HPA asks for at most `replicas` and the DetectorModel's Available says why; failing with what was seen."""
    why = f"maxReplicas 3 capped to {replicas}: {replicas} nvidia.com/gpu allocatable on matching nodes"
    seen = []

    def capped() -> bool:
        hpa = get(cluster, "hpa", HPA, "-n", ns)
        available = conditions(get(cluster, "detectormodel", DETECTOR, "-n", ns)).get("Available", {})
        seen[:] = [(hpa and hpa["spec"]["maxReplicas"], available.get("message"))]
        return bool(hpa) and hpa["spec"]["maxReplicas"] == replicas and available.get("message", "").endswith(why)

    try:
        wait_for(capped, what)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc}\nlast seen: (HPA maxReplicas, Available message) = {seen}", pytrace=False)


def test_a_gpu_detectors_hpa_follows_the_gpus_of_the_nodes(edge_cluster, operator, namespace):  # noqa: F811
    cluster, ns = edge_cluster, namespace
    detector = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    detector["metadata"]["name"], detector["spec"]["executionProvider"] = DETECTOR, "tensorrt"
    detector["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    for f in ("nodes.yaml", "bearing-wear-model.yaml"):
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE_PLANT / f))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(detector))
    wait_capped(cluster, ns, 1, "the HPA capped at the one Jetson's GPU, and the status saying so")

    jetson = next(d for d in edge_devices() if d["hardware"] == "jetson")
    second = fake_node({**copy.deepcopy(jetson), "name": "jetson-02"})
    try:
        cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(second))
        wait_capped(cluster, ns, 2, "the cap raised to 2 once a second Jetson joined")
    finally:
        cluster.kubectl("delete", "node", "jetson-02", "--ignore-not-found", check=False)
    wait_capped(cluster, ns, 1, "the cap back at 1 once it left")


REFUSED = """
import logging, sys
from plantwatch_operator.nodes import GpuNodes
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
changes = []
nodes = GpuNodes("nvidia.com/gpu", on_change=lambda: changes.append(1))
nodes.start()
nodes.start()  # a second GPU DetectorModel: nothing listed or said again
print("snapshot", nodes.snapshot(), "changes", len(changes))
"""


def test_without_permission_to_read_nodes_the_bound_is_off_and_said_once(cluster, namespace, tmp_path):
    """An identity without list/watch on nodes (a namespaced install's own RBAC): the API server refuses, the GPU
    nodes stay unknown (render_detector then keeps spec.autoscaling.maxReplicas), and one warning says why."""
    cluster.kubectl("create", "serviceaccount", "no-nodes", "-n", namespace)
    kubeconfig = service_account_kubeconfig(cluster, namespace, "no-nodes", tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run([sys.executable, "-c", REFUSED], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "snapshot None changes 0" in done.stdout, done.stdout
    assert done.stdout.count("may not list and watch Nodes") == 1, done.stdout
