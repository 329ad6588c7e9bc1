"""kopf handlers: thin. They read the cluster, call the pure verdicts, renderers and status
builders (verdicts.py, render.py, status.py), apply, write status.

SensorNodes, AlertRules and AlertReceivers of a namespace form one plant: any change to one
of them re-renders the namespace's ingestion (config, gateway, service) and re-judges every
rule (a new receiver may make a rule Accepted) and every detector (a new node may give it
something to score). Each DetectorModel owns its own serving objects.
"""

from __future__ import annotations

import contextvars
import datetime
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from plantwatch.alerts import promrule
from plantwatch.contracts.conditions import find_condition
from plantwatch.contracts.names import GROUP, VERSION
from plantwatch.contracts.times import now_rfc3339
from plantwatch.mqtt.acl import render_broker_auth
from plantwatch.plant.model import ManifestError, parse_resource
from plantwatch_operator import broker, certs, kube, ownership
from plantwatch_operator.coalesce import Coalescer, Pace, plant_event_marks
from plantwatch_operator.config import Config
from plantwatch_operator.metrics import API_WRITES, RENDERS_PENDING, reconciling
from plantwatch_operator.nodes import GpuNodes
from plantwatch_operator.render import (
    CONFIG_HASH,
    GPU_PROVIDERS,
    GPU_RESOURCE,
    PLANT_CONFIGMAP,
    detector_name,
    gpu_bound,
    labels,
    node_shard_name,
    owned,
    owner_reference,
    plant_manifest,
    render_detector,
    render_ingestion,
    uses_gpu,
)
from plantwatch_operator.retrain import (
    RETRAIN_KINDS,
    candidate_name,
    render_retrain,
    retrain_name,
    retrain_status,
    scores_candidate,
    shadow_candidate,
)
from plantwatch_operator.status import StatusUpdate, detector_status, node_status, receiver_status, rule_status
from plantwatch_operator.talk import Refusal, Report, Written, reconcile_lines
from plantwatch_operator.verdicts import (
    PlantVerdicts,
    Verdict,
    judge_plant,
    prometheus_rule_verdict,
    receiver_verdict,
    referenced_secrets,
    scoring_verdict,
    source_verdict,
)

