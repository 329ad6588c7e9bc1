"""No secret leaves a Secret: the sample plant rendered by the operator and by `helm template`, with its
Secrets present, holds no secret value in a custom resource, a ConfigMap, container args or a plain env
value; the broker's password file holds hashes; and every pod meets the restricted Pod Security Standard.

(The logs of a run are grepped for the same values by tests/e2e/test_broker_security.py.)
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import secrets
from urllib.parse import urlparse

import pytest
import yaml

from plantwatch.mqtt.acl import password_matches, render_broker_auth
from plantwatch.plant.model import parse_resource
from plantwatch_operator import broker, certs
from plantwatch_operator.config import Config
from plantwatch_operator.render import labels, plant_manifest, render_detector, render_ingestion
from plantwatch_operator.retrain import render_retrain
from tests.conftest import ROOT
from tests.unit.test_chart import CHART, helm, sample_values
from tests.unit.test_render import sample_docs

CONFIG = Config(
    image="ghcr.io/plantwatch/plantwatch:test",
    broker_url="mqtts://line1-broker.plant-a.svc:8883",
    gateway_api_token_secret=("plantwatch-api", "token"),
)
#: The gateway on the shared store with InfluxDB beside it (CONFIG: SQLite on its volume).
SHARED_STORE = dataclasses.replace(
    CONFIG,
    gateway_db_url="postgresql://plantwatch@line1-postgres.plant-a.svc:5432/plantwatch",
    gateway_db_password_secret=("line1-postgres", "password"),
    gateway_influx_url="http://influxdb.monitoring.svc:8086",
    gateway_influx_token_secret=("plantwatch-influxdb", "token"),
)
#: Env variables the chart gives the operator whose value is a Secret's NAME/KEY, never the value.
SECRET_NAME_VARIABLES = {
    "PLANTWATCH_GATEWAY_API_TOKEN_SECRET": "plantwatch-api/token",
    "PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET": "line1-postgres/password",
    "PLANTWATCH_GATEWAY_INFLUX_TOKEN_SECRET": "plantwatch-influxdb/token",
}


@pytest.fixture
def plant_secrets() -> dict[str, dict[str, str]]:
    """Every Secret the sample plant references, with fresh values: each node's MQTT credentials, the
    receivers' keys, the alerts API token and the gateway's MQTT password."""
    docs = sample_docs()
    found: dict[str, dict[str, str]] = {}
    for d in docs:
        ref = (d["spec"].get("credentials") or {}).get("secretRef")
        if d["kind"] == "SensorNode" and ref:
            found[ref["name"]] = {"username": d["metadata"]["name"], "password": secrets.token_urlsafe(24)}
    for d in docs:
        if d["kind"] == "AlertReceiver":
            for ref in _secret_refs(d["spec"]):
                found.setdefault(ref["name"], {})[ref["key"]] = secrets.token_urlsafe(24)
    found["plantwatch-api"] = {"token": secrets.token_urlsafe(24)}
    found[broker.GATEWAY_SECRET] = {broker.GATEWAY_PASSWORD_KEY: secrets.token_urlsafe(32)}
    found[broker.EXPORTER_SECRET] = {broker.GATEWAY_PASSWORD_KEY: secrets.token_urlsafe(32)}
    found["line1-postgres"] = {"password": secrets.token_urlsafe(24)}
    found["plantwatch-influxdb"] = {"token": secrets.token_urlsafe(24)}
    assert any("password" in v for v in found.values()), "the sample plant has no node credentials to check"
    return found


def _secret_refs(spec):
    if isinstance(spec, dict):
        for k, v in spec.items():
            if k.endswith("SecretRef") and isinstance(v, dict):
                yield v
            else:
                yield from _secret_refs(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _secret_refs(v)


def forms(value: str) -> set[str]:
    """A secret as it could leak: itself and base64 (a Secret's data, or a careless encoding)."""
    return {value, base64.b64encode(value.encode()).decode()}


def operator_rendered(plant_secrets: dict[str, dict[str, str]]) -> list[dict]:
    """Everything the operator writes for the sample plant: ingestion, the detector's serving objects, the broker's
    auth, the gateway's password, and its certificates (both ways)."""
    docs = sample_docs()
    objects = render_ingestion("plant-a", [plant_manifest(d) for d in docs], CONFIG)
    objects += render_ingestion("plant-a", [plant_manifest(d) for d in docs], SHARED_STORE)
    for d in docs:
        if d["kind"] == "DetectorModel":
            objects += render_detector(parse_resource({**d, "metadata": {**d["metadata"], "namespace": "plant-a"}}), CONFIG)
            # with spec.retrain too: its CronJob's pod reads the gateway API's token
            retraining = {
                **d,
                "metadata": {**d["metadata"], "namespace": "plant-a"},
                "spec": {**d["spec"], "retrain": {"schedule": "@daily"}},
            }
            objects += render_retrain(parse_resource(retraining), CONFIG)
    nodes = [parse_resource(d) for d in docs if d["kind"] == "SensorNode"]
    credentials = {
        n.meta.name: (
            plant_secrets[n.spec.credentials.secret_ref.name]["username"],
            plant_secrets[n.spec.credentials.secret_ref.name]["password"],
        )
        for n in nodes
        if n.spec.credentials is not None
    }
    gateway_password = plant_secrets[broker.GATEWAY_SECRET][broker.GATEWAY_PASSWORD_KEY]
    exporter_password = plant_secrets[broker.EXPORTER_SECRET][broker.GATEWAY_PASSWORD_KEY]
    auth = render_broker_auth(
        nodes, credentials, (broker.GATEWAY_USERNAME, gateway_password), exporter=(broker.EXPORTER_USERNAME, exporter_password)
    )
    lab = labels("broker", "plant-a")
    objects.append(
        broker.secret(
            broker.AUTH_SECRET, "plant-a", lab, {broker.PASSWORD_FILE: auth.password_file.encode(), broker.ACL_FILE: auth.acl_file.encode()}
        )
    )
    objects.append(broker.secret(broker.GATEWAY_SECRET, "plant-a", lab, {broker.GATEWAY_PASSWORD_KEY: gateway_password.encode()}))
    hosts = certs.broker_hosts(CONFIG.broker_url)
    lifetime = datetime.timedelta(seconds=CONFIG.broker_cert_lifetime)
    objects += broker.tls_secrets("plant-a", lab, None, None, hosts, datetime.datetime.now(datetime.UTC), lifetime)
    objects += broker.cert_manager_objects("plant-a", lab, hosts, lifetime, None)
    return objects


def chart_rendered(tmp_path) -> list[dict]:
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "gateway": {"alertsApi": {"tokenSecret": {"name": "plantwatch-api", "key": "token"}}},
                "store": {
                    "influxdb": {
                        "url": "http://influxdb.monitoring.svc:8086",
                        "tokenSecret": {"name": "plantwatch-influxdb", "key": "token"},
                    }
                },
            }
        )
    )
    out = helm("template", "line1", str(CHART), "-n", "plant-a", "-f", sample_values(tmp_path), "-f", str(extra)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_no_secret_value_in_any_manifest_but_its_secret(tmp_path, plant_secrets):
    chart = chart_rendered(tmp_path)
    # the database password the chart generates, checked as the test's own are
    [generated] = [o for o in chart if o["kind"] == "Secret" and o["metadata"]["name"] == "line1-postgres"]
    plant_secrets["line1-postgres-generated"] = {"password": base64.b64decode(generated["data"]["password"]).decode()}
    assert len(plant_secrets["line1-postgres-generated"]["password"]) >= 32
    rendered = operator_rendered(plant_secrets) + chart + sample_docs()
    leaks = []
    for obj in rendered:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        text = json.dumps(obj)
        if obj["kind"] == "Secret":
            if obj["metadata"]["name"] == broker.AUTH_SECRET:  # the broker's own: hashes, never a password
                text = "\n".join(base64.b64decode(v).decode() for v in obj["data"].values())
            else:
                continue
        for secret_name, values in plant_secrets.items():
            for key, value in values.items():
                if key == "username":
                    continue  # a user name is an identity, not a secret (it is in the ACL by design)
                if any(f in text for f in forms(value)):
                    leaks.append(f"{where} holds Secret {secret_name}/{key}")
    assert not leaks, "\n".join(leaks)
    kinds = {o["kind"] for o in rendered}
    assert {"ConfigMap", "Deployment", "SensorNode", "Secret", "NetworkPolicy", "Certificate", "StatefulSet", "CronJob"} <= kinds


def test_the_broker_password_file_is_hashes_of_exactly_the_nodes_passwords(plant_secrets):
    [auth] = [o for o in operator_rendered(plant_secrets) if o["kind"] == "Secret" and o["metadata"]["name"] == broker.AUTH_SECRET]
    lines = [
        line for line in base64.b64decode(auth["data"][broker.PASSWORD_FILE]).decode().splitlines() if line and not line.startswith("#")
    ]
    users = dict(line.split(":", 1) for line in lines)
    node_secrets = {v["username"]: v["password"] for v in plant_secrets.values() if "username" in v}
    gateway = plant_secrets[broker.GATEWAY_SECRET][broker.GATEWAY_PASSWORD_KEY]
    exporter = plant_secrets[broker.EXPORTER_SECRET][broker.GATEWAY_PASSWORD_KEY]
    assert set(users) == {*node_secrets, broker.GATEWAY_USERNAME, broker.EXPORTER_USERNAME}
    for user, password in {**node_secrets, broker.GATEWAY_USERNAME: gateway, broker.EXPORTER_USERNAME: exporter}.items():
        assert users[user].startswith("$7$") and password_matches(users[user], password)
        assert not password_matches(users[user], password + "x")


def test_containers_take_secrets_from_files_or_secret_key_refs_never_plain_values(tmp_path, plant_secrets):
    """An env value that looks like a credential is a finding even when no test value leaked into it."""
    suspicious = ("PASSWORD", "TOKEN", "SECRET", "KEY", "CREDENTIAL")
    for obj in operator_rendered(plant_secrets) + chart_rendered(tmp_path):
        for pod in _pod_specs(obj):
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                for env in c.get("env", []):
                    if "value" in env and any(s in env["name"] for s in suspicious):
                        if env["name"].endswith("_FILE"):  # where a mounted Secret's key is, a path
                            assert env["value"].startswith("/") and "/" in env["value"][1:], env
                        else:  # the chart passes the operator a Secret's *name* (NAME/KEY), never its value
                            assert SECRET_NAME_VARIABLES.get(env["name"]) == env["value"], env
                    if "valueFrom" in env:
                        assert set(env["valueFrom"]) <= {"secretKeyRef", "fieldRef", "configMapKeyRef", "resourceFieldRef"}
                for value in c.get("args", []) + c.get("command", []) + [e.get("value", "") for e in c.get("env", [])]:
                    # a user name is an identity (postgresql://plantwatch@host/db); a password is not allowed
                    for word in value.split():
                        assert "://" not in word or urlparse(word).password is None, f"{obj['metadata']['name']}: a password in {word!r}"


# --- Pod Security Standards, restricted (kubernetes.io/docs/concepts/security/pod-security-standards) ----

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def _pod_specs(obj: dict):
    if obj["kind"] == "Pod":
        yield obj["spec"]
    elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def restricted_violations(pod: dict) -> list[str]:
    """What in `pod` the restricted profile forbids (its baseline checks included)."""
    out = []
    psc = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            out.append(f"{host} is set")
    for v in pod.get("volumes", []):
        kind = next(k for k in v if k != "name")
        if kind not in ALLOWED_VOLUMES:
            out.append(f"volume {v['name']} is a {kind}")
    if psc.get("runAsUser") == 0:
        out.append("the pod runs as user 0")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runs as user 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is {seccomp!r}")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: uses a hostPort")
    return out


