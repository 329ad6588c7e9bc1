"""Operator scale benchmark: a whole plant applied at once to the e2e control plane.

    python bench/operator.py [--nodes 1000] [--rules 100] [--detectors 10] [--out bench/results/operator.json]
    python bench/operator.py --nodes 5000          # → bench/results/operator-5000.json

Starts the control plane the e2e suite uses (tests/e2e/cluster.py) and the operator on the host,
creates N SensorNodes, the AlertRules and DetectorModels in one `kubectl create`, and records:

- seconds_to_all_ready: every node Ready, every rule Accepted, every detector Scoring, for their
  current generation;
- seconds_to_settled: until the operator has no work left, i.e. the last moment its write counter
  (plantwatch_operator_api_writes_total) or its reconcile count moved before staying still
  for QUIET_S with no render pending (plantwatch_operator_renders_pending);
- the operator's peak RSS (VmHWM), its CPU while idle after settling (share of one core over IDLE_S);
- API requests per second (the API server's apiserver_request_total, every client) and the
  operator's own writes per second, during the rollout and while idle;
- then one node added to the plant (seconds to Ready) and one rule's threshold changed (seconds to
  settled, and the objects written: resourceVersions changed in the namespace plus Events posted);
- what would break a bigger plant: the namespace's largest object (the API server refuses one past
  1 MiB), the plant's ConfigMaps, the API server's 429/5xx answers, the operator's logged errors, and
  the Events the rollout posted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services"), str(ROOT / "operator")]

from plantwatch.mqtt.broker import free_port  # noqa: E402
from tests.e2e.cluster import ControlPlane  # noqa: E402
from tests.e2e.synthetic_plant import node, plant  # noqa: E402

NAMESPACE = "plant-bench"
QUIET_S = 5.0
#: One whole recheck interval (PLANTWATCH_CREDENTIALS_CHECK_INTERVAL, 30 s): idle includes the periodic work.
IDLE_S = 30.0
#: Kinds whose objects the operator writes in a plant's namespace (what "objects written" counts).
WATCHED = [
    "sensornodes",
    "alertrules",
    "detectormodels",
    "configmaps",
    "secrets",
    "deployments",
    "services",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "networkpolicies",
    "horizontalpodautoscalers",
]
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"}


class Operator:
    """`plantwatch operator` as a process, its metrics and its /proc figures."""

    def __init__(self, kubeconfig: str, workdir: Path) -> None:
        self.metrics_port = free_port()
        self.log = workdir / "operator.log"
        # MALLOC_ARENA_MAX as the chart's and operator/deploy's Deployment set it.
        env = {
            **os.environ,
            "MALLOC_ARENA_MAX": "2",
            "KUBECONFIG": kubeconfig,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT / "operator")]),
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plantwatch.cli", "--log-level", "INFO", "operator", "--metrics-port", str(self.metrics_port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def metrics(self, labelled: bool = False) -> dict[str, float]:
        """Sums per metric name (labels dropped unless `labelled`)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        sums: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            name, _, value = line.rpartition(" ")
            base = name if labelled else name.split("{")[0]
            sums[base] = sums.get(base, 0.0) + float(value)
        return sums

    def writes_by_kind(self) -> dict[str, float]:
        """plantwatch_operator_api_writes_total per `write` label (apply, status, event, delete)."""
        found = self.metrics(labelled=True).items()
        return {re.search(r'write="([^"]+)"', k).group(1): v for k, v in found if k.startswith("plantwatch_operator_api_writes_total{")}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def activity(self) -> tuple:
        """What moves while the operator works: its writes and its reconciles; and whether a render is pending.
        (Not its log: kopf logs every per-object timer's run, which is no reconcile work.)"""
        m = self.metrics(labelled=True)
        pending = m.get("plantwatch_operator_renders_pending", 0.0)
        # Not the namespace claim's renewal (every lease/3 s however idle): no plant work.
        writes = sum(v for k, v in m.items() if k.startswith("plantwatch_operator_api_writes_total{") and 'write="lease"' not in k)
        reconciles = sum(v for k, v in m.items() if k.startswith("plantwatch_operator_reconcile_seconds_count"))
        return (writes, reconciles), pending

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def api_refusals(plane: ControlPlane) -> float:
    """The API server's 429 and 5xx answers so far, every client."""
    text = plane._api_get("/metrics") or ""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("apiserver_request_total{") and re.search(r'code="(429|5\d\d)"', line)
    )


