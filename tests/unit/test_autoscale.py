"""The gateway's HPA on the pipeline's message rate, and GPU detectors bounded by the GPUs their nodes offer."""

from __future__ import annotations

import pytest

from plantwatch.plant.model import DetectorModel, parse_resource
from plantwatch_operator.autoscale import GATEWAY_METRIC, GatewayAutoscaling, gateway_hpa, gpu_bounded_hpa, gpus_on_matching_nodes
from plantwatch_operator.config import Config
from plantwatch_operator.render import ACCELERATOR_LABEL, GPU_RESOURCE, render_detector
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


def cuda_detector(max_replicas: int) -> DetectorModel:
    """The sample plant's detector, served on CUDA."""
    doc = next(d for d in sample_docs() if d["kind"] == "DetectorModel")
    spec = {**doc["spec"], "executionProvider": "cuda", "autoscaling": {"minReplicas": 1, "maxReplicas": max_replicas}}
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
