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


def apply_stamped(manifest: dict[str, Any], digest: str, check_live: bool) -> tuple[str, str | None]:
    """Server-side apply `manifest` stamped with its `digest` (annotation APPLIED_DIGEST); the object's uid and
    what was done: `created`, `updated`, or None when nothing was written.

    With `check_live` (this process has not applied it: it just started, or it forgot), the live object's
    metadata is read first and nothing is written when it already carries `digest`: a restarted or upgraded
    operator that renders what its predecessor rendered changes no object (no resourceVersion, no rollout)."""
    meta = manifest["metadata"]
    action = "updated"
    if check_live:
        resource = dynamic().resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        try:
            live = resource.get(name=meta["name"], namespace=meta.get("namespace"), header_params={"Accept": _PARTIAL_METADATA})
        except ApiException as exc:
            if exc.status != 404:
                raise
            action = "created"
        else:
            found = live.to_dict()["metadata"]
            if (found.get("annotations") or {}).get(APPLIED_DIGEST) == digest:
                return found["uid"], None
    annotations = {**(meta.get("annotations") or {}), APPLIED_DIGEST: digest}
    return apply({**manifest, "metadata": {**meta, "annotations": annotations}})["metadata"]["uid"], action


#: The manifest's sha256 as the operator last applied it: what a fresh process compares with, reading metadata only.
APPLIED_DIGEST = f"{GROUP}/applied-sha256"
_PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def get(api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    resource = dynamic().resources.get(api_version=api_version, kind=kind)
    try:
        return resource.get(name=name, namespace=namespace).to_dict()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def uid(api_version: str, kind: str, name: str, namespace: str) -> str | None:
    """The object's uid, or None when it does not exist; only its metadata is read (a plant's config is most
    of a megabyte)."""
    resource = dynamic().resources.get(api_version=api_version, kind=kind)
    try:
        found = resource.get(name=name, namespace=namespace, header_params={"Accept": _PARTIAL_METADATA})
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found.metadata.uid


def delete(api_version: str, kind: str, name: str, namespace: str) -> bool:
    """Delete the object; whether it existed."""
    resource = dynamic().resources.get(api_version=api_version, kind=kind)
    API_WRITES.labels("delete").inc()
    try:
        resource.delete(name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True


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


def announced(namespace: str, reason: str) -> dict[str, str]:
    """Per involved object's name, the message of the newest Event `reason` in the namespace: what an earlier
    operator process already told the users (Events live an hour by default), so a restart does not repeat it."""
    events = client.CoreV1Api(api_client()).list_namespaced_event(namespace, field_selector=f"reason={reason}").items
    newest = sorted(events, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return {e.involved_object.name: e.message for e in newest}


def has_crd(name: str) -> bool:
    """Whether the cluster serves the CustomResourceDefinition `name` (e.g. prometheusrules.monitoring.coreos.com)."""
    try:
        client.ApiextensionsV1Api(api_client()).read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def list_plant(namespace: str, plural: str, specs_only: bool = False) -> list[dict[str, Any]]:
    """Every custom resource of one kind in a namespace, read LIST_PAGE at a time: a plant's thousand nodes
    are megabytes of JSON, held as text only a page at a time. With `specs_only`, each object without its
    status and managedFields (what a verdict on specs reads): most of a node's size is its status and
    its writers' field sets."""
    api = client.CustomObjectsApi(api_client())
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, limit=LIST_PAGE, _continue=token)
        for item in page["items"] if specs_only else ():
            item.pop("status", None)
            item["metadata"].pop("managedFields", None)
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


LIST_PAGE = 250


def apply_status(body: dict[str, Any], status: dict[str, Any]) -> None:
    """The operator's part of a resource's status (see plantwatch.kube.apply_status)."""
    API_WRITES.labels("status").inc()
    shared.apply_status(body, status, OPERATOR_MANAGER)
