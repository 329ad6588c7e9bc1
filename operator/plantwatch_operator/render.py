"""Rendering: a namespace's plant resources → the Kubernetes objects that run it (pure).

Values in, manifests out: no API calls, no clock. The handlers add nothing but owner
references, so what is rendered here is exactly what the cluster gets, and golden
files pin it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any
from urllib.parse import urlparse

import yaml

from plantwatch.contracts.names import DETECTOR_LABEL, GROUP, MODEL_FILE, OPERATOR_MANAGER, PART_OF_LABEL
from plantwatch.plant.model import DetectorModel
from plantwatch.plant.specs import DetectorModelShadow
from plantwatch.secrets import MOUNT_DIR
from plantwatch_operator.autoscale import gateway_hpa, gpu_bound_message, gpu_bounded_hpa, gpu_replicas, gpus_on_matching_nodes
from plantwatch_operator.autoscale import hpa as autoscale_hpa
from plantwatch_operator.broker import GATEWAY_PASSWORD_KEY, GATEWAY_SECRET, GATEWAY_USERNAME, TLS_SECRET
from plantwatch_operator.config import Config
from plantwatch_operator.verdicts import referenced_secrets

PLANT_CONFIGMAP = "plantwatch-plant"
#: Where the gateway reads the plant; beside MOUNT_DIR, not above it, so the Secrets are not
#: read as plant files (nor mounted inside a read-only ConfigMap volume).
PLANT_DIR = "/etc/plantwatch/plant"
GATEWAY = "plantwatch-gateway"
#: The gateway's SQLite volume when there is no shared store (Config.gateway_db_url): a claim, so that a
#: rollout or a rescheduled pod keeps the history; never owned, so that no garbage collection deletes it.
GATEWAY_DATA = "plantwatch-gateway-data"
DATA_DIR = "/var/lib/plantwatch"
#: Shards of a gateway on the shared store, divided among the pods the HPA runs (docs/scale-out.md, "Membership"):
#: a rollout's new pod claims its share in the store (fencing the old one off) before the old pod is stopped.
GATEWAY_SHARDS = 16
#: plantwatch.store.postgres.PASSWORD_FILE_ENV, named here so that the operator does not load psycopg.
PASSWORD_FILE_ENV = "PLANTWATCH_DB_PASSWORD_FILE"
CONFIG_HASH = f"{GROUP}/config-hash"
HTTP_PORT = 8080
#: `plantwatch`'s global flags for every long-running pod: one JSON object per log line, which the log
#: shippers read with their labels (docs/monitoring.md, "Logs"); global, so before the subcommand.
LOG_ARGS = ["--log-format", "json"]
GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_LABEL = f"{GROUP}/accelerator"
#: Where the edge runs the gateways, the broker and cpu inference (edge/k3s/README.md): the Pis. Preferred, not
#: required, so a cluster without the label runs them anywhere; the Jetson's GPU taint keeps them off it.
EDGE_HARDWARE = {"key": f"{GROUP}/hardware", "operator": "In", "values": ["raspberry-pi"]}


def labels(component: str, instance: str) -> dict[str, str]:
    """The app.kubernetes.io labels of everything the operator renders."""
    return {
        "app.kubernetes.io/name": "plantwatch",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": instance,
        PART_OF_LABEL: "plantwatch",
        "app.kubernetes.io/managed-by": OPERATOR_MANAGER,
    }


def selector(component: str, instance: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": component, "app.kubernetes.io/instance": instance}


class PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases: what people and the gateway read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def plant_manifest(body: dict[str, Any]) -> dict[str, Any]:
    """A custom resource as the gateway loads it: identity, labels and spec only."""
    meta = body.get("metadata", {})
    clean_meta = {"name": meta["name"]}
    if meta.get("labels"):
        clean_meta["labels"] = dict(sorted(meta["labels"].items()))
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": clean_meta, "spec": body["spec"]}


_ORDER = {"SensorNode": 0, "AlertRule": 1, "DetectorModel": 2, "AlertReceiver": 3}
#: Each manifest's YAML by its JSON: a re-render of a plant where one object changed dumps that one
#: object, not the plant (PyYAML's emitter is most of a full render's cost). Cleared when it grows past
#: the bound; the next render refills it.
_yaml_cache: dict[str, str] = {}
_YAML_CACHE_MAX = 50_000


def _yaml(manifest: dict[str, Any]) -> str:
    key = json.dumps(manifest, sort_keys=True)
    text = _yaml_cache.get(key)
    if text is None:
        if len(_yaml_cache) >= _YAML_CACHE_MAX:
            _yaml_cache.clear()
        text = _yaml_cache[key] = yaml.dump(manifest, Dumper=PlainDumper, sort_keys=True)
    return text


def plant_document(manifests: list[dict[str, Any]]) -> str:
    """All plant resources as one multi-document YAML, in a stable order (so the hash is too)."""
    ordered = sorted(manifests, key=lambda m: (_ORDER[m["kind"]], m["metadata"]["name"]))
    return "---\n".join(map(_yaml, ordered))


#: The most plant YAML one ConfigMap carries: half the API server's 1 MiB object limit, leaving room
#: for a shard that hashing made larger than the average.
CONFIGMAP_BUDGET = 512 * 1024


def node_shard_name(index: int) -> str:
    return f"{PLANT_CONFIGMAP}-nodes-{index}"


def plant_documents(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The plant's YAML per ConfigMap: all of it in PLANT_CONFIGMAP while it fits CONFIGMAP_BUDGET;
    past that the SensorNodes go to node shards (node_shard_name), a node's shard chosen by a hash of
    its name among a power of two of them, doubled until every shard fits. A node added or changed
    rewrites its shard alone, and the plant's size is capped by no object's."""
    whole = plant_document(manifests)
    if len(whole) <= CONFIGMAP_BUDGET:
        return {PLANT_CONFIGMAP: whole}
    nodes = [m for m in manifests if m["kind"] == "SensorNode"]
    rest = plant_document([m for m in manifests if m["kind"] != "SensorNode"])
    count = 2
    while True:
        shards: list[list[dict[str, Any]]] = [[] for _ in range(count)]
        for m in nodes:
            shards[zlib.crc32(m["metadata"]["name"].encode()) % count].append(m)
        documents = {node_shard_name(i): plant_document(s) for i, s in enumerate(shards)}
        if all(len(d) <= CONFIGMAP_BUDGET for d in documents.values()):
            return {PLANT_CONFIGMAP: rest, **documents}
        count *= 2


