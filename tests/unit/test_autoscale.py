"""The gateway's HPA on the pipeline's message rate, and GPU detectors bounded by the GPUs their nodes offer."""

from __future__ import annotations

import pytest

from plantwatch.plant.model import DetectorModel, parse_resource
from plantwatch_operator.autoscale import GATEWAY_METRIC, GatewayAutoscaling, gateway_hpa, gpu_bounded_hpa, gpus_on_matching_nodes
from plantwatch_operator.config import Config
from plantwatch_operator.nodes import as_nodes, gpu_node
from plantwatch_operator.render import ACCELERATOR_LABEL, GPU_RESOURCE, gpu_bound, render_detector
from tests.e2e.cluster import edge_nodes
from tests.unit.test_render import sample_docs


def test_the_gateway_hpa_keeps_each_replica_under_its_message_rate():
    hpa = gateway_hpa(
        "plantwatch-gateway", "plant-a", {}, GatewayAutoscaling(min_replicas=1, max_replicas=6, target_messages_per_second=500)
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"] == {"metric": {"name": GATEWAY_METRIC}, "target": {"type": "AverageValue", "averageValue": "500"}}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


@pytest.mark.parametrize("low, high", [(0, 3), (4, 3)])
def test_gateway_autoscaling_refuses_impossible_bounds(low, high):
    with pytest.raises(ValueError, match="minReplicas <= maxReplicas"):
        GatewayAutoscaling(min_replicas=low, max_replicas=high)


def cuda_detector(max_replicas: int, provider: str = "cuda") -> DetectorModel:
    """The sample plant's detector, served on CUDA (or `provider`)."""
    doc = next(d for d in sample_docs() if d["kind"] == "DetectorModel")
    spec = {**doc["spec"], "executionProvider": provider, "autoscaling": {"minReplicas": 1, "maxReplicas": max_replicas}}
    return parse_resource({**doc, "metadata": {**doc["metadata"], "namespace": "plant-a"}, "spec": spec})


def test_the_operator_reads_the_gateway_bounds_and_refuses_what_is_no_number():
    from plantwatch_operator.config import store

    assert store({"PLANTWATCH_GATEWAY_MAX_REPLICAS": "8"})["gateway_autoscaling"] == GatewayAutoscaling(max_replicas=8)
    assert "gateway_autoscaling" not in store({})
    with pytest.raises(ValueError, match="PLANTWATCH_GATEWAY_MIN_REPLICAS='two': expected a whole number"):
        store({"PLANTWATCH_GATEWAY_MIN_REPLICAS": "two"})
    with pytest.raises(ValueError, match="minReplicas <= maxReplicas"):
        store({"PLANTWATCH_GATEWAY_MIN_REPLICAS": "5"})


def test_a_cuda_detectors_replicas_are_bounded_by_the_gpus_of_the_nodes_it_may_run_on():
    nodes = edge_nodes()  # the edge as edge/k3s/nodes.yaml describes it: one Jetson
    (hpa,) = [m for m in render_detector(cuda_detector(3), Config()) if m["kind"] == "HorizontalPodAutoscaler"]
    gpus = gpus_on_matching_nodes(nodes, {ACCELERATOR_LABEL: "nvidia"}, GPU_RESOURCE)
    assert gpus == 1
    assert gpu_bounded_hpa(hpa, gpus)["spec"]["maxReplicas"] == 1
    jetsons = [n for n in nodes if n["metadata"]["labels"].get(ACCELERATOR_LABEL) == "nvidia"]
    two = jetsons + [{**jetsons[0], "metadata": {**jetsons[0]["metadata"], "name": "jetson-2"}}]
    assert gpu_bounded_hpa(hpa, gpus_on_matching_nodes(two, {ACCELERATOR_LABEL: "nvidia"}, GPU_RESOURCE))["spec"]["maxReplicas"] == 2
    cordoned = [{**n, "spec": {"unschedulable": True}} for n in two]
    assert gpu_bounded_hpa(hpa, gpus_on_matching_nodes(cordoned, {ACCELERATOR_LABEL: "nvidia"}, GPU_RESOURCE))["spec"]["maxReplicas"] == 1


def hpa_of(objects: list[dict]) -> dict:
    (hpa,) = [m for m in objects if m["kind"] == "HorizontalPodAutoscaler"]
    return hpa["spec"]


def test_the_operator_caps_a_gpu_detectors_hpa_at_the_gpus_of_the_nodes_it_reads():
    jetson = next(n for n in edge_nodes() if n["metadata"]["labels"].get(ACCELERATOR_LABEL) == "nvidia")
    assert hpa_of(render_detector(cuda_detector(3), Config(), nodes=edge_nodes()))["maxReplicas"] == 1
    second = {**jetson, "metadata": {**jetson["metadata"], "name": "jetson-02"}}
    assert hpa_of(render_detector(cuda_detector(3), Config(), nodes=[*edge_nodes(), second]))["maxReplicas"] == 2
    # Nodes unknown (the operator may not read them): the spec's bound, uncapped
    assert hpa_of(render_detector(cuda_detector(3), Config(), nodes=None))["maxReplicas"] == 3
    # a cpu detector needs no GPU, however few there are
    assert hpa_of(render_detector(cuda_detector(3, "cpu"), Config(), nodes=[]))["maxReplicas"] == 3


def test_the_bound_says_what_it_capped_and_why():
    assert gpu_bound(cuda_detector(8), edge_nodes()) == (1, 1, "maxReplicas 8 capped to 1: 1 nvidia.com/gpu allocatable on matching nodes")
    assert gpu_bound(cuda_detector(1), edge_nodes()) == (1, 1, None)  # nothing capped, nothing said
    assert gpu_bound(cuda_detector(3), None) is None


def test_the_node_cache_keeps_only_what_the_bound_reads():
    """A kubelet heartbeat changes none of it, so the operator re-renders nothing on one."""
    from kubernetes.client import V1Node, V1NodeSpec, V1NodeStatus, V1ObjectMeta

    def node(name: str, gpus: str | None, heartbeat: str = "t0") -> V1Node:
        allocatable = {"cpu": "6", **({GPU_RESOURCE: gpus} if gpus else {})}
        return V1Node(
            metadata=V1ObjectMeta(name=name, labels={ACCELERATOR_LABEL: "nvidia"}, resource_version=heartbeat),
            spec=V1NodeSpec(),
            status=V1NodeStatus(allocatable=allocatable),
        )

    assert gpu_node(node("rpi-01", None), GPU_RESOURCE) is None
    assert gpu_node(node("jetson-01", "1"), GPU_RESOURCE) == gpu_node(node("jetson-01", "1", heartbeat="t1"), GPU_RESOURCE)
    known = {"jetson-01": gpu_node(node("jetson-01", "2"), GPU_RESOURCE)}
    assert gpus_on_matching_nodes(as_nodes(known, GPU_RESOURCE), {ACCELERATOR_LABEL: "nvidia"}, GPU_RESOURCE) == 2
