"""The Kubernetes API for every Plantwatch process: one client, and status by server-side apply."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

_lock = threading.Lock()


@cache
def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@cache
def dynamic() -> DynamicClient:
    with _lock:
        return DynamicClient(api_client())


def apply_status(body: dict[str, Any], status: dict[str, Any], manager: str) -> None:
    """Server-side apply of (part of) a custom resource's status, as `manager`.

    Conditions are a list-map keyed by type, so each writer owns the conditions it
    applies and leaves the others' alone (the operator's Ready, the gateway's Online).
    A resource deleted meanwhile is not an error.
    """
    meta = body["metadata"]
    resource = dynamic().resources.get(api_version=body["apiVersion"], kind=body["kind"])
    patch = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": status,
    }
    try:
        dynamic().server_side_apply(
            resource.status, body=patch, name=meta["name"], namespace=meta["namespace"], field_manager=manager, force_conflicts=True
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
