"""Node status benchmark: 1,000 SensorNodes whose data quality flips at once, written by the gateway's status writer.

    python bench/node_status.py [--nodes 1000] [--rate 20] [--out bench/results/node_status.json]

Starts the control plane the e2e suite uses (tests/e2e/cluster.py), creates N SensorNodes and runs the
gateway's node status writer (ingest/node_status.py) in this process on a real pipeline over those nodes;
readings go through the pipeline's own validation (no MQTT: the broker is not what is measured). Each run:
every node reports readings within range (the first status of 1,000 nodes), then every node's readings
fall out of range (1,000 InRange flips). Recorded, per run, from the API server's own request counter
(apiserver_request_total for sensornodes/status, so every write counts whoever sent it):

- seconds until the API server shows every node's first status, and every flip;
- status writes per second over each phase, and the most in any one second (the burst the API server sees).

Two runs in the same process and control plane, each on a namespace of its own: the writer bounded at
--rate (the gateway's --status-writes-per-second), and the baseline, unbounded (one writer thread as fast
as the API server answers it). The ratio is what the bound spares the API server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services"), str(ROOT / "operator")]

from plantwatch.ingest.formats import encode  # noqa: E402
from plantwatch.ingest.node_status import NodeStatusReporter  # noqa: E402
from plantwatch.ingest.pipeline import Pipeline  # noqa: E402
from plantwatch.plant.load import plant_from_documents  # noqa: E402
from plantwatch.store.sqlite import SqliteStore  # noqa: E402
from tests.e2e import synthetic_plant  # noqa: E402
from tests.e2e.cluster import ControlPlane  # noqa: E402

#: The writer's round, as in the gateway (NodeStatusReporter's default).
INTERVAL_S = 5.0
#: "Unbounded": far above what one writer thread gets through.
UNBOUNDED = 100_000.0


def node(i: int) -> dict:
    """The operator benchmark's node i (tests/e2e/synthetic_plant.py) with its temperature sensor only: what this bench feeds."""
    doc = synthetic_plant.node(i)
    doc["spec"]["sensors"] = [s for s in doc["spec"]["sensors"] if s["name"] == "temperature"]
    return doc


def status_writes(plane: ControlPlane) -> float:
    """Writes to sensornodes/status the API server has answered so far (every verb but reads)."""
    text = plane._api_get("/metrics") or ""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="sensornodes"' in line and 'subresource="status"' in line:
            if not re.search(r'verb="(GET|LIST|WATCH)"', line):
                total += float(line.rpartition(" ")[2])
    return total


def reported(plane: ControlPlane, namespace: str, status: str) -> int:
    """Nodes whose InRange condition reads `status` on the API server."""
    listed = plane._api_get(f"/apis/plantwatch.io/v1alpha1/namespaces/{namespace}/sensornodes") or {"items": []}
    return sum(
        1
        for o in listed["items"]
        if any(c["type"] == "InRange" and c["status"] == status for c in (o.get("status") or {}).get("conditions", []))
    )


def phase(plane: ControlPlane, namespace: str, nodes: int, status: str, timeout: float) -> dict:
    """Until every node shows InRange=`status`: seconds, writes per second on average and in the busiest second."""
    started, writes0 = time.monotonic(), status_writes(plane)
    samples = [(started, writes0)]
    while reported(plane, namespace, status) < nodes:
        if time.monotonic() - started > timeout:
            raise SystemExit(
                f"{namespace}: not every node InRange={status} within {timeout:.0f}s ({reported(plane, namespace, status)} of {nodes})"
            )
        time.sleep(1.0)
        samples.append((time.monotonic(), status_writes(plane)))
    seconds = time.monotonic() - started
    writes = status_writes(plane) - writes0
    peak = max(((w1 - w0) / (t1 - t0) for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False)), default=0.0)
    return {
        "seconds": round(seconds, 2),
        "writes": int(writes),
        "writes_per_s": round(writes / seconds, 1),
        "writes_per_s_peak": round(peak, 1),
    }


def run_once(plane: ControlPlane, workdir: Path, namespace: str, nodes: int, rate: float, timeout: float) -> dict:
    docs = [node(i) for i in range(nodes)]
    plane.kubectl("create", "namespace", namespace)
    (workdir / f"{namespace}.yaml").write_text(yaml.safe_dump_all(docs))
    plane.kubectl("create", "-n", namespace, "-f", str(workdir / f"{namespace}.yaml"))
    pipeline = Pipeline(plant_from_documents([("bench", d) for d in docs]), SqliteStore(workdir / f"{namespace}.db"))

    def feed(temperature: float) -> None:
        """One message from every node, as the gateway's batch: the writer reads the figures from its own thread."""
        now = time.time()
        batch = [
            (d["spec"]["payload"]["topic"], encode("esp32-json", d["metadata"]["name"], now, {"temperature_c": temperature})) for d in docs
        ]
        pipeline.process(batch, now)

    writer = NodeStatusReporter(pipeline, namespace, interval_s=INTERVAL_S, writes_per_s=rate)
    feed(60.0)
    writer.start()
    try:
        first = phase(plane, namespace, nodes, "True", timeout)
        feed(900.0)  # out of range: 1 of 2 values in the window, every node's InRange flips
        flips = phase(plane, namespace, nodes, "False", timeout)
    finally:
        writer.stop()
        pipeline.store.close()
    return {"first_status": first, "flips": flips}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="the writer's bound, as the gateway's --status-writes-per-second")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each phase")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "node_status.json")
    args = parser.parse_args()
    logging.getLogger("plantwatch.ingest.pipeline").setLevel(logging.ERROR)  # each flip is a rejected value, logged
    plane = ControlPlane()
    plane.start()
    os.environ["KUBECONFIG"] = plane.kubeconfig  # the writer's client reads it on its first write
    workdir = Path(tempfile.mkdtemp(prefix="plantwatch-bench-node-status-"))
    try:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd/sensornodes.plantwatch.io", "--timeout=60s")
        bounded = run_once(plane, workdir, "bench-bounded", args.nodes, args.rate, args.timeout)
        unbounded = run_once(plane, workdir, "bench-unbounded", args.nodes, UNBOUNDED, args.timeout)
    finally:
        plane.stop()
    result = {
        "nodes": args.nodes,
        "status_writes_per_second": args.rate,
        "writer_round_seconds": INTERVAL_S,
        "bounded": bounded,
        "unbounded": unbounded,
        "flip_writes_per_s_vs_unbounded": round(bounded["flips"]["writes_per_s"] / unbounded["flips"]["writes_per_s"], 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
