"""Fixtures for the end-to-end suite: a real control plane, or any cluster you name.

PLANTWATCH_E2E_KUBECONFIG=<path> runs the suite against that cluster (kind, k3s, ...)
instead of starting one here.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterator

import pytest

from tests.e2e.cluster import ControlPlane, ExistingCluster


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ExistingCluster]:
    existing = os.environ.get("PLANTWATCH_E2E_KUBECONFIG")
    if existing:
        yield ExistingCluster(existing)
        return
    cp = ControlPlane()
    cp.start()
    print(f"\ncontrol plane started in {cp.startup_seconds:.1f}s")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def edge_cluster(cluster: ExistingCluster) -> ExistingCluster:
    """The cluster, when its nodes are the plant's edge (labelled as edge/k3s/nodes/*.yaml say).

    Always true for the control plane started here; an existing cluster (kind, say) without
    those labels cannot show edge placement, so the tests that need it say so and skip.
    """
    labelled = cluster.kubectl("get", "nodes", "-l", "plantwatch.io/hardware", "-o", "name").stdout.split()
    if not labelled:
        pytest.skip("no node labelled plantwatch.io/hardware: label the cluster's nodes as edge/k3s/nodes/*.yaml do")
    return cluster


@pytest.fixture
def namespace(cluster: ExistingCluster) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"namespace {name} got no default ServiceAccount"
        time.sleep(0.25)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(check, what: str, timeout: float = 90.0, interval: float = 0.5):
    """Poll until `check()` returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
