"""Restarting or upgrading the operator changes nothing in a settled plant: every object of the namespace
keeps its resourceVersion, so a rollout of the operator restarts no gateway, rewrites no status and posts
no Event. A fresh process remembers nothing it applied; it must compare with what the cluster holds."""

from __future__ import annotations

import json
import re
import secrets
import signal
import time

import pytest

from plantwatch.contracts.names import OPERATOR_MANAGER
from tests.conftest import EXAMPLE_PLANT, ROOT
from tests.e2e.conftest import wait_for
from tests.e2e.test_operator import API_TOKEN_SECRET, BROKER, all_true, crds  # noqa: F401  (crds: fixture)
from tests.e2e.test_operator_ownership import Operator, get, operator_process

#: The only kinds a restart may change, and why; every other object of the namespace (the operator's children,
#: the plant's resources with their status, Events) is compared.
UNCHANGED_BY_DESIGN = {
    # The ownership claim is renewed every lease/3 by whichever process holds it: a renewal is its purpose.
    "leases.coordination.k8s.io",
    # kopf's peering records: each replica's keep-alive rewrites them while it runs.
    "kopfpeerings.kopf.dev",
}
#: Both processes' settings: one install (one identity), short periods so that every recheck runs inside the window.
ENV = {
    "PLANTWATCH_GATEWAY_API_TOKEN_SECRET": f"{API_TOKEN_SECRET}/token",
    # The periodic rechecks run several times inside the quiet window, so they are held to it too.
    "PLANTWATCH_DETECTOR_CHECK_INTERVAL": "2",
    "PLANTWATCH_RECEIVER_CHECK_INTERVAL": "2",
    "PLANTWATCH_CREDENTIALS_CHECK_INTERVAL": "2",
    "PLANTWATCH_OPERATOR_IDENTITY": "e2e/plantwatch",
    "PLANTWATCH_OWNERSHIP_LEASE_SECONDS": "15",
    "PLANTWATCH_PEERING_LIFETIME": "5",
}
QUIET_SECONDS = 6.0


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when it has none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def scrape(op: Operator) -> str:
    """The operator's metrics; empty until it listens."""
    try:
        return op.metrics()
    except OSError:
        return ""


def writes(text: str) -> float:
    """The operator's writes but its ownership Lease's renewals (UNCHANGED_BY_DESIGN)."""
    return metric(text, "plantwatch_operator_api_writes_total") - metric(text, "plantwatch_operator_api_writes_total", write="lease")


def settled(op: Operator) -> float:
    """Wait until the operator has rendered the plant at least once, has no render pending and has sent no
    write for QUIET_SECONDS; its writes so far."""
    wait_for(lambda: metric(scrape(op), "plantwatch_operator_reconciles_total", target="plant") >= 1, "the operator's first render")
    deadline, last, since = time.monotonic() + 120, None, time.monotonic()
    while time.monotonic() < deadline:
        text = op.metrics()
        now = writes(text)
        if now != last or metric(text, "plantwatch_operator_renders_pending"):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET_SECONDS:
            return now
        time.sleep(0.5)
    written = "\n".join(line for line in op.metrics().splitlines() if line.startswith("plantwatch_operator_api_writes_total"))
    pytest.fail(f"the operator kept writing for 120 s:\n{written}\n{op.text()[-3000:]}", pytrace=False)


