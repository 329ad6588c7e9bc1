"""Scale-out benchmark: sharded gateway replicas against one unsharded gateway, in one run.

    python bench/scale_out.py [--messages 40000] [--nodes 24] [--out bench/results/scale_out.json]

A backlog of N ESP32 messages (four readings each) from many nodes is queued by a real
mosquitto for the gateways' persistent sessions while they are away; then the gateways
(`plantwatch serve ingest` processes, all on one SQLite file) start and the clock runs
until every reading is stored. Baseline: one unsharded gateway. Contenders: 1, 2 and 3
replicas of `--shards 16`. `ratio_vs_unsharded` = contender's median rate / the
baseline's, over rounds that interleave the contenders.
The clock starts when the first reading is stored (process start-up is left out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from plantwatch.ingest.formats import encode  # noqa: E402
from plantwatch.mqtt.broker import free_port, start_mosquitto  # noqa: E402
from plantwatch.mqtt.publisher import Publisher  # noqa: E402

SHARDS = 16
#: name → replicas (None: the unsharded gateway, the baseline)
CONTENDERS = {"unsharded": None, "replicas_1": 1, "replicas_2": 2, "replicas_3": 3}


def plant(nodes: int) -> str:
    docs = [
        f"""apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {{name: press-{i:03d}, labels: {{plantwatch.io/line: line-1}}}}
spec:
  hardware: esp32
  payload: {{format: esp32-json, topic: sensors/line-1/press-{i:03d}/data}}
  sensors:
  - {{name: temperature, type: temperature, unit: celsius, field: temperature_c, range: {{min: "-40", max: "125"}}}}
  - {{name: vibration, type: vibration, unit: g, field: vibration_g, range: {{min: "0", max: "16"}}}}
  - {{name: current, type: current, unit: ampere, field: current_a, range: {{min: "0", max: "50"}}}}
  - {{name: battery, type: voltage, unit: volt, field: battery_voltage, range: {{min: "0", max: "5"}}}}
"""
        for i in range(nodes)
    ]
    docs.append("""apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata: {name: overtemperature}
spec:
  selector: {sensorType: temperature}
  condition:
    type: Threshold
    threshold: {direction: Above, warning: "70", critical: "80", hysteresis: "2"}
  for: 2s
  receivers: [console]
""")
    return "---\n".join(docs)


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except (urllib.error.URLError, OSError):
        return False


def gateways(plant_dir: Path, url: str, db: Path, client_id: str, replicas: int | None) -> list[tuple[subprocess.Popen, int]]:
    """Start the gateway processes: (process, HTTP port) each."""
    started = []
    for i in range(replicas or 1):
        scale = ["--shards", str(SHARDS), "--replicas", str(replicas), "--replica-index", str(i)] if replicas else []
        port = free_port()
        started.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "plantwatch.cli",
                        "serve",
                        "ingest",
                        "-f",
                        str(plant_dir),
                        "--broker",
                        url,
                        "--db",
                        str(db),
                        "--client-id",
                        client_id,
                        "--http-port",
                        str(port),
                        *scale,
                    ],
                    stdout=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(ROOT / "services")},
                ),
                port,
            )
        )
    return started


def stop(started: list[tuple[subprocess.Popen, int]]) -> None:
    for p, _ in started:
        p.terminate()
    for p, _ in started:
        p.wait(60)


def stored(db: Path) -> int:
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM readings").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def drain(plant_dir: Path, url: str, work: Path, name: str, replicas: int | None, messages: int, nodes: int) -> float:
    """Messages per second from the first reading stored to the last."""
    db = work / f"{name}.db"
    client_id = f"bench-{name}"
    started = gateways(plant_dir, url, db, client_id, replicas)  # registers the sessions ...
    deadline = time.time() + 60
    while not all(ready(port) for _, port in started):
        if time.time() > deadline:
            raise TimeoutError(f"{name}: the gateways did not become ready")
        time.sleep(0.1)
    stop(started)  # ... which the broker keeps while the gateways are away
    pub = Publisher(url, client_id=f"bench-pub-{name}")
    pub.start()
    t0 = float(int(time.time()) - 3000)
    for n in range(messages):
        node = n % nodes
        pub.publish(
            f"sensors/line-1/press-{node:03d}/data",
            encode(
                "esp32-json",
                f"press-{node:03d}",
                t0 + (n // nodes) * 0.01,
                {"temperature_c": 60.0 + (n % 30), "vibration_g": 1.0, "current_a": 10.0, "battery_voltage": 3.7},
            ),
        )
    pub.stop()
    want = messages * 4
    started = gateways(plant_dir, url, db, client_id, replicas)
    while stored(db) == 0:  # the clock starts with the first batch: process start-up is not the gateway's rate
        time.sleep(0.005)
    start = time.perf_counter()
    while stored(db) < want:
        if time.perf_counter() - start > 600:
            raise TimeoutError(f"{name}: {stored(db)} of {want} readings after 600 s")
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    stop(started)
    return messages / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--nodes", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3, help="each contender's rate is the median of this many drains")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale_out.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="plantwatch-bench-scale-") as tmp:
        work = Path(tmp)
        plant_dir = work / "plant"
        plant_dir.mkdir()
        (plant_dir / "plant.yaml").write_text(plant(args.nodes))
        broker = start_mosquitto(workdir=work)
        rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        try:
            # Rounds interleave the contenders, so a burst of load from elsewhere on the
            # machine lands on all of them rather than on one.
            for r in range(args.rounds):
                for name, replicas in CONTENDERS.items():
                    rates[name].append(drain(plant_dir, broker.url, work, f"{name}-{r}", replicas, args.messages, args.nodes))
        finally:
            broker.stop()
    base = statistics.median(rates["unsharded"])
    results: dict[str, object] = {"unsharded_msgs_per_s": round(base)}
    for name in list(CONTENDERS)[1:]:
        rate = statistics.median(rates[name])
        results[name] = {"msgs_per_s": round(rate), "ratio_vs_unsharded": round(rate / base, 2)}
    report = {
        "benchmark": "scale_out",
        "messages": args.messages,
        "nodes": args.nodes,
        "shards": SHARDS,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