def plant_volume(shards: int) -> dict[str, Any]:
    """The pod volume holding the plant: PLANT_CONFIGMAP, or it and its `shards` node shards projected
    into one folder (the kubelet swaps a projected volume's files at once, as a ConfigMap volume's)."""
    if not shards:
        return {"name": "plant", "configMap": {"name": PLANT_CONFIGMAP}}
    sources = [{"configMap": {"name": PLANT_CONFIGMAP}}]
    sources += [
        {"configMap": {"name": node_shard_name(i), "items": [{"key": "plant.yaml", "path": f"nodes-{i}.yaml"}]}} for i in range(shards)
    ]
    return {"name": "plant", "projected": {"sources": sources}}


def config_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()[:16]


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}


def _edge_affinity() -> dict[str, Any]:
    preference = {"weight": 100, "preference": {"matchExpressions": [EDGE_HARDWARE]}}
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [preference]}}


def _probes(live: str, ready: str) -> dict[str, Any]:
    return {
        "livenessProbe": {"httpGet": {"path": live, "port": "http"}, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": ready, "port": "http"}, "periodSeconds": 5},
    }


def mounted_secrets(receivers: list[dict[str, Any]], config: Config) -> dict[str, tuple[str, ...]]:
    """The Secrets the gateway mounts, each with its keys (sorted): those the AlertReceivers reference,
    the alerts API's token, its broker password and the CA it pins; one Secret serving several is mounted
    once, with the keys of all."""
    keys = {name: set(k) for name, k in referenced_secrets(receivers).items()}
    if config.gateway_api_token_secret is not None:
        name, key = config.gateway_api_token_secret
        keys.setdefault(name, set()).add(key)
    if config.gateway_db_password_secret is not None:
        name, key = config.gateway_db_password_secret
        keys.setdefault(name, set()).add(key)
    keys.setdefault(GATEWAY_SECRET, set()).add(GATEWAY_PASSWORD_KEY)
    if _tls(config):
        keys.setdefault(TLS_SECRET, set()).add("ca.crt")
    return {name: tuple(sorted(keys[name])) for name in sorted(keys)}


def secret_volumes(secrets: dict[str, tuple[str, ...]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The gateway's volumes and mounts for `secrets` (mounted_secrets): each Secret read-only at
    MOUNT_DIR/<secret>, only the named keys, readable by the gateway's user alone.

    Optional: a missing Secret (or key) must not hold the whole gateway in ContainerCreating; the
    receiver's `Accepted=False SecretNotFound` says what is missing (the gateway's log, for the API
    token), and the kubelet fills the volume in once it exists.
    """
    volumes, mounts = [], []
    for i, (name, keys) in enumerate(secrets.items()):
        items = [{"key": k, "path": k} for k in keys]
        volumes.append({"name": f"secret-{i}", "secret": {"secretName": name, "items": items, "defaultMode": 0o400, "optional": True}})
        mounts.append({"name": f"secret-{i}", "mountPath": f"{MOUNT_DIR}/{name}", "readOnly": True})
    return volumes, mounts


def api_args(config: Config) -> list[str]:
    """The gateway's alerts API flags: its token, read from the mounted Secrets folder (--secrets-dir's
    default in the pod), and whether reads are open."""
    args = []
    if config.gateway_api_token_secret is not None:
        args += ["--api-token-secret", "/".join(config.gateway_api_token_secret)]
    if config.gateway_api_open_reads:
        args.append("--api-open-reads")
    return args


def _tls(config: Config) -> bool:
    return urlparse(config.broker_url).scheme == "mqtts"


def broker_args(config: Config) -> list[str]:
    """The gateway's broker flags: the URL (never credentials), its identity with the password read from
    the mounted Secret, and the CA it pins when the broker speaks TLS."""
    args = [
        "--broker",
        config.broker_url,
        "--broker-username",
        GATEWAY_USERNAME,
        "--broker-password-file",
        f"{MOUNT_DIR}/{GATEWAY_SECRET}/{GATEWAY_PASSWORD_KEY}",
    ]
    if _tls(config):
        args += ["--broker-ca", f"{MOUNT_DIR}/{TLS_SECRET}/ca.crt"]
    return args


def store_args(config: Config) -> list[str]:
    """The gateway's store flags: SQLite on its volume, or the shared PostgreSQL (sharded, the shards divided
    among however many pods run: the HPA's, and two of a rolling update hand the plant over instead of both
    consuming it), and InfluxDB beside either."""
    if config.gateway_db_url is None:
        args = ["--db", f"{DATA_DIR}/plant.db"]
    else:
        args = ["--db", config.gateway_db_url, "--shards", str(GATEWAY_SHARDS), "--membership", "store"]
    if config.gateway_influx_url is not None:
        args += ["--influx-url", config.gateway_influx_url, "--influx-org", config.gateway_influx_org]
        args += ["--influx-bucket", config.gateway_influx_bucket, "--influx-layout", config.gateway_influx_layout]
    readings, summaries, dead_letters = config.gateway_retention_days
    args += [] if readings is None else ["--retention-days", f"{readings:g}"]
    args += [] if summaries is None else ["--summary-retention-days", f"{summaries:g}"]
    return args + ["--dead-letter-retention-days", f"{dead_letters:g}"]


def store_env(config: Config) -> list[dict[str, Any]]:
    """The store's credentials: the database password as a file (a key mounted by mounted_secrets), the
    InfluxDB token as the variable `serve ingest` reads; values never, only where they are."""
    env: list[dict[str, Any]] = []
    if config.gateway_db_password_secret is not None:
        env.append({"name": PASSWORD_FILE_ENV, "value": f"{MOUNT_DIR}/{'/'.join(config.gateway_db_password_secret)}"})
    if config.gateway_influx_token_secret is not None:
        name, key = config.gateway_influx_token_secret
        env.append({"name": "INFLUXDB_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    return env


def gateway_data(namespace: str, lab: dict[str, str], config: Config) -> list[dict[str, Any]]:
    """The gateway's SQLite claim (none with the shared store: there the volume holds only InfluxDB's spool)."""
    if config.gateway_db_url is not None:
        return []
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": config.gateway_data_size}}}
    if config.gateway_data_storage_class:
        spec["storageClassName"] = config.gateway_data_storage_class
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": GATEWAY_DATA, "namespace": namespace, "labels": lab},
            "spec": spec,
        }
    ]


def _url_port(url: str, default: int) -> int:
    return urlparse(url).port or default


def _port(number: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": number}


#: DNS (the broker's and detectors' names) and the API server (status, Events). The API server's address
#: is not a pod a selector can name, and differs per cluster: allowed by port.
_DNS = {"ports": [_port(53, "UDP"), _port(53)]}
_API_SERVER = {"ports": [_port(443), _port(6443)]}


def network_policy(name: str, namespace: str, lab: dict[str, str], pods: dict[str, str], ingress: list, egress: list) -> dict[str, Any]:
    """A NetworkPolicy on `pods` that allows only `ingress` and `egress` (both directions default-deny)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": lab},
        "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress},
    }