def snapshot(cluster, namespace: str) -> dict[str, tuple[str, str, str]]:
    """kind/name → (resourceVersion, the operator's managedFields, every writer) of every object in the
    namespace, of every listable kind but UNCHANGED_BY_DESIGN; Events too (their source, reason, message)."""
    kinds = cluster.kubectl("api-resources", "--namespaced=true", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in UNCHANGED_BY_DESIGN and k not in ("events", "events.events.k8s.io")]
    objects = json.loads(cluster.kubectl("get", ",".join(kinds), "-n", namespace, "-o", "json").stdout)["items"]
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    found = {}
    for o in objects:
        managers = o["metadata"].get("managedFields") or []
        ours = json.dumps([m for m in managers if m["manager"] == OPERATOR_MANAGER], sort_keys=True)
        found[f"{o['kind']}/{o['metadata']['name']}"] = (o["metadata"]["resourceVersion"], ours, " ".join(m["manager"] for m in managers))
    for e in events:
        # kopf posts the operator's Events (source kopf); controllers post theirs under their own names.
        ours = "kopf" if e["source"].get("component") == "kopf" else ""
        found[f"Event/{e['metadata']['name']}"] = (e["metadata"]["resourceVersion"], ours, f"{e['reason']} {e['message']}")
    return found


@pytest.fixture
def settled_plant(cluster, crds, namespace, tmp_path):  # noqa: F811
    """The sample plant (nodes, rules, receivers, a detector with its model) and its broker, settled by an operator."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "operator" / "deploy" / "crds"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=BROKER)
    cluster.kubectl("create", "secret", "generic", API_TOKEN_SECRET, "-n", namespace, f"--from-literal=token={secrets.token_hex(16)}")
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE_PLANT))
    return namespace


def operator_writes(before: dict[str, tuple[str, str, str]], after: dict[str, tuple[str, str, str]]) -> list[str]:
    """The objects whose resourceVersion moved because the operator wrote them: its managedFields entry changed
    (a no-op apply moves neither), or an Event it posted. Writes by others (the HPA controller, which rewrites
    an HPA's status on each sync while no metrics API answers, as here) are not the restart's doing."""
    none = ("(absent)", "", "")
    return sorted(
        f"{key}: resourceVersion {before.get(key, none)[0]} -> {after[key][0]} ({after[key][2]})"
        for key in after
        if before.get(key, none)[0] != after[key][0] and after[key][1] and before.get(key, none)[1] != after[key][1]
    )


@pytest.mark.parametrize("how", ["restart", "rolling-upgrade"])
def test_restarting_or_upgrading_the_operator_changes_nothing(cluster, settled_plant, tmp_path, how):
    """`restart`: SIGTERM, then a new process. `rolling-upgrade`: as a Deployment rolls, the new replica starts
    beside the old one (kopf peering keeps it on standby), the old one stops, the new one takes over. The
    operator stamps no version of its own on what it renders, so an upgrade that renders the same manifests
    is this too (a new image for the workloads is a change by design: PLANTWATCH_IMAGE rolls the gateways)."""
    ns = settled_plant
    peering = ("--peering", "plantwatch-operator") if how == "rolling-upgrade" else ()
    with operator_process(cluster, tmp_path / "first.log", ns, ENV, *peering) as first:
        wait_for(lambda: all_true(get(cluster, "detectormodel", "bearing-wear", "-n", ns), "Available"), "the detector Available")
        settled(first)
        before = snapshot(cluster, ns)
        if how == "restart":
            first.proc.send_signal(signal.SIGTERM)
            first.proc.wait(30)
        with operator_process(cluster, tmp_path / "second.log", ns, ENV, *peering) as second:
            if how == "rolling-upgrade":
                wait_for(
                    lambda: len((get(cluster, "kopfpeering", "plantwatch-operator", "-n", ns) or {}).get("status", {})) == 2,
                    "the new replica's peering record beside the old one's",
                )
                first.proc.send_signal(signal.SIGTERM)
                first.proc.wait(30)
                wait_for(lambda: "Resuming operations after the pause" in second.text(), "the new replica taking over")
            settled(second)
            after = snapshot(cluster, ns)
            written = operator_writes(before, after)
            assert not written, "the restart wrote:\n" + "\n".join(written) + f"\n{second.text()[-3000:]}"
            assert before.keys() <= after.keys(), f"the restart deleted {sorted(before.keys() - after.keys())}"
            assert writes(second.metrics()) == 0
