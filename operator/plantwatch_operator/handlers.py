"""kopf handlers: thin. They read the cluster, call the pure renderers, apply, write status.

SensorNodes and AlertRules of a namespace form one plant: any change to one of them
re-renders the namespace's ingestion (config, gateway, service). Each DetectorModel
owns its own serving objects.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import kopf

from plantwatch.plant.load import matched_series, plant_series, selects_nothing, unknown_receivers
from plantwatch.plant.model import ManifestError, parse_resource
from plantwatch_operator import kube
from plantwatch_operator.conditions import now_rfc3339, set_condition
from plantwatch_operator.config import Config
from plantwatch_operator.metrics import reconciling
from plantwatch_operator.render import (
    CONFIG_HASH,
    GROUP,
    VERSION,
    detector_name,
    owned,
    owner_reference,
    plant_manifest,
    render_detector,
    render_ingestion,
)

CONFIG = Config.from_env()
_namespace_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # problems become Events; our own Events are posted explicitly
    settings.execution.max_workers = 8


# --- the plant's ingestion: SensorNodes + AlertRules of a namespace ---------------------

@kopf.on.resume(GROUP, VERSION, "sensornodes")
@kopf.on.create(GROUP, VERSION, "sensornodes")
@kopf.on.update(GROUP, VERSION, "sensornodes")
@kopf.on.delete(GROUP, VERSION, "sensornodes", optional=True)
@kopf.on.resume(GROUP, VERSION, "alertrules")
@kopf.on.create(GROUP, VERSION, "alertrules")
@kopf.on.update(GROUP, VERSION, "alertrules")
@kopf.on.delete(GROUP, VERSION, "alertrules", optional=True)
def plant_changed(namespace: str, **_: Any) -> None:
    reconcile_plant(namespace)


def reconcile_plant(namespace: str) -> None:
    """Render and apply the namespace's ingestion, then report on every node and rule."""
    with _namespace_locks[namespace], reconciling("plant"):
        live = lambda items: [i for i in items if not i["metadata"].get("deletionTimestamp")]  # noqa: E731
        nodes = live(kube.list_plant(namespace, "sensornodes"))
        rules = live(kube.list_plant(namespace, "alertrules"))
        detectors = live(kube.list_plant(namespace, "detectormodels"))
        parsed_nodes = {n["metadata"]["name"]: _parse(n) for n in nodes}
        detector_names = {d["metadata"]["name"] for d in detectors}
        parsed_detectors = [p for p in map(_parse, detectors) if not isinstance(p, str)]
        series = plant_series([p for p in parsed_nodes.values() if not isinstance(p, str)], parsed_detectors)
        verdicts = {r["metadata"]["name"]: _rule_verdict(r, detector_names, series) for r in rules}
        accepted = [r for r in rules if verdicts[r["metadata"]["name"]][0] == "True"]
        valid_nodes = [n for n in nodes if not isinstance(parsed_nodes[n["metadata"]["name"]], str)]
        if not valid_nodes:
            return  # the ingestion objects are owned by the nodes: the garbage collector removes them
        manifests = [plant_manifest(b) for b in (*valid_nodes, *accepted, *detectors)]
        owners = [owner_reference(n, controller=False) for n in valid_nodes]
        rendered = [owned(m, owners) for m in render_ingestion(namespace, manifests, CONFIG)]
        for manifest in rendered:
            kube.apply(manifest)
        digest = rendered[0]["metadata"]["annotations"][CONFIG_HASH]
        now = now_rfc3339()
        for body in nodes:
            _report_node(body, parsed_nodes[body["metadata"]["name"]], digest, now)
        for body in rules:
            status, reason, message = verdicts[body["metadata"]["name"]]
            parsed = _parse(body)
            matched = 0 if isinstance(parsed, str) else matched_series(parsed, series)
            _report(body, "alertrules", "Accepted", status, reason, message, now, matchedSeries=matched)


def _parse(body: dict[str, Any]) -> Any:
    """The typed resource, or the validation message when it is invalid."""
    try:
        return parse_resource(body, f"{body['kind']} {body['metadata']['name']}")
    except ManifestError as exc:
        return str(exc)


