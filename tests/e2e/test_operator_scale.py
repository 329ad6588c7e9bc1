"""A change's cost does not grow with the plant: one SensorNode added, or one AlertRule's threshold changed,
writes the same objects (and posts the same Events) in a plant of 200 nodes as in one of 20, on the
control plane with the operator as a process. Bounded at 200 nodes; the 1,000-node figures are
`bench/operator.py`'s."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import wait_for
from tests.e2e.synthetic_plant import node, plant
from tests.e2e.test_operator import crds  # noqa: F401  (fixture)
from tests.e2e.test_operator_ownership import Operator, operator_process

ROOT = Path(__file__).resolve().parents[2]
SMALL, LARGE = 20, 200
#: Every kind the operator writes in a plant's namespace (Events are counted apart).
KINDS = "sensornodes,alertrules,detectormodels,configmaps,secrets,deployments,services,serviceaccounts,roles,rolebindings,networkpolicies"
QUIET_SECONDS = 4.0


def writes(op: Operator) -> tuple[float, float]:
    """The operator's writes but its claim's renewals, and its renders pending."""
    text = op.metrics()
    total = pending = 0.0
    for line in text.splitlines():
        if line.startswith("plantwatch_operator_api_writes_total{") and 'write="lease"' not in line:
            total += float(line.rpartition(" ")[2])
        elif line.startswith("plantwatch_operator_renders_pending "):
            pending = float(line.rpartition(" ")[2])
    return total, pending


def settle(op: Operator) -> None:
    """Until no render is pending and the operator has written nothing for QUIET_SECONDS."""
    last, since, deadline = None, time.monotonic(), time.monotonic() + 180
    while time.monotonic() < deadline:
        now, pending = writes(op)
        if now != last or pending:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET_SECONDS:
            return
        time.sleep(0.25)
    pytest.fail(f"the operator kept working for 180 s:\n{op.text()[-3000:]}", pytrace=False)


def versions(cluster, namespace: str) -> dict[str, str]:
    """Kind/name → resourceVersion of every object the operator may write, and of each Event it posted (on the
    plant's resources: the controllers' own, a ReplicaSet scaled, come and go on their own schedule), as
    Event/<reason>/<name>."""
    objects = json.loads(cluster.kubectl("get", f"{KINDS},events", "-n", namespace, "-o", "json").stdout)["items"]
    return {
        (f"Event/{o['reason']}" if o["kind"] == "Event" else o["kind"]) + f"/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
        for o in objects
        if o["kind"] != "Event" or o["involvedObject"].get("apiVersion", "").startswith("plantwatch.io/")
    }


def written(before: dict[str, str], after: dict[str, str], plant_size: int) -> Counter[str]:
    """What changed, by kind and by the part it plays: the added node named `new` and Events by reason, so two
    plants' changes compare whatever their objects are called."""
    kinds: Counter[str] = Counter()
    for key in after.keys() - {k for k in before if before[k] == after.get(k)}:
        kind, name = key.rsplit("/", 1)
        kinds[f"{kind}/{'new' if name == f'node-{plant_size:05d}' else 'existing'}" if kind == "SensorNode" else kind] += 1
    return kinds


