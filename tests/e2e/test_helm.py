"""The chart installed for real with the real helm binary into the control plane `make tools` builds."""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.conftest import ROOT
from tests.e2e.conftest import wait_for

HELM = ROOT / ".cache" / "bin" / "helm"
CHART = ROOT / "charts" / "plantwatch"


def helm(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True, timeout=120)


def pinned_kubernetes() -> str:
    """The k8s.io/kubernetes version tools/go/cluster/go.mod builds."""
    for line in (ROOT / "tools/go/cluster/go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["k8s.io/kubernetes"]:
            return parts[1]
    raise AssertionError("k8s.io/kubernetes is not pinned in tools/go/cluster/go.mod")


def test_the_control_plane_says_its_version_so_helm_accepts_it(cluster):
    # Built without the release's version stamp, the API server says v0.0.0-master and helm refuses
    # the chart's kubeVersion (>=1.30.0-0).
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == pinned_kubernetes() and server["major"] == "1"


def test_install_and_uninstall_leave_only_what_the_docs_say(cluster):
    release = f"p-{uuid.uuid4().hex[:6]}"
    installed = helm(cluster, "install", release, str(CHART), "-n", release, "--create-namespace")
    assert installed.returncode == 0, installed.stderr
    try:
        deployments = cluster.kubectl("get", "deployments", "-n", release, "-o", "name").stdout.split()
        assert {f"deployment.apps/{release}-broker", f"deployment.apps/{release}-operator"} <= set(deployments)
        status = json.loads(helm(cluster, "status", release, "-n", release, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        uninstalled = helm(cluster, "uninstall", release, "-n", release)
    assert uninstalled.returncode == 0, uninstalled.stderr
    # What docs/kubernetes.md says stays: the broker's volume of QoS 1 sessions (resource-policy keep).
    left = lambda: sorted(  # noqa: E731
        cluster.kubectl(
            "get",
            "deployments,services,configmaps,secrets,networkpolicies,roles,rolebindings,pvc",
            "-n",
            release,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).stdout.split()
    )
    wait_for(lambda: left() == [f"persistentvolumeclaim/{release}-broker-data"], f"only the broker's PVC left of {release}")
    cluster.kubectl("delete", "namespace", release, "--wait=false", check=False)
