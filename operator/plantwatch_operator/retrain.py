"""A DetectorModel's scheduled retraining (spec.retrain), pure: the CronJob that runs `plantwatch detector
retrain`, its identity and NetworkPolicy, and the status read back from the candidate it writes.

The job writes the candidate ConfigMap `<model>-candidate` (as `detector publish` shapes one); while it
exists and spec.shadow is unset, render_detector scores it in shadow. Nothing here promotes it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from plantwatch.contracts.names import DETECTOR_LABEL
from plantwatch.plant.model import DetectorModel
from plantwatch.secrets import MOUNT_DIR
from plantwatch_operator.config import Config
from plantwatch_operator.render import (
    _API_SERVER,
    _DNS,
    GATEWAY,
    HTTP_PORT,
    PLANT_DIR,
    _pod_security,
    _port,
    _security_context,
    labels,
    network_policy,
    plant_volume,
    secret_volumes,
    selector,
)

#: Runs kept for `kubectl logs` and describe: the last few successes and failures.
HISTORY = 3
#: The most top-level entries of comparison.json carried into status.retrain.comparison.
COMPARISON_FIELDS = 16
_TEXT_LIMIT = 256


def retrain_name(detector: str) -> str:
    """The CronJob and its ServiceAccount, Role, RoleBinding and NetworkPolicy."""
    return f"{detector}-retrain"


def candidate_name(detector: str) -> str:
    """The ConfigMap the retraining writes its candidate to."""
    return f"{detector}-candidate"


def retrain_args(detector: DetectorModel, config: Config) -> list[str]:
    """`plantwatch detector retrain`'s command line in the job's pod (after the image's entrypoint)."""
    retrain = detector.spec.retrain
    args = [
        "detector",
        "retrain",
        "-f",
        PLANT_DIR,
        "--model",
        detector.name,
        "--gateway",
        f"http://{GATEWAY}:{HTTP_PORT}",
    ]
    # The gateway's reads need its API token unless they are open; the job reads the same Secret key.
    if config.gateway_api_token_secret is not None and not config.gateway_api_open_reads:
        args += ["--token-file", "{}/{}/{}".format(MOUNT_DIR, *config.gateway_api_token_secret)]
    return args + [
        "--window",
        retrain.window,
        "--out",
        "/tmp/candidate",
        "--to-configmap",
        candidate_name(detector.name),
        "--namespace",
        detector.meta.namespace,
    ]


def render_retrain(detector: DetectorModel, config: Config, shards: int = 0) -> list[dict[str, Any]]:
    """spec.retrain's CronJob, NetworkPolicy and identity (ServiceAccount, Role, RoleBinding); nothing without it.
    `shards`: the plant's node shards (render.plant_volume), so the job reads the whole plant as the gateway does."""
    retrain = detector.spec.retrain
    if retrain is None:
        return []
    name, namespace = retrain_name(detector.name), detector.meta.namespace
    lab = {**labels("retrain", detector.name), DETECTOR_LABEL: detector.name}
    token = config.gateway_api_token_secret if not config.gateway_api_open_reads else None
    secrets, secret_mounts = secret_volumes({token[0]: (token[1],)} if token else {})
    pod = {
        "serviceAccountName": name,
        "restartPolicy": "Never",
        "securityContext": _pod_security(),
        "containers": [
            {
                "name": "retrain",
                "image": config.image,
                "args": retrain_args(detector, config),
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
                "securityContext": _security_context(),
                "volumeMounts": [
                    {"name": "plant", "mountPath": PLANT_DIR, "readOnly": True},
                    # The root filesystem is read-only: the candidate is built here before it is written out.
                    {"name": "work", "mountPath": "/tmp"},
                    *secret_mounts,
                ],
            }
        ],
        "volumes": [plant_volume(shards), {"name": "work", "emptyDir": {}}, *secrets],
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": namespace, "labels": lab},
        "spec": {
            "schedule": retrain.schedule,
            "suspend": retrain.suspend,
            # Two runs at once would race to write one candidate.
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": HISTORY,
            "failedJobsHistoryLimit": HISTORY,
            "jobTemplate": {
                "metadata": {"labels": lab},
                "spec": {"backoffLimit": 2, "template": {"metadata": {"labels": lab}, "spec": pod}},
            },
        },
    }
    # The gateway's HTTP API (its readings), DNS and the API server (the candidate ConfigMap); it takes nothing in.
    policy = network_policy(
        name,
        namespace,
        lab,
        selector("retrain", detector.name),
        [],
        [
            {"to": [{"podSelector": {"matchLabels": selector("gateway", namespace)}}], "ports": [_port(HTTP_PORT)]},
            _DNS,
            _API_SERVER,
        ],
    )
    meta = {"name": name, "namespace": namespace, "labels": lab}
    candidate = candidate_name(detector.name)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [
            # A create is authorized before the object has a name, so it cannot be held to one.
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [candidate], "verbs": ["get", "update", "patch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    # The identity first: a Job's pod created before its ServiceAccount would be refused.
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}, role, binding, policy, cronjob]


#: What render_retrain renders, as (apiVersion, kind): deleted (the CronJob last) when spec.retrain goes.
RETRAIN_KINDS = (
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("batch/v1", "CronJob"),
)


def shadow_candidate(detector: DetectorModel, candidate: dict[str, Any] | None) -> str | None:
    """The candidate ConfigMap to score in shadow: the retraining's, when it exists and the spec names no shadow of its own."""
    if detector.spec.retrain is None or detector.spec.shadow is not None or candidate is None:
        return None
    return candidate_name(detector.name)


def scores_candidate(deployment: dict[str, Any], detector: str) -> bool:
    """Whether an inference Deployment (as read) mounts the retraining's candidate as its shadow."""
    volumes = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("volumes") or []
    return any(v.get("name") == "shadow" and (v.get("configMap") or {}).get("name") == candidate_name(detector) for v in volumes)


def _last_written(meta: dict[str, Any]) -> str | None:
    """When the object was last written: the latest managedFields time (the API server stamps each write)."""
    times = [e["time"] for e in meta.get("managedFields") or () if e.get("time")]
    return max(times) if times else meta.get("creationTimestamp")


def retrain_status(detector: str, candidate: dict[str, Any] | None) -> dict[str, Any]:
    """status.retrain: the candidate ConfigMap, when it was last written and its comparison's flat part."""
    status: dict[str, Any] = {"candidate": candidate_name(detector)}
    if candidate is None:
        return status
    written = _last_written(candidate.get("metadata") or {})
    if written:
        status["lastCandidateTime"] = written
    text = (candidate.get("data") or {}).get("comparison.json")
    if text is None:
        return status
    try:
        comparison = json.loads(text)
    except ValueError as exc:
        status["comparisonError"] = f"comparison.json in ConfigMap {candidate_name(detector)} is not JSON: {exc}"
        return status
    if not isinstance(comparison, dict):
        kind = type(comparison).__name__
        status["comparisonError"] = f"comparison.json in ConfigMap {candidate_name(detector)} is a {kind}, not an object"
        return status
    # NaN and infinities are not JSON the API server takes.
    flat = {
        k: v[:_TEXT_LIMIT] if isinstance(v, str) else v
        for k, v in comparison.items()
        if isinstance(v, str | bool | int) or (isinstance(v, float) and math.isfinite(v))
    }
    status["comparison"] = dict(sorted(flat.items())[:COMPARISON_FIELDS])
    return status