def ready(cluster, namespace: str, nodes: int) -> bool:
    listed = json.loads(cluster.kubectl("get", "sensornodes", "-n", namespace, "-o", "json").stdout)["items"]
    return (
        sum(any(c["type"] == "Ready" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions", [])) for o in listed)
        >= nodes
    )


def change_cost(cluster, op: Operator, namespace: str, size: int, change) -> Counter[str]:
    before = versions(cluster, namespace)
    change()
    settle(op)
    return written(before, versions(cluster, namespace), size)


def test_a_change_costs_the_same_in_a_plant_ten_times_larger(cluster, crds, namespace, tmp_path):  # noqa: F811
    large = f"{namespace}-large"
    cluster.kubectl("create", "namespace", large)
    try:
        sizes = {namespace: SMALL, large: LARGE}
        with operator_process(cluster, tmp_path / "operator.log", namespace, {}, "-n", large) as op:
            for ns, size in sizes.items():
                cluster.kubectl("create", "-n", ns, "-f", "-", input=yaml.safe_dump_all(plant(size)))
            for ns, size in sizes.items():
                wait_for(lambda ns=ns, size=size: ready(cluster, ns, size), f"{size} SensorNodes Ready in {ns}", timeout=180)
            settle(op)
            added, changed = {}, {}
            for ns, size in sizes.items():
                add = lambda ns=ns, size=size: cluster.kubectl("create", "-n", ns, "-f", "-", input=yaml.safe_dump(node(size)))  # noqa: E731
                added[ns] = change_cost(cluster, op, ns, size, add)
                patch = json.dumps({"spec": {"condition": {"threshold": {"warning": "75"}}}})
                changed[ns] = change_cost(
                    cluster,
                    op,
                    ns,
                    size,
                    lambda ns=ns: cluster.kubectl("patch", "alertrule", "rule-003", "-n", ns, "--type=merge", "-p", patch),
                )
        log = re.sub(r"\n+", "\n", op.text()[-2000:])
        # The new node's Ready and the config it is rendered into: the change did reach the plant.
        assert added[namespace]["SensorNode/new"] == 1 and added[namespace]["ConfigMap"] >= 1, f"{added[namespace]}\n{log}"
        assert added[large] == added[namespace], (
            f"one node added to {LARGE} nodes wrote {dict(added[large])}, to {SMALL} nodes {dict(added[namespace])}"
        )
        assert changed[namespace]["AlertRule"] == 1, f"{changed[namespace]}\n{log}"
        assert changed[large] == changed[namespace], (
            f"one rule changed among {LARGE} nodes wrote {dict(changed[large])}, among {SMALL} {dict(changed[namespace])}"
        )
    finally:
        cluster.kubectl("delete", "namespace", large, "--wait=false", check=False)


#: Reads the plant as the operator does (kube.list_plant), with pages of 7 objects; prints what it read.
LIST_IN_PAGES = """
import json, sys
from plantwatch_operator import kube
kube.LIST_PAGE = 7
full, specs = (kube.list_plant(sys.argv[1], "sensornodes", specs_only=s) for s in (False, True))
print(json.dumps({"full": full, "specs": specs}))
"""


def test_a_plant_read_in_pages_is_read_whole(cluster, crds, namespace):  # noqa: F811
    """The operator reads a plant a page at a time (a thousand nodes are megabytes of JSON): every node is read
    once, in full for the render; for a verdict on specs without its status and managedFields but with all
    the verdict reads."""
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([node(i) for i in range(20)]))
    status = json.dumps({"status": {"observedGeneration": 1}})
    cluster.kubectl("patch", "sensornode", "node-00003", "-n", namespace, "--subresource=status", "--type=merge", "-p", status)
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT / "operator")])}
    read = json.loads(
        subprocess.run([sys.executable, "-c", LIST_IN_PAGES, namespace], env=env, capture_output=True, text=True, check=True).stdout
    )
    full, specs = ({o["metadata"]["name"]: o for o in read[k]} for k in ("full", "specs"))
    assert sorted(full) == sorted(specs) == [f"node-{i:05d}" for i in range(20)], (
        f"read {len(read['full'])} and {len(read['specs'])} objects"
    )
    assert full["node-00003"]["status"] == {"observedGeneration": 1} and all(o["metadata"]["managedFields"] for o in full.values())
    for name, o in specs.items():
        assert "status" not in o and "managedFields" not in o["metadata"], (
            f"{name} read for its spec with {sorted(o)} {sorted(o['metadata'])}"
        )
        kept = {k: v for k, v in full[name]["metadata"].items() if k != "managedFields"}
        assert (o["spec"], o["metadata"], o["kind"]) == (full[name]["spec"], kept, "SensorNode")
