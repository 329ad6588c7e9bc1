"""operator/deploy/ installs, and its least-privilege RBAC is enough: the operator, run with
nothing but that ServiceAccount's token, reconciles the sample plant without a Forbidden."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.conftest import wait_for
from tests.e2e.host_pods import service_account_kubeconfig
from tests.e2e.test_operator import SLACK_RECEIVER
from tests.support.process import terminate

DEPLOY = ROOT / "operator" / "deploy"
SYSTEM = "plantwatch-system"
ACCOUNT = f"system:serviceaccount:{SYSTEM}:plantwatch-operator"


def get(cluster, *args: str) -> dict | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def current(obj: dict | None, *types: str) -> dict | None:
    """The object when each named condition is True for its current generation."""
    if not obj:
        return None
    status, gen = obj.get("status") or {}, obj["metadata"].get("generation")
    conds = {c["type"]: c for c in status.get("conditions", [])}
    ok = status.get("observedGeneration") == gen and all(
        conds.get(t, {}).get("status") == "True" and conds[t].get("observedGeneration") == gen for t in types
    )
    return obj if ok else None


@pytest.fixture(scope="module")
def installed(cluster) -> Iterator[None]:
    """crds/ and operator/deploy/ applied the way the README says."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"), "-f", str(DEPLOY))
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        name = yaml.safe_load(f.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    try:
        yield
    finally:
        cluster.kubectl("delete", "-f", str(DEPLOY), "--wait=false", "--ignore-not-found", check=False)


def can(cluster, verb: str, resource: str, namespace: str = "default") -> bool:
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={ACCOUNT}", check=False)
    return result.stdout.strip() == "yes"


def test_the_operator_deployment_passes_restricted_pod_security(cluster, installed):
    """The namespace enforces the restricted Pod Security Standard, so a pod exists only if it complies."""
    wait_for(
        lambda: [
            p
            for p in (get(cluster, "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator") or {"items": []})["items"]
            if p["status"].get("phase") == "Running"
        ],
        "the operator pod Running (on a fake node)",
    )
    events = cluster.kubectl("get", "events", "-n", SYSTEM, "-o", "json").stdout
    assert "violates PodSecurity" not in events


def test_the_role_grants_no_more_than_the_handlers_need(cluster, installed):
    assert can(cluster, "patch", "deployments.apps") and can(cluster, "patch", "sensornodes.plantwatch.io/status")
    assert can(cluster, "get", "secrets")  # an AlertReceiver's, by name
    assert can(cluster, "list", "nodes") and can(cluster, "watch", "nodes")  # their GPUs cap a GPU detector's HPA
    for verb, resource in [
        ("delete", "deployments.apps"),
        ("update", "deployments.apps"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "pods"),
        ("patch", "nodes"),
        ("get", "nodes/proxy"),
        ("delete", "sensornodes.plantwatch.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("bind", "roles.rbac.authorization.k8s.io"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
    ]:
        assert not can(cluster, verb, resource), f"the operator's ServiceAccount may {verb} {resource}"


@pytest.fixture
def operator_as_its_account(cluster, installed, tmp_path) -> Iterator[Path]:
    """The operator process, cluster-wide, authenticated only by its ServiceAccount's token."""
    kubeconfig = service_account_kubeconfig(cluster, SYSTEM, "plantwatch-operator", tmp_path / "kubeconfig")
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PLANTWATCH_DETECTOR_CHECK_INTERVAL": "2"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "plantwatch_operator"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield log
    finally:
        terminate(proc, 15)


def test_the_operator_needs_nothing_beyond_its_role(cluster, operator_as_its_account, namespace):
    log = operator_as_its_account

    def waited(check, what: str):
        try:
            return wait_for(check, what)
        except pytest.fail.Exception as exc:
            failure = str(exc)
        pytest.fail(f"{failure}\n--- operator log (tail) ---\n{log.read_text()[-4000:]}", pytrace=False)

    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT))
    cluster.kubectl("create", "secret", "generic", "line-1-slack", "-n", namespace, "--from-literal=webhook-url=https://hooks.invalid/x")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=SLACK_RECEIVER)
    for kind, name in [
        ("configmap", "plantwatch-plant"),
        ("deployment", "plantwatch-gateway"),
        ("service", "plantwatch-gateway"),
        ("deployment", "plantwatch-detector-bearing-wear"),
        ("service", "plantwatch-detector-bearing-wear"),
        ("hpa", "plantwatch-detector-bearing-wear"),
    ]:
        waited(lambda: get(cluster, kind, name, "-n", namespace), f"{kind}/{name}")
    for kind, name, types in [
        ("sensornode", "esp32-press-01", ("Ready",)),
        ("alertrule", "bearing-anomaly", ("Accepted",)),
        ("detectormodel", "bearing-wear", ("ModelValid", "Available")),
        ("alertreceiver", "line-1-slack", ("Accepted",)),
    ]:
        waited(lambda: current(get(cluster, kind, name, "-n", namespace), *types), f"{kind}/{name} {'+'.join(types)}")
    waited(lambda: "Rendered" in cluster.kubectl("get", "events", "-n", namespace).stdout, "the operator's Events")
    # Only refusals by RBAC count: a cluster-wide operator also meets namespaces of earlier
    # tests being deleted, where the API server forbids new objects for another reason.
    text = log.read_text()
    refused = re.search(rf'{re.escape(ACCOUNT)}\\*" cannot [^"\\]*|Not enough permissions.*', text)
    assert refused is None, f"the operator was refused: {refused.group()}\n{text[-4000:]}"