CONFIG = Config.from_env()
log = logging.getLogger(__name__)
#: What the reconcile running in this context wrote, said when it ends (talk.py).
_report: contextvars.ContextVar[Report | None] = contextvars.ContextVar("plantwatch_report", default=None)
_namespace_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
#: (namespace, apiVersion, kind, name) → (sha256 of the manifest last applied, the object's uid)
_applied: dict[tuple[str, str, str, str], tuple[str, str]] = {}
#: namespace → each node credentials Secret the broker's password file was last rendered from: its
#: (username, password), None when missing or unusable. Read once, then again by each recheck only.
_credentials: dict[str, dict[str, tuple[str, str] | None]] = {}
_rechecks: list[threading.Thread] = []
#: (namespace, detector) → (its generation, its `Scoring` verdict) as the last render judged it: the plant's
#: render re-judges it whenever a node changes, so a detector's own recheck need not list every node again.
_scoring: dict[tuple[str, str], tuple[Any, Verdict]] = {}
#: namespace → one listing of its nodes at a time for a detector's report that finds no render's verdict (a
#: plant's detectors' Deployment events would each hold a copy of every node at once), rechecked after it.
_node_listings: dict[str, threading.Lock] = defaultdict(threading.Lock)
#: (namespace, node) → why the broker refuses it, as last announced
_refused: dict[tuple[str, str], str | None] = {}
REFUSED_PREFIX = "no broker identity: "
#: uid → what a render reads of a plant object (plant_event_marks), as last seen
_seen: dict[str, tuple[Any, ...]] = {}
#: namespace → node shards of its plant config (render.plant_documents) last rendered
_shards: dict[str, int] = {}
_pace = Pace(CONFIG.status_writes_per_second)
#: This install's claim on each namespace it reconciles: another install's live claim keeps it out (ownership.py).
_claims = ownership.Claims(ownership.identity_from_env(), ownership.lease_seconds_from_env())
_renders = Coalescer(lambda namespace: _render_plant(namespace), on_pending=RENDERS_PENDING.set, admit=_claims.admit)
#: The cluster's GPU nodes, read from the first cuda/tensorrt DetectorModel on: they cap its HPA (render.gpu_bound).
_gpu_nodes = GpuNodes(GPU_RESOURCE, on_change=lambda: _gpu_nodes_changed())
#: (namespace, detector) → its GPU bound as last rendered (render.gpu_bound): the recheck renders again where a
#: re-render after a change of the GPU nodes failed.
_gpu_rendered: dict[tuple[str, str], tuple[int, int, str | None] | None] = {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # problems become Events; our own Events are posted explicitly
    settings.execution.max_workers = 8
    # A few Event posters at a time, each gone soon after its object's Events: kopf's default is a poster per
    # object, each with a TLS connection of its own (a quarter MB of buffers), hundreds at once when one
    # render announces a thousand nodes: most of the operator's peak memory.
    settings.posting.worker_limit = 16
    settings.posting.idle_timeout = 0.1


# --- the plant's ingestion: SensorNodes + AlertRules + AlertReceivers of a namespace -----


@kopf.on.event(GROUP, VERSION, "sensornodes")
@kopf.on.event(GROUP, VERSION, "alertrules")
@kopf.on.event(GROUP, VERSION, "alertreceivers")
async def plant_changed(type: str | None, body: kopf.Body, namespace: str, **_: Any) -> None:  # noqa: A002  (kopf's name)
    """Mark the namespace when an object appeared, went, or changed what a render reads (generation, labels,
    deletion); not on status writes (ours, the gateway's). Watch events rather than kopf's create/update/
    resume handlers: those keep per-object progress in annotations, a patch on every object created
    (a thousand for a plant applied at once) and a handler task per object, for changes that only mark."""
    meta = body["metadata"]
    if plant_event_marks(_seen, type, meta):
        reconcile_plant(namespace)


def reconcile_plant(namespace: str) -> None:
    """Ask for the namespace's plant to be rendered: one render per burst of changes (coalesce.py), on
    the renders' own thread, so a handler returns at once and a plant applied at once is rendered a
    few times, not once per object."""
    if not _rechecks:  # started from a handler's context: kopf's Event queue, for the renders it asks for
        _rechecks.append(threading.Thread(target=contextvars.copy_context().run, args=(_recheck_loop,), name="rechecks", daemon=True))
        _rechecks[0].start()
    _renders.mark(namespace)


@contextmanager
def _reporting(namespace: str) -> Iterator[None]:
    """Collect what is written in this block and say it at its end (one INFO line, and WARNING lines for what a
    user must fix), nothing when nothing was written. Nested blocks add to the outer one's report."""
    if _report.get() is not None:
        yield
        return
    report = Report(namespace)
    token = _report.set(report)
    try:
        yield
    finally:
        _report.reset(token)
        info, warnings = reconcile_lines(report)
        if info:
            log.info(info, extra={"namespace": namespace})
        for line in warnings:
            log.warning(line, extra={"namespace": namespace})


def _wrote(manifest: dict[str, Any], action: str) -> None:
    if (report := _report.get()) is not None:
        report.objects.append(Written(manifest["kind"], manifest["metadata"]["name"], action))


def _delete(api_version: str, kind: str, name: str, namespace: str) -> None:
    if kube.delete(api_version, kind, name, namespace):
        _wrote({"kind": kind, "metadata": {"name": name}}, "deleted")


def _apply_changed(manifest: dict[str, Any]) -> str:
    """Apply the manifest unless this process last applied exactly it (the periodic recheck forgets
    that, so an object removed behind the operator's back comes back); its uid."""
    meta = manifest["metadata"]
    key = (meta.get("namespace", ""), manifest["apiVersion"], manifest["kind"], meta["name"])
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    known = _applied.get(key)
    if known is None or known[0] != digest:
        uid, action = kube.apply_stamped(manifest, digest, check_live=known is None)
        known = _applied[key] = (digest, uid)
        if action is not None:
            _wrote(manifest, action)
    return known[1]


def _render_plant(namespace: str) -> None:
    """Render and apply the namespace's ingestion, then report on every node, rule, receiver and detector:
    each object written only where it changed."""
    with _namespace_locks[namespace], reconciling("plant"), _reporting(namespace):
        receivers = kube.list_plant(namespace, "alertreceivers")
        plant = judge_plant(
            kube.list_plant(namespace, "sensornodes"),
            kube.list_plant(namespace, "alertrules"),
            kube.list_plant(namespace, "detectormodels"),
            receivers,
            _secret_keys(receivers, namespace),
        )
        now = now_rfc3339()
        for body, verdict in plant.receivers:  # a receiver's verdict needs no node
            _write_status(body, receiver_status(body, verdict, now))
        for body, verdict in plant.scoring:  # nor does a detector's: with no node it scores nothing
            report_detector(body, scoring=verdict)
        valid_nodes = plant.valid_nodes
        if not valid_nodes:
            # Everything else the plant runs on is owned by its config: the garbage collector removes it.
            _delete("v1", "ConfigMap", PLANT_CONFIGMAP, namespace)
            _forget(namespace)
            _credentials.pop(namespace, None)
            return
        manifests = [
            plant_manifest(b) for b in (*valid_nodes, *plant.accepted_rules, *plant.scoring_detectors, *plant.configured_receivers)
        ]
        config, *rest = render_ingestion(namespace, manifests, CONFIG)
        # One owner, the plant's config, rather than every node: a reference per node made each shared
        # object grow with the plant and be rewritten whenever a node came or went.
        owners = [_owner(config, _apply_changed(config))]
        for manifest in rest:
            # The gateway's SQLite claim is never owned: no garbage collection may take the history with it.
            _apply_changed(manifest if manifest["kind"] == "PersistentVolumeClaim" else owned(manifest, owners))
        shards = sum(1 for m in rest if m["kind"] == "ConfigMap")
        for stale in range(shards, _shards.get(namespace, 0)):
            _delete("v1", "ConfigMap", node_shard_name(stale), namespace)
        if _shards.get(namespace, 0) != shards:
            _shards[namespace] = shards
            for body, _ in plant.scoring:  # the retraining jobs read the plant through the same volume
                if body["spec"].get("retrain"):
                    _render_detector(body)
        digest = config["metadata"]["annotations"][CONFIG_HASH]
        _reconcile_broker(namespace, plant, owners)
        for body, parsed in plant.nodes:
            _write_status(body, node_status(body, parsed, PLANT_CONFIGMAP, now, digest=digest))
        rendered = _apply_prometheus_rule(namespace, plant)
        where = promrule.prometheus_rule_name(namespace)
        for body, verdict, matched in plant.rules:
            prometheus = prometheus_rule_verdict(verdict, body["metadata"]["name"], rendered, where)
            _write_status(body, rule_status(body, verdict, matched, now, prometheus))


def _owner(manifest: dict[str, Any], uid: str) -> dict[str, Any]:
    return owner_reference({**manifest, "metadata": {**manifest["metadata"], "uid": uid}}, controller=False)


def _forget(namespace: str) -> None:
    """Drop what this process remembers applying in `namespace`: the next render applies everything."""
    for key in [k for k in _applied if k[0] == namespace]:
        del _applied[key]


def _reconcile_broker(namespace: str, plant: PlantVerdicts, owners: list[dict[str, Any]]) -> None:
    """The broker's password file and ACL from the valid nodes' Secrets (a node whose Secret is missing or
    unusable gets no line, so the broker refuses it, and a Warning Event saying why), the gateway's own
    and broker exporter's MQTT passwords (generated once), and the broker's certificate."""
    lab = labels("broker", namespace)
    password, exporter_password = (
        _generated_password(name, namespace, lab, owners) for name in (broker.GATEWAY_SECRET, broker.EXPORTER_SECRET)
    )
    nodes = [(body, parsed) for body, parsed in plant.nodes if not isinstance(parsed, str)]
    known, read = _credentials.get(namespace, {}), {}
    credentials = {}
    for _, node in nodes:
        if node.spec.credentials is None:
            continue
        name = node.spec.credentials.secret_ref.name
        if name not in read:
            read[name] = known[name] if name in known else _read_credentials(name, namespace)
        if read[name] is not None:  # else render_broker_auth refuses the node, naming its Secret
            credentials[node.meta.name] = read[name]
    _credentials[namespace] = read
    previous = (kube.secret_data(broker.AUTH_SECRET, namespace) or {}).get(broker.PASSWORD_FILE, b"").decode("utf-8", "replace")
    auth = render_broker_auth(
        [node for _, node in nodes],
        credentials,
        (broker.GATEWAY_USERNAME, password),
        exporter=(broker.EXPORTER_USERNAME, exporter_password),
        previous_password_file=previous or None,
    )
    files = {broker.PASSWORD_FILE: auth.password_file.encode(), broker.ACL_FILE: auth.acl_file.encode()}
    _apply_changed(owned(broker.secret(broker.AUTH_SECRET, namespace, lab, files), owners))
    said: dict[str, str] | None = None
    for body, node in nodes:  # an Event when a node's refusal is new or changed, not at every render
        refused, key = auth.refused.get(node.meta.name), (namespace, node.meta.name)
        if key not in _refused and refused is not None:  # new to this process: did an earlier one say so?
            said = kube.announced(namespace, "BrokerAccessRefused") if said is None else said
            _refused[key] = said.get(node.meta.name, "").removeprefix(REFUSED_PREFIX) or None
        if refused is not None and _refused.get(key) != refused:
            API_WRITES.labels("event").inc()
            kopf.event(body, type="Warning", reason="BrokerAccessRefused", message=f"{REFUSED_PREFIX}{refused}")
            if (report := _report.get()) is not None:
                report.refusals.append(Refusal("SensorNode", node.meta.name, "BrokerAccess", "False", "BrokerAccessRefused", refused))
        _refused[key] = refused
    _reconcile_broker_tls(namespace, lab)


def _generated_password(name: str, namespace: str, lab: dict[str, str], owners: list[dict[str, Any]]) -> str:
    """The password in Secret `name`, generated into it the first time."""
    password = (kube.secret_data(name, namespace) or {}).get(broker.GATEWAY_PASSWORD_KEY, b"").decode("utf-8", "replace")
    if not password:
        password = secrets.token_urlsafe(32)
        manifest = owned(broker.secret(name, namespace, lab, {broker.GATEWAY_PASSWORD_KEY: password.encode()}), owners)
        kube.apply(manifest)
        _wrote(manifest, "created")
    return password


def _reconcile_broker_tls(namespace: str, lab: dict[str, str]) -> None:
    """cert-manager's Certificate where its CRD exists; otherwise the operator's own CA and server
    certificate, renewed when a third of their lifetime is left. Neither is owned by the nodes: the CA
    that the nodes pin outlives a plant that is emptied and refilled."""
    hosts = certs.broker_hosts(CONFIG.broker_url)
    lifetime = datetime.timedelta(seconds=CONFIG.broker_cert_lifetime)
    if kube.has_crd(broker.CERT_MANAGER_CRD):
        for manifest in broker.cert_manager_objects(namespace, lab, hosts, lifetime, CONFIG.broker_issuer):
            _apply_changed(manifest)
        return
    ca = kube.secret_data(broker.CA_SECRET, namespace)
    server = kube.secret_data(broker.TLS_SECRET, namespace)
    for manifest in broker.tls_secrets(namespace, lab, ca, server, hosts, datetime.datetime.now(datetime.UTC), lifetime):
        kube.apply(manifest)
        _wrote(manifest, "renewed" if (ca if manifest["metadata"]["name"] == broker.CA_SECRET else server) else "created")


def _read_credentials(name: str, namespace: str) -> tuple[str, str] | None:
    """A node credentials Secret's (username, password); None when it is missing or unusable."""
    data = kube.secret_data(name, namespace) or {}
    try:
        return data["username"].decode().strip(), data["password"].decode().strip()
    except (KeyError, UnicodeDecodeError):
        return None


def _recheck_loop() -> None:
    """Every `PLANTWATCH_CREDENTIALS_CHECK_INTERVAL`, recheck each rendered plant (one thread for all of them,
    not a timer per node: a thousand timers cost a core's tenth while nothing happens)."""
    while True:
        time.sleep(CONFIG.credentials_check_interval)
        for namespace in list(_credentials):
            try:
                if _recheck(namespace):
                    reconcile_plant(namespace)
            except Exception:  # noqa: BLE001  (the next interval tries again; one namespace must not stop the others)
                log.exception("rechecking namespace %s failed", namespace)


def _recheck(namespace: str) -> bool:
    """Whether the plant needs a render though none of its resources changed: a node's credentials Secret
    changed (a rotated password reaches the broker's password file, the other nodes' lines unchanged), or
    an object the operator applied was deleted or replaced behind its back (its metadata alone read). What
    is stale is forgotten, so the render reads or applies it again. A certificate near expiry is renewed
    here. Secrets are not watched, for the reason receiver_recheck gives."""
    if _claims.admit(namespace) is not None:
        return False
    with _namespace_locks[namespace]:
        known = dict(_credentials.get(namespace, {}))
        applied = [(key, uid) for key, (_, uid) in _applied.items() if key[0] == namespace]
        with _reporting(namespace):
            _reconcile_broker_tls(namespace, labels("broker", namespace))
    changed = [name for name, creds in known.items() if _read_credentials(name, namespace) != creds]
    gone = [key for key, uid in applied if kube.uid(key[1], key[2], key[3], namespace) != uid]
    with _namespace_locks[namespace]:
        for name in changed:
            _credentials.get(namespace, {}).pop(name, None)
        for key in gone:
            _applied.pop(key, None)
    return bool(changed or gone)


def _apply_prometheus_rule(namespace: str, plant: PlantVerdicts) -> dict[str, str] | None:
    """Where the Prometheus Operator's CRD exists, apply the plant's PrometheusRule (owned by its
    accepted rules); per rule, why it is not expressible. None: no such CRD."""
    if not kube.has_crd(promrule.CRD):
        return None
    manifest, why = promrule.render_prometheus_rule(plant.accepted_plant, namespace)
    if manifest is not None:
        manifest["metadata"]["labels"] = labels("alerting", namespace)
        _apply_changed(owned(manifest, [owner_reference(b, controller=False) for b in plant.accepted_rules]))
    return why


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", when=lambda name, **_: name == promrule.CRD)
def prometheus_operator_changed(**_: Any) -> None:
    """The PrometheusRule CRD was installed or removed: every plant reconciled so far renders its
    rules for Prometheus (or says it cannot) now, not at its next change."""
    for namespace in list(_namespace_locks):
        reconcile_plant(namespace)


def _secret_keys(receivers: list[dict[str, Any]], namespace: str) -> dict[str, list[str] | None]:
    """The data keys of every Secret the receivers reference (None: missing), read now."""
    return {name: kube.secret_keys(name, namespace) for name in referenced_secrets(receivers)}


@kopf.timer(GROUP, VERSION, "alertreceivers", interval=CONFIG.receiver_check_interval, initial_delay=5.0)
def receiver_recheck(body: kopf.Body, namespace: str, **_: Any) -> None:
    """Re-read a receiver's Secrets; reconcile the plant when its `Accepted` would change.

    Secrets are not watched: a watch would stream every Secret of the cluster (and their
    values) through the operator and need list/watch on all of them, where this needs `get`
    on the few a receiver names. A Secret created or fixed is therefore noticed within this
    interval, or at once on any change to the plant.
    """
    receiver = dict(body)
    verdict = receiver_verdict(receiver, _secret_keys([receiver], namespace))
    current = find_condition(receiver.get("status", {}).get("conditions"), "Accepted") or {}
    if (current.get("status"), current.get("reason"), current.get("message")) != tuple(verdict):
        reconcile_plant(namespace)


def _write_status(body: dict[str, Any], update: StatusUpdate | None) -> None:
    """Apply the operator's part of the status and post its Events; nothing when nothing changed."""
    if update is None:
        return
    _pace.wait()
    kube.apply_status(body, update.status)
    report, kind, name = _report.get(), body["kind"], body["metadata"]["name"]
    if report is not None:
        report.status(kind, name, update.status.get("conditions") or ())
    for event in update.events:
        API_WRITES.labels("event").inc()
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if report is not None and event.type == "Warning":
            state, _, message = event.message.partition(": ")  # "Accepted=False: why" (status.announcements)
            condition, _, status = state.partition("=")
            report.refusals.append(Refusal(kind, name, condition, status, event.reason, message))


# --- detectors ------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "detectormodels")
@kopf.on.create(GROUP, VERSION, "detectormodels")
@kopf.on.update(GROUP, VERSION, "detectormodels")
def detector_changed(body: kopf.Body, namespace: str, reason: str, **_: Any) -> None:
    if _claims.admit(namespace) is not None:
        return  # another install's namespace; detector_recheck renders it once the claim is ours
    with reconciling("detector"), _reporting(namespace):
        _render_detector(dict(body))
    if reason != "resume":  # resumed: the operator (re)started, which is no news about the model
        name = detector_name(body["metadata"]["name"])
        kopf.event(dict(body), type="Normal", reason="Rendered", message=f"serving objects {name} applied")
    reconcile_plant(namespace)  # reports the detector; rules naming it may become Accepted


def _candidate(body: dict[str, Any]) -> dict[str, Any] | None:
    """spec.retrain's candidate ConfigMap, when the spec asks for retraining and a run has written one."""
    if not body["spec"].get("retrain"):
        return None
    meta = body["metadata"]
    return kube.get("v1", "ConfigMap", candidate_name(meta["name"]), meta["namespace"])


def _render_detector(body: dict[str, Any]) -> None:
    """Apply a DetectorModel's serving and retraining objects (the candidate in shadow while it exists);
    delete the retraining's when spec.retrain went (owner references only act when the model goes)."""
    detector = parse_resource(body, f"DetectorModel {body['metadata']['name']}")
    owners = [owner_reference(body, controller=True)]
    candidate = shadow_candidate(detector, _candidate(body))
    if uses_gpu(detector):
        _gpu_nodes.start()
    nodes = _gpu_nodes.snapshot()
    for manifest in [
        *render_detector(detector, CONFIG, candidate, nodes),
        *render_retrain(detector, CONFIG, _shards.get(detector.meta.namespace, 0)),
    ]:
        _apply_changed(owned(manifest, owners))
    # Only once applied: a failed apply leaves the old bound recorded, so detector_recheck renders again.
    _gpu_rendered[(detector.meta.namespace, detector.name)] = gpu_bound(detector, nodes)
    name, namespace = retrain_name(detector.name), detector.meta.namespace
    if detector.spec.retrain is None and kube.get("batch/v1", "CronJob", name, namespace) is not None:
        for api_version, kind in RETRAIN_KINDS:  # the CronJob last: while it exists, this is retried
            _delete(api_version, kind, name, namespace)


def _gpu_nodes_changed() -> None:
    """A GPU node joined, left, or changed its labels, schedulability or GPUs: re-render and report every
    cuda/tensorrt DetectorModel of the namespaces this operator renders, so that their HPAs' bound follows."""
    for namespace in list(_namespace_locks):
        try:
            if _claims.admit(namespace) is not None:
                continue
            for body in kube.list_plant(namespace, "detectormodels"):
                if body["spec"].get("executionProvider") in GPU_PROVIDERS and not body["metadata"].get("deletionTimestamp"):
                    with _namespace_locks[namespace], reconciling("detector"):
                        _render_detector(body)
                    report_detector(body)
        except Exception:  # noqa: BLE001  (a namespace being deleted must not keep the others at the old bound)
            log.exception("re-rendering the GPU DetectorModels of namespace %s failed", namespace)


def _current_gpu_bound(body: dict[str, Any]) -> tuple[int, int, str | None] | None:
    """A GPU DetectorModel's bound on the GPU nodes as they are now (render.gpu_bound); None for one that does
    not parse, which nothing was rendered from either: the render's failure says why."""
    try:
        return gpu_bound(parse_resource(body, f"DetectorModel {body['metadata']['name']}"), _gpu_nodes.snapshot())
    except ManifestError:
        return None


@kopf.on.delete(GROUP, VERSION, "detectormodels", optional=True)
def detector_deleted(namespace: str, name: str, **_: Any) -> None:
    _scoring.pop((namespace, name), None)
    _gpu_rendered.pop((namespace, name), None)
    reconcile_plant(namespace)  # its serving objects go with it (owner references); rules may lose it


@kopf.timer(GROUP, VERSION, "detectormodels", interval=CONFIG.detector_check_interval, initial_delay=5.0)
def detector_recheck(body: kopf.Body, **_: Any) -> None:
    """Report the detector; re-render it when spec.retrain's candidate appeared or went (ConfigMaps are
    not watched, for the reason receiver_recheck gives for Secrets)."""
    body = dict(body)
    spec, meta = body["spec"], body["metadata"]
    if _claims.admit(meta["namespace"]) is not None:
        return
    deployment = kube.get("apps/v1", "Deployment", detector_name(meta["name"]), meta["namespace"])
    # Absent: changed while another install held the namespace (or removed behind the operator's back).
    retrains = bool(spec.get("retrain")) and not spec.get("shadow")
    stale = deployment is None or (retrains and scores_candidate(deployment, meta["name"]) != (_candidate(body) is not None))
    if not stale and spec.get("executionProvider") in GPU_PROVIDERS:
        bound = _current_gpu_bound(body)
        stale = _gpu_rendered.get((meta["namespace"], meta["name"]), bound) != bound
    with _reporting(meta["namespace"]):
        if stale:
            with reconciling("detector"):
                _render_detector(body)
        report_detector(body)


@kopf.on.event(
    "apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "plantwatch-operator", "app.kubernetes.io/component": "inference"}
)
def inference_deployment_event(body: kopf.Body, namespace: str, **_: Any) -> None:
    name = body["metadata"]["labels"].get(f"{GROUP}/detector")
    detector = kube.get(f"{GROUP}/{VERSION}", "DetectorModel", name, namespace) if name else None
    if detector is not None:
        with _reporting(namespace):
            report_detector(detector, deployment=dict(body))


def report_detector(body: dict[str, Any], deployment: dict[str, Any] | None = None, scoring: Verdict | None = None) -> None:
    """ModelValid from the model source; Scoring from the namespace's SensorNodes (`scoring` when the
    caller has judged them); Available and replicas from the serving Deployment."""
    meta, source = body["metadata"], body["spec"]["source"]
    namespace = meta["namespace"]
    configmap = kube.get("v1", "ConfigMap", source["configMap"]["name"], namespace) if "configMap" in source else None
    if deployment is None:
        deployment = kube.get("apps/v1", "Deployment", detector_name(meta["name"]), namespace) or {}
    key = (namespace, meta["name"])
    if scoring is not None:
        _scoring[key] = (meta.get("generation"), scoring)
    elif (known := _scoring.get(key)) is not None and known[0] == meta.get("generation"):
        scoring = known[1]
    else:
        with _node_listings[namespace]:
            known = _scoring.get(key)
            fresh = known is not None and known[0] == meta.get("generation")
            scoring = known[1] if fresh else scoring_verdict(body, kube.list_plant(namespace, "sensornodes", specs_only=True))
    retrain = retrain_status(meta["name"], _candidate(body)) if body["spec"].get("retrain") else None
    bound = _current_gpu_bound(body) if body["spec"].get("executionProvider") in GPU_PROVIDERS else None
    capped = (bound[1], bound[2]) if bound is not None and bound[2] is not None else None
    status = detector_status(body, source_verdict(source, configmap), scoring, deployment, now_rfc3339(), retrain, capped)
    _write_status(body, status)