def _rule_verdict(body: dict[str, Any], detectors: set[str], series: list[Any]) -> tuple[str, str, str]:
    """Accepted or not, and why. A refused rule stays out of the gateway's config, whose `load_plant`
    refuses the same things (a rule watching no series, an unknown receiver): the gateway never
    crash-loops on a plant the operator rendered, and the rule is accepted once nodes match it."""
    parsed = _parse(body)
    if isinstance(parsed, str):
        return "False", "InvalidSpec", parsed
    score = parsed.spec.condition.anomaly_score
    if score is not None and score.detector not in detectors:
        return "False", "DetectorNotFound", f"condition.anomalyScore.detector {score.detector!r} names no DetectorModel in this namespace"
    if unknown := unknown_receivers(parsed):
        return "False", "UnknownReceiver", unknown
    if nothing := selects_nothing(parsed, series):
        return "False", "NoMatchingSeries", f"in this namespace: {nothing}"
    return "True", "Loaded", "the rule is part of the gateway's config"


def _report_node(body: dict[str, Any], parsed: Any, digest: str, now: str) -> None:
    if isinstance(parsed, str):
        _report(body, "sensornodes", "Ready", "False", "InvalidSpec", parsed, now)
        return
    # `Online` belongs to the gateway (field manager plantwatch-gateway); the operator only
    # says Unknown until the gateway's first report takes the condition over.
    online = next((c for c in body.get("status", {}).get("conditions", []) if c.get("type") == "Online"), None)
    also = ("Online",) if online is None or online.get("reason") == "NoData" else ()
    if also:
        conditions = set_condition(body.get("status", {}).get("conditions"), "Online", "Unknown", "NoData",
                                   "no data-plane report yet", body["metadata"].get("generation"), now)
        body = {**body, "status": {**body.get("status", {}), "conditions": conditions}}
    _report(body, "sensornodes", "Ready", "True", "Rendered", f"in the gateway config {digest}", now, also=also)


def _report(body: dict[str, Any], plural: str, type_: str, status: str, reason: str, message: str, now: str,
            also: tuple[str, ...] = (), **fields: Any) -> None:
    """Apply the operator's condition `type_` (and `also`, and extra status fields), only when something changed.

    Server-side apply on the status: the operator owns only the conditions it names, so
    conditions other writers own (the gateway's Online) are left as they are.
    """
    meta = body["metadata"]
    generation = meta.get("generation")
    old = body.get("status", {})
    conditions = set_condition(old.get("conditions"), type_, status, reason, message, generation, now)
    new = {"observedGeneration": generation, "conditions": conditions, **fields}
    if any(old.get(k) != v for k, v in new.items()):
        owned = [c for c in conditions if c["type"] in (type_, *also)]
        kube.apply_status(body, {**new, "conditions": owned})
        _announce(body, old.get("conditions"), conditions, (type_,))


def _announce(body: dict[str, Any], before: list[dict[str, Any]] | None, after: list[dict[str, Any]],
              types: tuple[str, ...]) -> None:
    """An Event for each named condition whose status, reason or message changed (a new gateway
    config, a rule refused, a model gone): what `kubectl describe` should tell a user."""
    old = {c["type"]: c for c in before or []}
    for c in after:
        if c["type"] not in types:
            continue
        if any(old.get(c["type"], {}).get(k) != c[k] for k in ("status", "reason", "message")):
            kopf.event(body, type="Normal" if c["status"] == "True" else "Warning", reason=c["reason"],
                       message=f"{c['type']}={c['status']}: {c['message']}")


# --- detectors ------------------------------------------------------------------------

@kopf.on.resume(GROUP, VERSION, "detectormodels")
@kopf.on.create(GROUP, VERSION, "detectormodels")
@kopf.on.update(GROUP, VERSION, "detectormodels")
def detector_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    with reconciling("detector"):
        detector = parse_resource(dict(body), f"DetectorModel {body['metadata']['name']}")
        for manifest in render_detector(detector, CONFIG):
            kube.apply(owned(manifest, [owner_reference(dict(body), controller=True)]))
    kopf.event(dict(body), type="Normal", reason="Rendered", message=f"serving objects {detector_name(detector.name)} applied")
    report_detector(dict(body))
    reconcile_plant(namespace)  # rules naming this detector may become Accepted


@kopf.on.delete(GROUP, VERSION, "detectormodels", optional=True)
def detector_deleted(namespace: str, **_: Any) -> None:
    reconcile_plant(namespace)  # its serving objects go with it (owner references); rules may lose it


@kopf.timer(GROUP, VERSION, "detectormodels", interval=CONFIG.detector_check_interval, initial_delay=5.0)
def detector_recheck(body: kopf.Body, **_: Any) -> None:
    report_detector(dict(body))


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "plantwatch-operator",
                                                   "app.kubernetes.io/component": "inference"})
