"""The broker's identities and certificates on a real control plane, in a namespace enforcing PSS restricted.

The operator renders the broker's password file and ACL from two nodes' Secrets; the chart's broker and the
gateway mount what they need; rotating one node's Secret rewrites its line only; the operator's CA and server
certificate exist and are renewed before expiry (a short lifetime here); with cert-manager's CRD present the
operator renders Certificates instead; no password reaches the operator's log.
"""

from __future__ import annotations

import base64
import copy
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from plantwatch.mqtt.acl import parse_password_file, password_matches
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.test_operator import _operator_log, crds, get, wait_for  # noqa: F401  (crds: a fixture)
from tests.unit.test_chart import CHART, helm

LIFETIME = 60  # seconds: renewed with a third left, so within the test's wait
CERT_MANAGER_CRD = ROOT / "tests" / "e2e" / "cert-manager-crd.yaml"


@pytest.fixture(scope="module")
def operator(cluster, crds, tmp_path_factory) -> Iterator[Path]:  # noqa: F811
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": cluster.kubeconfig,
        "PLANTWATCH_BROKER_URL": "mqtts://line1-broker:8883",
        "PLANTWATCH_BROKER_CERT_LIFETIME": str(LIFETIME),
        "PLANTWATCH_CREDENTIALS_CHECK_INTERVAL": "2",
        "PLANTWATCH_IMAGE": os.environ.get("PLANTWATCH_E2E_IMAGE", "ghcr.io/plantwatch/plantwatch:0.1.0"),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantwatch.cli", "--log-level", "DEBUG", "operator"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    _operator_log.append(log)
    try:
        yield log
    finally:
        _operator_log.remove(log)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def node(name: str, topic: str) -> dict:
    doc = copy.deepcopy(
        next(d for d in yaml.safe_load_all((EXAMPLE_PLANT / "nodes.yaml").read_text()) if d and d["spec"].get("credentials"))
    )
    doc["metadata"] = {"name": name}
    doc["spec"]["payload"]["topic"] = topic
    doc["spec"]["credentials"] = {"secretRef": {"name": f"{name}-mqtt"}}
    return doc


