"""The operator's only door to the API server: apply, read, delete, patch status.

Server-side apply with one field manager makes every write idempotent; 404 and 409
are handled here once, not in every handler.
"""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from plantwatch import kube as shared
from plantwatch.contracts.names import GROUP, OPERATOR_MANAGER, VERSION
from plantwatch.kube import api_client, dynamic
from plantwatch_operator.metrics import API_WRITES


def apply(manifest: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply (create or update) as the operator's field manager."""
    resource = dynamic().resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    API_WRITES.labels("apply").inc()
    result = resource.server_side_apply(
        body=manifest,
        name=manifest["metadata"]["name"],
        namespace=manifest["metadata"].get("namespace"),
        field_manager=OPERATOR_MANAGER,
        force_conflicts=True,
    )
    return result.to_dict()


def get(api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    resource = dynamic().resources.get(api_version=api_version, kind=kind)
    try:
        return resource.get(name=name, namespace=namespace).to_dict()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete(api_version: str, kind: str, name: str, namespace: str) -> None:
    resource = dynamic().resources.get(api_version=api_version, kind=kind)
    API_WRITES.labels("delete").inc()
    try:
        resource.delete(name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def secret_keys(name: str, namespace: str) -> list[str] | None:
    """The data keys of a Secret, or None when it does not exist (its values are not kept)."""
    try:
        secret = client.CoreV1Api(api_client()).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return sorted(secret.data or {})


def secret_data(name: str, namespace: str) -> dict[str, bytes] | None:
    """A Secret's values, or None when it does not exist: for the few Secrets the operator renders from
    (SensorNode credentials) or renews (the broker's certificates), each read by name with `get`."""
    try:
        secret = client.CoreV1Api(api_client()).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def has_crd(name: str) -> bool:
    """Whether the cluster serves the CustomResourceDefinition `name` (e.g. prometheusrules.monitoring.coreos.com)."""
    try:
        client.ApiextensionsV1Api(api_client()).read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def list_plant(namespace: str, plural: str) -> list[dict[str, Any]]:
    """Every custom resource of one kind in a namespace."""
    api = client.CustomObjectsApi(api_client())
    return api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]


def apply_status(body: dict[str, Any], status: dict[str, Any]) -> None:
    """The operator's part of a resource's status (see plantwatch.kube.apply_status)."""
    API_WRITES.labels("status").inc()
    shared.apply_status(body, status, OPERATOR_MANAGER)