def test_every_pod_meets_the_restricted_pod_security_standard(tmp_path, plant_secrets):
    out = helm("template", "line1", str(CHART), "-n", "plant-a", "-f", sample_values(tmp_path)).stdout
    chart = [d for d in yaml.safe_load_all(out) if d]
    pods = [(o["kind"], o["metadata"]["name"], p) for o in operator_rendered(plant_secrets) + chart for p in _pod_specs(o)]
    names = {n for _, n, _ in pods}
    assert {"plantwatch-gateway", "line1-broker", "line1-broker-exporter", "line1-operator", "line1-test-gateway-ready"} <= names
    assert {"line1-postgres", "line1-backup"} <= names  # the store of record and its backups
    assert any(n.startswith("plantwatch-detector-") for n in names) and any(n.endswith("-retrain") for n in names)
    findings = [f"{kind} {name}: {v}" for kind, name, pod in pods for v in restricted_violations(pod)]
    assert not findings, "\n".join(findings)
    for deploy in (ROOT / "operator" / "deploy").glob("*.yaml"):
        for d in yaml.safe_load_all(deploy.read_text()):
            for pod in _pod_specs(d) if d else ():
                assert not restricted_violations(pod), (deploy, restricted_violations(pod))


def test_the_restricted_check_finds_what_the_standard_forbids():
    good = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    }
    assert restricted_violations(good) == []
    bad = {**good, "hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}], "securityContext": {}}
    bad["containers"] = [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}, "ports": [{"hostPort": 80}]}]
    assert restricted_violations(bad) == [
        "hostNetwork is set",
        "volume h is a hostPath",
        "c: runAsNonRoot is not true",
        "c: seccompProfile is None",
        "c: allowPrivilegeEscalation is not false",
        "c: capabilities do not drop ALL",
        "c: adds capabilities ['SYS_ADMIN']",
        "c: uses a hostPort",
    ]
