"""Fixtures for the end-to-end suite: a real control plane, or any cluster you name.

PLANTWATCH_E2E_KUBECONFIG=<path> runs the suite against that cluster (kind, k3s, ...)
instead of starting one here.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import Cluster, ClusterError, ControlPlane
from tests.support import process

#: PersistentVolumes made for the session's claims (each binds one claim, and is not reused once released).
PV_POOL = 200


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One cluster for the whole session. A started control plane keeps its logs when a
    test failed (the folder is printed)."""
    existing = os.environ.get("PLANTWATCH_E2E_KUBECONFIG")
    if existing:
        yield Cluster(existing)
        return
    plane = ControlPlane()
    error = None
    try:
        plane.start()
    except ClusterError as e:
        error = str(e)
    if error:
        pytest.fail(error, pytrace=False)
    print(f"\ncontrol plane started in {plane.startup_seconds:.1f}s")
    # No volume provisioner runs here: a pool of PersistentVolumes stands in for one, so that the claims of the
    # broker, the store and the gateway's SQLite bind and their pods are scheduled (kwok writes to none of them).
    pool = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"e2e-pool-{i}"},
            "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": f"/tmp/e2e-pool-{i}"}},
        }
        for i in range(PV_POOL)
    ]
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pool}))
    try:
        yield plane
    finally:
        plane.stop(keep_logs=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def edge_cluster(cluster: Cluster) -> Cluster:
    """The cluster, when its nodes are the plant's edge (labelled as edge/k3s/nodes.yaml says).

    Always so for the control plane started here; an existing cluster (kind, say) without
    those labels cannot show edge placement, so the tests that need it say so and skip.
    """
    labelled = cluster.kubectl("get", "nodes", "-l", "plantwatch.io/hardware", "-o", "name").stdout.split()
    if not labelled:
        pytest.skip("no node labelled plantwatch.io/hardware: label the cluster's nodes as edge/k3s/nodes.yaml says")
    return cluster


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, usable once its default ServiceAccount exists; deleted afterwards
    (without waiting for it to go)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        f"the default ServiceAccount of namespace {name}",
        timeout=60,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(check, what: str, timeout: float = 90.0, interval: float = 0.5):
    """Poll until `check()` returns something truthy; fail with `what` and the last value (support.process.wait_for,
    at the pace of a control plane)."""
    return process.wait_for(what, check, timeout, interval)


def sensor_node(name: str) -> str:
    """The operator tests' smallest SensorNode, as YAML: an ESP32 on line-1 with one temperature sensor."""
    return f"""
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {{name: {name}, labels: {{plantwatch.io/line: line-1}}}}
spec:
  hardware: esp32
  payload: {{format: esp32-json, topic: sensors/hall-1/{name}/data}}
  sensors:
    - {{name: temperature, type: temperature, unit: celsius, field: temperature_c}}
"""