def largest_objects(plane: ControlPlane) -> dict:
    """The namespace's largest ConfigMap and Secret as JSON (the 1 MiB object limit is on the stored
    object), and how many ConfigMaps the plant's config takes."""
    found = {}
    for plural in ("configmaps", "secrets"):
        items = (plane._api_get(f"/api/v1/namespaces/{NAMESPACE}/{plural}") or {"items": []})["items"]
        sizes = sorted((len(json.dumps(o)), o["metadata"]["name"]) for o in items)
        found[plural] = {"count": len(items), "largest_bytes": sizes[-1][0] if sizes else 0, "largest": sizes[-1][1] if sizes else None}
    return found


def api_requests(plane: ControlPlane) -> tuple[float, float]:
    """The API server's request count so far: (all, writes), every client."""
    text = plane._api_get("/metrics") or ""
    total = writes = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            value = float(line.rpartition(" ")[2])
            total += value
            verb = re.search(r'verb="([A-Z]+)"', line)
            if verb and verb.group(1) in WRITE_VERBS:
                writes += value
    return total, writes


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def true_now(obj: dict, type_: str) -> bool:
    c = conditions(obj).get(type_, {})
    return c.get("status") == "True" and c.get("observedGeneration") == obj["metadata"].get("generation")


def listed(plane: ControlPlane, plural: str) -> list[dict]:
    group = "apis/plantwatch.io/v1alpha1"
    return (plane._api_get(f"/{group}/namespaces/{NAMESPACE}/{plural}") or {"items": []})["items"]


def all_ready(plane: ControlPlane, nodes: int, rules: int, detectors: int) -> bool:
    wanted = (("sensornodes", "Ready", nodes), ("alertrules", "Accepted", rules), ("detectormodels", "Scoring", detectors))
    return all(sum(true_now(o, t) for o in listed(plane, p)) >= n for p, t, n in wanted)


def wait_settled(op: Operator, since: float, timeout: float) -> float:
    """Seconds from `since` to the last moment the operator's work moved, once it has been still for QUIET_S."""
    last, moved = None, since
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        work, pending = op.activity()
        now = time.monotonic()
        if work != last or pending:
            last, moved = work, now
        elif now - moved >= QUIET_S:
            return moved - since
        time.sleep(0.1)
    raise SystemExit(f"the operator did not settle within {timeout:.0f}s; its log: {op.log}")


