"""Two replicas of one operator install (one identity, kopf peering): exactly one reconciles, the other
stands by, ready and silent; when the active one is killed outright, the standby takes over once the dead
one's peering record goes stale and reconciles what changed after the kill."""

from __future__ import annotations

import signal
import urllib.request

from tests.conftest import ROOT
from tests.e2e.conftest import wait_for
from tests.e2e.test_operator import all_true, crds  # noqa: F401  (crds: fixture)
from tests.e2e.test_operator_ownership import NODE, get, operator_process
from tests.e2e.test_operator_restart import metric, scrape

PEERING = "plantwatch-operator"
#: One install's replicas: the same identity (so the same claim on the namespace) and a short peering lifetime.
ENV = {"PLANTWATCH_OPERATOR_IDENTITY": "e2e/plantwatch", "PLANTWATCH_PEERING_LIFETIME": "5", "PLANTWATCH_OWNERSHIP_LEASE_SECONDS": "15"}


def ready(cluster, namespace: str, name: str) -> bool:
    return all_true(get(cluster, "sensornode", name, "-n", namespace), "Ready")


def plant_yaml(cluster, namespace: str) -> str:
    return (get(cluster, "configmap", "plantwatch-plant", "-n", namespace) or {}).get("data", {}).get("plant.yaml", "")


def test_one_replica_reconciles_and_the_standby_takes_over_when_it_is_killed(cluster, crds, namespace, tmp_path):  # noqa: F811
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "operator" / "deploy" / "crds"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=NODE)
    with operator_process(cluster, tmp_path / "active.log", namespace, ENV, "--peering", PEERING) as active:
        wait_for(lambda: ready(cluster, namespace, "press-01"), f"press-01 Ready by the first replica\n{active.text()[-3000:]}")
        # The older replica ranks higher: kopf starts the second one paused, and it stays so while the first's record lives.
        with operator_process(cluster, tmp_path / "standby.log", namespace, ENV, "--peering", PEERING) as standby:
            wait_for(
                lambda: len((get(cluster, "kopfpeering", PEERING, "-n", namespace) or {}).get("status", {})) == 2,
                f"both replicas' records in KopfPeering {PEERING}\n{standby.text()[-3000:]}",
            )
            # A change while both run: the active one renders it, the standby writes nothing at all.
            cluster.kubectl("label", "sensornode", "press-01", "-n", namespace, "plantwatch.io/area=hall-2")
            wait_for(lambda: "hall-2" in plant_yaml(cluster, namespace), "the active replica rendering the change")
            idle = scrape(standby)
            assert metric(idle, "plantwatch_operator_api_writes_total") == 0, idle
            assert metric(idle, "plantwatch_operator_reconciles_total") == 0, idle
            # A standby is Ready: connected, and it takes over on its own (no Service routes to the operator).
            assert urllib.request.urlopen(f"http://127.0.0.1:{standby.metrics_port}/readyz", timeout=5).status == 200

            active.proc.send_signal(signal.SIGKILL)  # no goodbye: its record stays until it is 5 s stale
            active.proc.wait(10)
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=NODE.replace("press-01", "press-02").replace("hall-1", "hall-2"))
            wait_for(
                lambda: ready(cluster, namespace, "press-02"),
                f"press-02 Ready by the replica that took over\n{standby.text()[-3000:]}",
                timeout=60,
            )
            assert "Resuming operations after the pause" in standby.text()
            assert metric(scrape(standby), "plantwatch_operator_api_writes_total", write="status") >= 1
            assert "press-02" in plant_yaml(cluster, namespace)
            lease = get(cluster, "lease", "plantwatch-operator", "-n", namespace)
            assert lease["spec"]["holderIdentity"] == "e2e/plantwatch"  # one install: the claim never changed hands