def inference_deployment_event(body: kopf.Body, namespace: str, **_: Any) -> None:
    name = body["metadata"]["labels"].get(f"{GROUP}/detector")
    detector = kube.get(f"{GROUP}/{VERSION}", "DetectorModel", name, namespace) if name else None
    if detector is not None:
        report_detector(detector, deployment=dict(body))


def report_detector(body: dict[str, Any], deployment: dict[str, Any] | None = None) -> None:
    """ModelValid from the model source; Available and replicas from the serving Deployment."""
    meta = body["metadata"]
    namespace, generation = meta["namespace"], meta.get("generation")
    spec = body["spec"]
    now = now_rfc3339()
    valid, reason, message, digest = check_source(namespace, spec["source"])
    if deployment is None:
        deployment = kube.get("apps/v1", "Deployment", detector_name(meta["name"]), namespace) or {}
    ready = (deployment.get("status") or {}).get("ready_replicas") or (deployment.get("status") or {}).get("readyReplicas") or 0
    wanted = spec.get("autoscaling", {}).get("minReplicas", 1)
    old = body.get("status", {})
    # Once an inference pod has loaded the model it owns ModelValid, activeProvider and
    # modelSha256 (plantwatch.inference.status): only it sees the file it serves, the
    # provider it really got, and a model that is not ONNX. The operator still says so
    # when the source itself is missing or wrong, which no pod can report.
    service_owns = valid == "True" and _owns_condition(body, INFERENCE_MANAGER, "ModelValid")
    owned = ("Available",) if service_owns else ("Available", "ModelValid")
    conditions = old.get("conditions")
    if not service_owns:
        conditions = set_condition(conditions, "ModelValid", valid, reason, message, generation, now)
    conditions = set_condition(conditions, "Available", "True" if ready >= wanted else "False",
                               "MinimumReplicasReady" if ready >= wanted else "ReplicasNotReady",
                               f"{ready}/{wanted} inference pods ready", generation, now)
    new = {"observedGeneration": generation, "conditions": [c for c in conditions if c["type"] in owned], "replicas": ready}
    if not service_owns:
        new["activeProvider"] = spec.get("executionProvider", "cpu")
        if digest:
            new["modelSha256"] = digest
    current = {**old, "conditions": [c for c in old.get("conditions") or [] if c.get("type") in owned]}
    if any(current.get(k) != v for k, v in new.items()):
        kube.apply_status(body, new)
        _announce(body, old.get("conditions"), conditions, ("ModelValid",))


INFERENCE_MANAGER = "plantwatch-inference"


def _owns_condition(body: dict[str, Any], manager: str, type_: str) -> bool:
    """Whether `manager` wrote the current reason of status condition `type_` (from the object's managedFields).

    The reason, not the list entry: every manager that ever applied the entry keeps
    co-owning its `type`, while a forced apply of another reason takes `reason` away.
    """
    key = 'k:{"type":"%s"}' % type_
    for entry in body["metadata"].get("managedFields") or ():
        fields = ((entry.get("fieldsV1") or {}).get("f:status") or {}).get("f:conditions") or {}
        if entry.get("manager") == manager and "f:reason" in (fields.get(key) or {}):
            return True
    return False


def check_source(namespace: str, source: dict[str, Any]) -> tuple[str, str, str, str | None]:
    """(status, reason, message, sha256) of ModelValid for a DetectorModel's source."""
    import base64
    import hashlib

    if "configMap" in source:
        ref = source["configMap"]
        key = ref.get("key", "model.onnx")
        cm = kube.get("v1", "ConfigMap", ref["name"], namespace)
        if cm is None:
            return "False", "SourceNotFound", f"ConfigMap {ref['name']} does not exist", None
        binary = cm.get("binaryData") or cm.get("binary_data") or {}
        data = base64.b64decode(binary[key]) if key in binary else ((cm.get("data") or {}).get(key) or "").encode() or None
        if data is None:
            return "False", "SourceNotFound", f"ConfigMap {ref['name']} has no key {key!r}", None
        digest = hashlib.sha256(data).hexdigest()
        expected = source.get("sha256")
        if expected and expected != digest:
            return "False", "ChecksumMismatch", f"the model's sha256 is {digest}, spec.source.sha256 says {expected}", digest
        return "True", "SourceVerified", f"ConfigMap {ref['name']}/{key}, {len(data)} bytes, sha256 {digest[:12]}", digest
    if "url" in source:
        return "True", "NotVerifiedByOperator", "the inference pods download the model and refuse it unless its sha256 matches", source["url"]["sha256"]
    return "True", "NotVerifiedByOperator", "the inference pods read the model from the volume and check it at load", source.get("sha256")