def gateway_network_policy(namespace: str, lab: dict[str, str], config: Config) -> dict[str, Any]:
    """The gateway takes HTTP (probes, /metrics, the alerts API) and reaches the broker, the detectors,
    DNS and the API server; nothing else. Alert receivers (webhooks, SMTP, Slack) are outside the
    cluster at addresses only their Secrets know: allowed by their usual ports."""
    u = urlparse(config.broker_url)
    broker_port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    # The store and InfluxDB by port, as the broker: a managed database is no pod a selector names.
    stores = [{"ports": [_port(_url_port(config.gateway_db_url, 5432))]}] if config.gateway_db_url else []
    stores += [{"ports": [_port(_url_port(config.gateway_influx_url, 8086))]}] if config.gateway_influx_url else []
    return network_policy(
        GATEWAY,
        namespace,
        lab,
        selector("gateway", namespace),
        [{"ports": [_port(HTTP_PORT)]}],
        [
            {"ports": [_port(broker_port)]},
            *stores,
            {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "inference"}}}], "ports": [_port(HTTP_PORT)]},
            _DNS,
            _API_SERVER,
            {"ports": [_port(25), _port(465), _port(587), _port(80)]},
        ],
    )


def render_ingestion(namespace: str, manifests: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """The plant's ingestion: its config (PLANT_CONFIGMAP first, then any node shards), the gateway's
    identity, its SQLite claim (gateway_data), Deployment, Service, HorizontalPodAutoscaler (on the shared
    store: autoscale.gateway_hpa) and NetworkPolicy."""
    documents = plant_documents(manifests)
    secrets, secret_mounts = secret_volumes(mounted_secrets([m for m in manifests if m["kind"] == "AlertReceiver"], config))
    digest = config_hash("".join(documents.values()))
    lab = labels("gateway", namespace)
    configmaps = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": lab, "annotations": {CONFIG_HASH: digest}},
            "data": {"plant.yaml": document},
        }
        for name, document in documents.items()
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": GATEWAY, "namespace": namespace, "labels": lab},
        "spec": {
            # On the shared store the HorizontalPodAutoscaler owns the replicas (server-side apply would fight it);
            # on SQLite one pod: its volume is ReadWriteOnce and the rule state is the process's.
            **({} if config.gateway_db_url else {"replicas": 1}),
            # On the shared store the new pod takes the shards over before the old one stops (no gap in ingestion);
            # SQLite's ReadWriteOnce volume has one pod at a time.
            "strategy": (
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
                if config.gateway_db_url
                else {"type": "Recreate"}
            ),
            "selector": {"matchLabels": selector("gateway", namespace)},
            "template": {
                "metadata": {"labels": lab, "annotations": {CONFIG_HASH: digest}},
                "spec": {
                    "serviceAccountName": GATEWAY,
                    "securityContext": _pod_security(),
                    "affinity": _edge_affinity(),
                    "containers": [
                        {
                            "name": "gateway",
                            "image": config.image,
                            "args": [
                                *LOG_ARGS,
                                "serve",
                                "ingest",
                                "-f",
                                PLANT_DIR,
                                *broker_args(config),
                                *store_args(config),
                                "--http-port",
                                str(HTTP_PORT),
                                "--report-status",
                                "--score-url",
                                f"http://{detector_name('{name}')}:{HTTP_PORT}",
                                *api_args(config),
                            ],
                            "env": [
                                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                *store_env(config),
                            ],
                            "ports": [{"name": "http", "containerPort": HTTP_PORT}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                            "securityContext": _security_context(),
                            "volumeMounts": [
                                {"name": "plant", "mountPath": PLANT_DIR, "readOnly": True},
                                {"name": "data", "mountPath": DATA_DIR},
                                *secret_mounts,
                            ],
                            **_probes("/healthz", "/readyz"),
                        }
                    ],
                    "volumes": [
                        plant_volume(len(documents) - 1),
                        (
                            {"name": "data", "emptyDir": {}}
                            if config.gateway_db_url
                            else {"name": "data", "persistentVolumeClaim": {"claimName": GATEWAY_DATA}}
                        ),
                        *secrets,
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": GATEWAY, "namespace": namespace, "labels": lab},
        "spec": {"selector": selector("gateway", namespace), "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"}]},
    }
    # The gateway reports its nodes' Online status, its rules' firing count and last fired time, and an
    # Event on the node when an alert fires or resolves.
    identity = status_reporter_identity(
        GATEWAY,
        namespace,
        lab,
        "sensornodes/status",
        "alertrules/status",
        also=({"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},),
    )
    autoscaler = [gateway_hpa(GATEWAY, namespace, lab, config.gateway_autoscaling)] if config.gateway_db_url else []
    return [
        *configmaps,
        *identity,
        *gateway_data(namespace, lab, config),
        deployment,
        service,
        *autoscaler,
        gateway_network_policy(namespace, lab, config),
    ]


def status_reporter_identity(
    name: str, namespace: str, lab: dict[str, str], *status_of: str, only: str | None = None, also: tuple[dict[str, Any], ...] = ()
) -> list[dict[str, Any]]:
    """A workload's ServiceAccount, Role and RoleBinding `name`, allowed to get and patch the status
    subresources `status_of` (`sensornodes/status`), of the one object `only` when given, and the
    rules `also` (each one the operator holds itself: it cannot grant more)."""
    meta = {"name": name, "namespace": namespace, "labels": lab}
    rule: dict[str, Any] = {"apiGroups": [GROUP], "resources": list(status_of), "verbs": ["get", "patch"]}
    if only is not None:
        rule["resourceNames"] = [only]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [rule, *also]},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def detector_name(detector: str) -> str:
    return f"plantwatch-detector-{detector}"


#: The execution providers whose inference pods each take one GPU_RESOURCE.
GPU_PROVIDERS = ("cuda", "tensorrt")


def uses_gpu(detector: DetectorModel) -> bool:
    return detector.spec.execution_provider in GPU_PROVIDERS


def detector_node_selector(detector: DetectorModel) -> dict[str, str]:
    """The inference pods' nodeSelector: spec.placement's, and a GPU provider's accelerator label by default."""
    spec = detector.spec
    node_selector = dict(spec.placement.node_selector) if spec.placement else {}
    if uses_gpu(detector):
        node_selector.setdefault(ACCELERATOR_LABEL, "nvidia")
    return dict(sorted(node_selector.items()))


def gpu_bound(detector: DetectorModel, nodes: list[dict[str, Any]] | None) -> tuple[int, int, str | None] | None:
    """A GPU detector's allocatable GPUs on the `nodes` its selector matches, the most replicas they hold,
    and why its maxReplicas is capped (None: it is not). None: not bounded, as a cpu detector, or where the
    Nodes are unknown (`nodes` None)."""
    if nodes is None or not uses_gpu(detector):
        return None
    gpus = gpus_on_matching_nodes(nodes, detector_node_selector(detector), GPU_RESOURCE)
    most = detector.spec.autoscaling.max_replicas
    return gpus, gpu_replicas(most, gpus), gpu_bound_message(most, gpus, GPU_RESOURCE)


def render_detector(
    detector: DetectorModel, config: Config, candidate: str | None = None, nodes: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One DetectorModel's serving: Deployment, Service and HorizontalPodAutoscaler. `candidate`: a ConfigMap
    (spec.retrain's latest) scored in shadow as `spec.shadow: {configMap: {name: candidate}}` would be. `nodes`:
    the cluster's Nodes (nodes.GpuNodes), where the operator may read them: a GPU detector's HPA then asks for
    no more replicas than their GPUs hold (gpu_bound), as every replica more would sit Pending."""
    spec = detector.spec
    name = detector_name(detector.name)
    namespace = detector.meta.namespace
    lab = {**labels("inference", detector.name), DETECTOR_LABEL: detector.name}
    # The service listens on loopback unless told otherwise; in a pod, the Service and the kubelet's probes come in
    # over the pod's own address.
    args = [
        *LOG_ARGS,
        "serve",
        "inference",
        "--model-name",
        detector.name,
        "--provider",
        spec.execution_provider,
        "--host",
        "0.0.0.0",
        "--http-port",
        str(HTTP_PORT),
        "--status-namespace",
        "$(POD_NAMESPACE)",
    ]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    source = spec.source
    if source.config_map is not None:
        # The whole ConfigMap: a model card beside the model (detector publish) comes along, and the
        # kubelet swaps every key at once, so the service can hot-reload a verified pair.
        volumes.append({"name": "model", "configMap": {"name": source.config_map.name}})
        mounts.append({"name": "model", "mountPath": "/models", "readOnly": True})
        args += ["--model", "/models/" + source.config_map.key]
    elif source.pvc is not None:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True}})
        mounts.append({"name": "model", "mountPath": "/models", "readOnly": True})
        args += ["--model", "/models/" + source.pvc.path.lstrip("/")]
    else:
        args += ["--model-url", source.url.url]
    sha = source.url.sha256 if source.url is not None else source.sha256
    if sha:
        args += ["--sha256", sha]
    shadow = spec.shadow
    if shadow is None and candidate is not None:
        shadow = DetectorModelShadow.from_dict({"configMap": {"name": candidate, "key": MODEL_FILE}})
    if shadow is not None:
        # Mounted as the served model is, at its own path: the kubelet's swap of a re-published
        # candidate is hot-reloaded the same way, and the served model's volume is never touched.
        if shadow.config_map is not None:
            volumes.append({"name": "shadow", "configMap": {"name": shadow.config_map.name}})
            args += ["--shadow-model", "/shadow/" + shadow.config_map.key]
        else:
            volumes.append({"name": "shadow", "persistentVolumeClaim": {"claimName": shadow.pvc.claim_name, "readOnly": True}})
            args += ["--shadow-model", "/shadow/" + shadow.pvc.path.lstrip("/")]
        mounts.append({"name": "shadow", "mountPath": "/shadow", "readOnly": True})
    resources: dict[str, Any] = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    node_selector = detector_node_selector(detector)
    tolerations = list(spec.placement.tolerations) if spec.placement else []
    if uses_gpu(detector):
        resources["limits"][GPU_RESOURCE] = "1"
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "securityContext": _pod_security(),
        "containers": [
            {
                "name": "inference",
                "image": config.image,
                "args": args,
                "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                "ports": [{"name": "http", "containerPort": HTTP_PORT}],
                "resources": resources,
                "securityContext": _security_context(),
                "volumeMounts": mounts,
                **_probes("/v2/health/live", "/v2/health/ready"),  # the Open Inference Protocol's own
            }
        ],
        "volumes": volumes,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if GPU_RESOURCE not in resources["limits"]:
        pod_spec["affinity"] = _edge_affinity()
    auto = spec.autoscaling
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": lab},
        # No replicas: the HorizontalPodAutoscaler owns that field (server-side apply would fight it).
        "spec": {
            "selector": {"matchLabels": selector("inference", detector.name)},
            "template": {"metadata": {"labels": lab}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": lab},
        "spec": {"selector": selector("inference", detector.name), "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"}]},
    }
    cpu = {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": auto.target_cpu_utilization_percentage}},
    }
    hpa = autoscale_hpa(name, namespace, lab, auto.min_replicas, auto.max_replicas, cpu)
    if (bound := gpu_bound(detector, nodes)) is not None:
        hpa = gpu_bounded_hpa(hpa, bound[0])
    # Only the gateway scores; the model comes from its ConfigMap, PVC or URL (HTTPS), status goes to the API server.
    policy = network_policy(
        name,
        namespace,
        lab,
        selector("inference", detector.name),
        [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}], "ports": [_port(HTTP_PORT)]}],
        [_DNS, _API_SERVER] + ([{"ports": [_port(443), _port(80)]}] if source.url is not None else []),
    )
    # The identity last: a pod created a moment before its ServiceAccount is retried by the
    # ReplicaSet controller, and callers keep the serving objects first. The pods report their
    # own DetectorModel's status, no other's.
    return [deployment, service, hpa, policy, *status_reporter_identity(name, namespace, lab, "detectormodels/status", only=detector.name)]


def owner_reference(body: dict[str, Any], controller: bool) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": controller,
    }


def owned(manifest: dict[str, Any], owners: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest with ownerReferences, so the garbage collector removes it with its owners."""
    return {**manifest, "metadata": {**manifest["metadata"], "ownerReferences": owners}}
