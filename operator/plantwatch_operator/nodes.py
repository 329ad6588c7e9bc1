"""The cluster's GPU nodes, as the GPU detectors' bound reads them (render.gpu_bound): one list, then one
watch, on a thread of its own.

The operator reads Nodes for this alone, and only once a cuda/tensorrt DetectorModel exists. A render reads
the cache, never the API server, so the bound costs no request per object. kubelet heartbeats and pod
churn change no GPU node's labels, schedulability or allocatable GPUs: `gpu_nodes` keeps only those, and
`on_change` is called only when they changed (a Jetson joined, left, was cordoned or relabelled).

Without permission to list or watch Nodes (a namespaced install with its own RBAC), the bound is not
applied: the HPAs keep spec.autoscaling.maxReplicas, and a warning says so once.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from plantwatch.kube import api_client

log = logging.getLogger(__name__)

#: A node as gpus_on_matching_nodes reads it: (name, its labels, unschedulable, allocatable GPUs).
GpuNode = tuple[str, tuple[tuple[str, str], ...], bool, int]


def gpu_node(node: client.V1Node, resource: str) -> GpuNode | None:
    """What the bound reads of `node`; None when it offers no `resource`."""
    allocatable = (node.status.allocatable if node.status else None) or {}
    try:
        gpus = int(allocatable.get(resource, "0"))
    except ValueError:  # a quantity such as "2k" is no GPU count a device plugin reports
        gpus = 0
    if gpus <= 0:
        return None
    labels = tuple(sorted((node.metadata.labels or {}).items()))
    return node.metadata.name, labels, bool(node.spec and node.spec.unschedulable), gpus


def as_nodes(known: dict[str, GpuNode], resource: str) -> list[dict[str, Any]]:
    """The GPU nodes in the API's shape, which autoscale.gpus_on_matching_nodes reads."""
    return [
        {
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {resource: str(gpus)}},
        }
        for name, labels, unschedulable, gpus in sorted(known.values())
    ]


class GpuNodes:
    """The GPU nodes of the cluster, kept by a list and a watch from `start()` on."""

    def __init__(self, resource: str, on_change: Callable[[], None], retry: float = 5.0) -> None:
        self.resource, self._on_change, self._retry = resource, on_change, retry
        self._lock, self._starting = threading.Lock(), threading.Lock()
        self._known: dict[str, GpuNode] | None = None  # None: not listed (yet), or not permitted
        self._started = False
        self._forbidden = False

    def start(self) -> None:
        """List the Nodes now (so that the first render is bounded already), then watch them on a thread
        started in the caller's context (kopf's, for the Events of the renders `on_change` asks for)."""
        with self._starting:  # a second render meanwhile waits for the list, rather than render unbounded
            if self._started:
                return
            self._started = True
            resource_version = self._list(notify=False)
            if not self._forbidden:
                run = contextvars.copy_context().run
                threading.Thread(target=run, args=(self._watch_loop, resource_version), name="gpu-nodes", daemon=True).start()

    def snapshot(self) -> list[dict[str, Any]] | None:
        """The GPU nodes; None while they are unknown (not listed yet, or not permitted)."""
        with self._lock:
            return None if self._known is None else as_nodes(self._known, self.resource)

    def _list(self, notify: bool = True) -> str | None:
        try:
            listed = client.CoreV1Api(api_client()).list_node()
        except ApiException as exc:
            if exc.status == 403:
                self._refused(exc)
            else:
                log.warning("listing Nodes failed (%s %s); GPU detectors stay uncapped until it succeeds", exc.status, exc.reason)
            return None
        except Exception as exc:  # noqa: BLE001  (unreachable, timed out: the watch's thread lists again)
            log.warning("listing Nodes failed (%s); GPU detectors stay uncapped until it succeeds", exc)
            return None
        self._replace({n.metadata.name: g for n in listed.items if (g := gpu_node(n, self.resource))}, notify)
        return listed.metadata.resource_version

    def _refused(self, exc: ApiException) -> None:
        self._forbidden = True
        with self._lock:
            self._known = None
        log.warning(
            "the operator may not list and watch Nodes (%s): the HorizontalPodAutoscalers of cuda/tensorrt DetectorModels "
            "keep spec.autoscaling.maxReplicas, not capped at the %s allocatable on their nodes; grant list and watch on "
            "nodes (the chart's ClusterRole and operator/deploy/rbac.yaml do) to cap them",
            exc.reason,
            self.resource,
        )

    def _replace(self, known: dict[str, GpuNode], notify: bool = True) -> None:
        """Keep `known`; when it changed what the bound reads, `on_change()` (not for the first list: the
        render that started the watch reads it itself)."""
        with self._lock:
            changed, self._known = self._known != known, known
        if changed and notify:
            try:
                self._on_change()
            except Exception:  # noqa: BLE001  (the watch must go on: the next change, or the detectors' recheck, renders again)
                log.exception("re-rendering the GPU detectors after a change of the GPU nodes failed")

    def _watch_loop(self, resource_version: str | None) -> None:
        api = client.CoreV1Api(api_client())
        while not self._forbidden:
            if resource_version is None:
                time.sleep(self._retry)
                resource_version = self._list()
                continue
            try:
                stream = watch.Watch()
                events = stream.stream(api.list_node, resource_version=resource_version, timeout_seconds=300, allow_watch_bookmarks=True)
                for event in events:
                    resource_version = stream.resource_version or resource_version
                    if event["type"] == "BOOKMARK":
                        continue
                    node = event["object"]
                    with self._lock:
                        known = dict(self._known or {})
                    found = gpu_node(node, self.resource) if event["type"] != "DELETED" else None
                    if found is None:
                        known.pop(node.metadata.name, None)
                    else:
                        known[node.metadata.name] = found
                    self._replace(known)
            except ApiException as exc:
                if exc.status == 403:
                    self._refused(exc)
                    return
                resource_version = None  # 410 Gone and the like: list again
            except Exception:  # noqa: BLE001  (the watch must outlive a dropped connection)
                log.exception("watching Nodes failed; listing them again in %.0fs", self._retry)
                resource_version = None