def credentials(cluster, namespace: str, name: str, password: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-mqtt"},
        "stringData": {"username": name, "password": password},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def secret(cluster, namespace: str, name: str) -> dict[str, bytes] | None:
    obj = get(cluster, "secret", name, "-n", namespace)
    return {k: base64.b64decode(v) for k, v in obj["data"].items()} if obj else None


def password_lines(cluster, namespace: str) -> dict[str, str]:
    auth = secret(cluster, namespace, "plantwatch-broker-auth")
    return parse_password_file(auth["passwd"].decode()) if auth else {}


def serial(cluster, namespace: str) -> int | None:
    tls = secret(cluster, namespace, "plantwatch-broker-tls")
    return x509.load_pem_x509_certificate(tls["tls.crt"]).serial_number if tls else None


def test_node_identities_certificates_and_no_password_in_the_log(cluster, operator, namespace, tmp_path):
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    passwords = {"press-a": secrets.token_urlsafe(24), "press-b": secrets.token_urlsafe(24)}
    for name, password in passwords.items():
        credentials(cluster, namespace, name, password)
    nodes = [node("press-a", "sensors/hall-1/press-a/data"), node("press-b", "sensors/hall-1/press-b/data")]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(nodes))

    lines = wait_for(
        lambda: (ls := password_lines(cluster, namespace)) and {"press-a", "press-b", "plantwatch-gateway"} <= set(ls) and ls,
        "the broker's password file with both nodes and the gateway",
    )
    for name, password in passwords.items():
        assert password_matches(lines[name], password)
    acl = secret(cluster, namespace, "plantwatch-broker-auth")["acl"].decode()
    assert "user press-a\ntopic write sensors/hall-1/press-a/data\n" in acl and "topic read sensors/hall-1/press-a/cmd" in acl
    gateway_password = secret(cluster, namespace, "plantwatch-gateway-mqtt")["password"].decode()
    assert password_matches(lines["plantwatch-gateway"], gateway_password)

    # the chart's broker in the same namespace: the API server admits its pod (PSS restricted) with the rendered Secrets mounted
    out = helm("template", "line1", str(CHART), "-n", namespace, "--set", "operator.enabled=false").stdout
    broker_objects = [d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"].startswith("line1-broker")]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(broker_objects))
    for component, wanted in (
        ("broker", {"plantwatch-broker-auth", "plantwatch-broker-tls"}),
        ("gateway", {"plantwatch-gateway-mqtt", "plantwatch-broker-tls"}),
    ):
        pod = wait_for(
            lambda c=component: next(
                iter((get(cluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/component={c}") or {}).get("items", [])), None
            ),
            f"a {component} pod admitted under PSS restricted",
        )
        mounted = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
        assert wanted <= mounted, (component, mounted)
    gateway = get(cluster, "deployment", "plantwatch-gateway", "-n", namespace)
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--broker") + 1] == "mqtts://line1-broker:8883" and "--broker-password-file" in args
    assert get(cluster, "networkpolicy", "plantwatch-gateway", "-n", namespace) is not None

    # rotating press-a's Secret rewrites press-a's line only
    passwords["press-a"] = secrets.token_urlsafe(24)
    credentials(cluster, namespace, "press-a", passwords["press-a"])
    rotated = wait_for(
        lambda: (ls := password_lines(cluster, namespace)) and password_matches(ls["press-a"], passwords["press-a"]) and ls,
        "press-a's new password in the broker's password file",
    )
    assert rotated["press-b"] == lines["press-b"] and rotated["plantwatch-gateway"] == lines["plantwatch-gateway"]

    # the generated CA and server certificate, renewed before expiry under the same CA
    first = wait_for(lambda: serial(cluster, namespace), "the broker's server certificate Secret")
    ca = secret(cluster, namespace, "plantwatch-broker-ca")["tls.crt"]
    tls = secret(cluster, namespace, "plantwatch-broker-tls")
    cert = x509.load_pem_x509_certificate(tls["tls.crt"])
    assert tls["ca.crt"] == ca and "line1-broker" in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    wait_for(
        lambda: serial(cluster, namespace) not in (None, first), "the server certificate renewed before expiry", timeout=LIFETIME * 1.5
    )
    assert secret(cluster, namespace, "plantwatch-broker-ca")["tls.crt"] == ca

    log = operator.read_text()
    for value in [*passwords.values(), gateway_password, tls["tls.key"].decode().splitlines()[1]]:
        assert value not in log and base64.b64encode(value.encode()).decode() not in log


def test_with_cert_manager_the_operator_renders_certificates(cluster, operator, namespace):
    crd = "certificates.cert-manager.io"
    ours = get(cluster, "crd", crd) is None
    try:
        if ours:
            cluster.kubectl("apply", "--server-side", "-f", str(CERT_MANAGER_CRD))
            for name in ("certificates.cert-manager.io", "issuers.cert-manager.io"):
                cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        credentials(cluster, namespace, "press-a", secrets.token_urlsafe(24))
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(node("press-a", "sensors/hall-1/press-a/data")))
        certificate = wait_for(lambda: get(cluster, crd, "plantwatch-broker-tls", "-n", namespace), "the broker's Certificate")
        assert certificate["spec"]["secretName"] == "plantwatch-broker-tls" and "line1-broker" in certificate["spec"]["dnsNames"]
        assert certificate["spec"]["issuerRef"]["name"] == "plantwatch-broker-ca"
        assert get(cluster, "issuers.cert-manager.io", "plantwatch-broker-ca", "-n", namespace) is not None
        wait_for(lambda: get(cluster, "secret", "plantwatch-broker-auth", "-n", namespace), "the broker's auth Secret")
        assert get(cluster, "secret", "plantwatch-broker-tls", "-n", namespace) is None  # cert-manager's to write, not the operator's
    finally:
        if ours:
            cluster.kubectl("delete", "-f", str(CERT_MANAGER_CRD), "--wait=false", check=False)