def versions(plane: ControlPlane) -> dict[tuple[str, str], str]:
    paths = {
        "sensornodes": "apis/plantwatch.io/v1alpha1",
        "alertrules": "apis/plantwatch.io/v1alpha1",
        "detectormodels": "apis/plantwatch.io/v1alpha1",
        "configmaps": "api/v1",
        "secrets": "api/v1",
        "services": "api/v1",
        "serviceaccounts": "api/v1",
        "deployments": "apis/apps/v1",
        "roles": "apis/rbac.authorization.k8s.io/v1",
        "rolebindings": "apis/rbac.authorization.k8s.io/v1",
        "networkpolicies": "apis/networking.k8s.io/v1",
        "horizontalpodautoscalers": "apis/autoscaling/v2",
    }
    out = {}
    for plural in WATCHED:
        for o in (plane._api_get(f"/{paths[plural]}/namespaces/{NAMESPACE}/{plural}") or {"items": []})["items"]:
            out[(plural, o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
    return out


def event_count(plane: ControlPlane) -> int:
    return len((plane._api_get(f"/api/v1/namespaces/{NAMESPACE}/events") or {"items": []})["items"])


def written(before: dict, after: dict) -> int:
    return sum(1 for k, v in after.items() if before.get(k) != v)


def run(nodes: int, rules: int, detectors: int, timeout: float) -> dict:
    plane = ControlPlane()
    plane.start()
    workdir = Path(tempfile.mkdtemp(prefix="plantwatch-bench-operator-"))
    op = None
    try:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        for f in sorted((ROOT / "crds").glob("*.yaml")):
            plane.kubectl(
                "wait", "--for=condition=Established", f"crd/{yaml.safe_load(f.read_text())['metadata']['name']}", "--timeout=60s"
            )
        plane.kubectl("create", "namespace", NAMESPACE)
        op = Operator(plane.kubeconfig, workdir)
        deadline = time.monotonic() + 120
        while True:  # its metrics served, then a moment for kopf's watches
            if op.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the operator did not start:\n{op.log.read_text()[-4000:]}")
            try:
                op.metrics()
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(3)
        plant_file = workdir / "plant.yaml"
        plant_file.write_text(yaml.safe_dump_all(plant(nodes, rules, detectors)))
        requests0, cpu0, refusals0 = api_requests(plane), op.cpu_seconds(), api_refusals(plane)
        log_start = len(op.log.read_text().splitlines())  # not kopf's retries while the CRDs' storage starts
        writes0 = op.metrics().get("plantwatch_operator_api_writes_total", 0.0)
        started = time.monotonic()
        plane.kubectl("create", "-n", NAMESPACE, "-f", str(plant_file))
        applied = time.monotonic() - started
        ready = None
        while ready is None:
            if all_ready(plane, nodes, rules, detectors):
                ready = time.monotonic() - started
            elif time.monotonic() - started > timeout:
                raise SystemExit(f"not all Ready within {timeout:.0f}s; operator log: {op.log}")
            else:
                time.sleep(0.5)
        settled = wait_settled(op, started, timeout)
        busy = time.monotonic() - started
        requests1, cpu1 = api_requests(plane), op.cpu_seconds()
        writes1, kinds1 = op.metrics().get("plantwatch_operator_api_writes_total", 0.0), op.writes_by_kind()
        rollout_events, objects, refusals = event_count(plane), largest_objects(plane), api_refusals(plane) - refusals0
        m = op.metrics()
        renders, render_s = (
            m.get("plantwatch_operator_reconcile_seconds_count", 0.0),
            m.get("plantwatch_operator_reconcile_seconds_sum", 0.0),
        )
        time.sleep(IDLE_S)
        requests2, cpu2 = api_requests(plane), op.cpu_seconds()
        writes2, kinds2 = op.metrics().get("plantwatch_operator_api_writes_total", 0.0), op.writes_by_kind()

        # one node added
        before, events = versions(plane), event_count(plane)
        added = node(nodes)
        started = time.monotonic()
        plane.kubectl("create", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(added))
        while not true_now(
            plane._api_get(f"/apis/plantwatch.io/v1alpha1/namespaces/{NAMESPACE}/sensornodes/{added['metadata']['name']}"), "Ready"
        ):
            if time.monotonic() - started > timeout:
                raise SystemExit("the added node never became Ready")
            time.sleep(0.05)
        node_ready = time.monotonic() - started
        node_settled = wait_settled(op, started, timeout)
        after = versions(plane)
        node_written, node_events = written(before, after), event_count(plane) - events

        # one rule changed
        before, events = after, event_count(plane)
        started = time.monotonic()
        threshold = {"spec": {"condition": {"threshold": {"warning": "75"}}}}
        plane.kubectl("patch", "alertrule", "rule-000", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(threshold))
        rule_settled = wait_settled(op, started, timeout)
        rule_written, rule_events = written(before, versions(plane)), event_count(plane) - events
        return {
            "nodes": nodes,
            "rules": rules,
            "detectors": detectors,
            "seconds_to_create": round(applied, 2),
            "seconds_to_all_ready": round(ready, 2),
            "seconds_to_settled": round(settled, 2),
            "peak_rss_mb": round(op.peak_rss_mb(), 1),
            "cpu_share_busy": round((cpu1 - cpu0) / busy, 3),
            "cpu_share_idle": round((cpu2 - cpu1) / IDLE_S, 4),
            "api_requests_per_s_busy": round((requests1[0] - requests0[0]) / busy, 1),
            "api_requests_per_s_idle": round((requests2[0] - requests1[0]) / IDLE_S, 1),
            "api_writes_per_s_busy": round((requests1[1] - requests0[1]) / busy, 1),
            "operator_writes_per_s_busy": round((writes1 - writes0) / busy, 1),
            "operator_writes_per_s_idle": round((writes2 - writes1) / IDLE_S, 2),
            "operator_writes_idle_by_kind": {k: v - kinds1.get(k, 0.0) for k, v in kinds2.items() if v != kinds1.get(k, 0.0)},
            "reconciles_to_settled": int(renders),
            "reconcile_seconds_mean": round(render_s / renders, 3) if renders else None,
            "node_added_seconds_to_ready": round(node_ready, 2),
            "node_added_seconds_to_settled": round(node_settled, 2),
            "node_added_objects_written": node_written,
            "node_added_events": node_events,
            "rule_changed_seconds_to_settled": round(rule_settled, 2),
            "rule_changed_objects_written": rule_written,
            "rule_changed_events": rule_events,
            "events_after_rollout": rollout_events,
            "largest_objects": objects,
            "api_refusals_429_5xx": refusals,
            "operator_log_errors": sum(
                1 for line in op.log.read_text().splitlines()[log_start:] if " ERROR " in line or line.startswith("Traceback")
            ),
            "settled_definition": f"operator writes and reconciles still for {QUIET_S:.0f}s with no render pending",
        }
    finally:
        if op is not None:
            op.stop()
        plane.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--detectors", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for Ready and for settling")
    parser.add_argument("--out", type=Path, help="default: bench/results/operator.json at 1,000 nodes, else operator-NODES.json")
    args = parser.parse_args()
    args.out = args.out or ROOT / "bench" / "results" / ("operator.json" if args.nodes == 1000 else f"operator-{args.nodes}.json")
    result = run(args.nodes, args.rules, args.detectors, args.timeout)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
