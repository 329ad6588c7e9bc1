"""Autoscaling (pure): the gateway's HorizontalPodAutoscaler on the pipeline's message rate, and the
bound GPU detectors' replicas must respect (the cluster's Nodes as nodes.GpuNodes keeps them).

The gateway scales on the external metric GATEWAY_METRIC, which prometheus-adapter serves from the
gateways' own plantwatch_messages_total with the rules the chart renders
(charts/plantwatch/templates/monitoring-prometheus-adapter-configmap.yaml): the messages every gateway
of the namespace processed per second. An AverageValue target divides it by the replicas, so the HPA
keeps each replica under `target_messages_per_second`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The external metric the chart's prometheus-adapter rules serve (one series per namespace).
GATEWAY_METRIC = "plantwatch_gateway_messages_per_second"


@dataclass(frozen=True)
class GatewayAutoscaling:
    min_replicas: int = 1
    max_replicas: int = 4
    #: Messages per second one replica is kept under: below what one replica drains (bench/ingest.py),
    #: so that the processed rate, which is capped at the replicas' capacity, still reads above it.
    target_messages_per_second: int = 2000
    #: Seconds of lower recommendations before scaling down: a shard handoff costs a lease period, so a
    #: dip in the rate must last before replicas go.
    scale_down_stabilization_seconds: int = 300

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"gateway autoscaling: expected 1 <= minReplicas <= maxReplicas, got {self.min_replicas} and {self.max_replicas}"
            )
        if self.target_messages_per_second < 1 or self.scale_down_stabilization_seconds < 0:
            raise ValueError(
                "gateway autoscaling: expected targetMessagesPerSecond >= 1 and scaleDownStabilizationSeconds >= 0, got "
                f"{self.target_messages_per_second} and {self.scale_down_stabilization_seconds}"
            )


def hpa(name: str, namespace: str, lab: dict[str, str], min_replicas: int, max_replicas: int, metric: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v2 HPA of Deployment `name` on one metric (the gateway's and each detector's)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace, "labels": lab},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [metric],
        },
    }


def gateway_hpa(name: str, namespace: str, lab: dict[str, str], settings: GatewayAutoscaling) -> dict[str, Any]:
    """The gateway's HPA: External GATEWAY_METRIC of its namespace, an AverageValue target per replica;
    scale-up at once, scale-down after the stabilization window and by one replica a period, so shards
    are handed over one replica at a time."""
    metric = {
        "type": "External",
        "external": {
            "metric": {"name": GATEWAY_METRIC},
            "target": {"type": "AverageValue", "averageValue": str(settings.target_messages_per_second)},
        },
    }
    out = hpa(name, namespace, lab, settings.min_replicas, settings.max_replicas, metric)
    out["spec"]["behavior"] = {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {
            "stabilizationWindowSeconds": settings.scale_down_stabilization_seconds,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}],
        },
    }
    return out


def gpus_on_matching_nodes(nodes: list[dict[str, Any]], node_selector: dict[str, str], resource: str) -> int:
    """The allocatable `resource` (nvidia.com/gpu) of the nodes whose labels match `node_selector`
    and that accept pods (not cordoned)."""
    total = 0
    for node in nodes:
        node_labels = node.get("metadata", {}).get("labels", {})
        if node.get("spec", {}).get("unschedulable") or any(node_labels.get(k) != v for k, v in node_selector.items()):
            continue
        total += int(node.get("status", {}).get("allocatable", {}).get(resource, "0"))
    return total


def gpu_replicas(max_replicas: int, gpus: int, gpus_per_replica: int = 1) -> int:
    """The most replicas `gpus` hold, never more than `max_replicas` and at least one (which waits
    Pending where no GPU is)."""
    return max(1, min(max_replicas, gpus // gpus_per_replica))


def gpu_bound_message(max_replicas: int, gpus: int, resource: str, gpus_per_replica: int = 1) -> str | None:
    """What the DetectorModel's status says when the GPUs cap its maxReplicas; None when they do not."""
    most = gpu_replicas(max_replicas, gpus, gpus_per_replica)
    if most == max_replicas:
        return None
    return f"maxReplicas {max_replicas} capped to {most}: {gpus} {resource} allocatable on matching nodes"


def gpu_bounded_hpa(hpa: dict[str, Any], gpus: int, gpus_per_replica: int = 1) -> dict[str, Any]:
    """A GPU detector's HPA with maxReplicas at most what the matching nodes' GPUs hold (a replica more
    would sit Pending), minReplicas no higher."""
    spec = hpa["spec"]
    most = gpu_replicas(spec["maxReplicas"], gpus, gpus_per_replica)
    return {**hpa, "spec": {**spec, "maxReplicas": most, "minReplicas": min(spec["minReplicas"], most)}}
