"""SensorNode data quality on a real control plane: the gateway's InRange, Sequential and ClockInSync beside the
operator's Ready, and the operator's own status writes leave them alone.

The gateway (`serve ingest --report-status`, run here against a local mosquitto) is authenticated only by
its ServiceAccount with the Role the operator renders for it; the operator runs as in test_operator. The
nodes publish as in tests/integration/test_node_quality.py: values out of their declared range, a clock a
minute ahead, a Sparkplug B edge node that loses messages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import paho.mqtt.client as mqtt

from plantwatch.ingest import sparkplug as sp
from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from tests.e2e.test_alert_status import as_gateway
from tests.e2e.test_operator import all_true, conditions, crds, get, operator, wait_for  # noqa: F401 (fixtures)
from tests.integration.test_node_quality import CLOCK, CLOCK_TOPIC, PLANT, PLC, PRESS, PRESS_TOPIC, publish, sparkplug

QUALITY = ("InRange", "Sequential", "ClockInSync")


def gateway_metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not among the gateway's metrics"
    return float(m.group(1))


def test_quality_conditions_appear_on_sensor_nodes_and_survive_the_operators_status_writes(cluster, operator, namespace, tmp_path):  # noqa: F811
    ns = namespace
    plant = tmp_path / "plant.yaml"
    plant.write_text(PLANT)
    cluster.kubectl("apply", "-n", ns, "-f", str(plant))
    for node in (PRESS, CLOCK, PLC):
        wait_for(lambda n=node: all_true(get(cluster, "sensornode", n, "-n", ns), "Ready"), f"the operator's Ready on {node}")
    broker, http_port = start_mosquitto(), free_port()
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "plantwatch.cli", "serve", "ingest", "-f", str(plant), "--broker", broker.url),
            *("--db", str(tmp_path / "g.db"), "--http-port", str(http_port)),
            *("--report-status", "--status-namespace", ns, "--status-writes-per-second", "5"),
        ],
        env={**os.environ, "KUBECONFIG": str(as_gateway(cluster, ns, tmp_path))},
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="nodes")
    try:
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        # the gateway subscribes before anything is sent: its /metrics answers once it is connected and ready
        wait_for(lambda: _ready(http_port), "the gateway ready")
        now = time.time()
        publish(
            client,
            [
                (PRESS_TOPIC, encode("esp32-json", PRESS, now - i / 100, {"temperature_c": 130.0 if i % 7 == 0 else 60.0}))
                for i in range(20)
            ],
        )
        publish(client, [(CLOCK_TOPIC, encode("esp32-json", CLOCK, time.time() + 60.0, {"temperature_c": 40.0})) for _ in range(10)])
        birth = [sparkplug("NBIRTH", 0), sparkplug("DBIRTH", 1, sp.Metric("Press/Temperature", 1, None, sp.DOUBLE, 61.0))]
        data = [sparkplug("DDATA", seq, sp.Metric(None, 1, None, sp.DOUBLE, 61.0 + seq)) for seq in range(2, 10)]
        publish(client, [*birth, *data, sparkplug("DDATA", 14, sp.Metric(None, 1, None, sp.DOUBLE, 70.0))])  # seq 10..13 lost

        def judged(node: str, kind: str, reason: str) -> dict | None:
            obj = get(cluster, "sensornode", node, "-n", ns)
            return obj if conditions(obj).get(kind, {}).get("reason") == reason else None

        press = wait_for(lambda: judged(PRESS, "InRange", "OutOfRange"), "InRange=False on the press", timeout=60)
        c = conditions(press)
        assert c["InRange"]["status"] == "False" and c["InRange"]["message"].startswith(
            "15.0 % of readings out of range in the last 5 min (3 of 20; temperature outside [-40, 125] celsius: 3)"
        )
        assert (c["Sequential"]["reason"], c["ClockInSync"]["reason"], c["Online"]["status"]) == ("NoSequenceNumbers", "InSync", "True")
        q = press["status"]["quality"]
        assert (q["readings"], q["outOfRange"], q["outOfRangePercent"]) == (20, 3, "15.0")
        clock = wait_for(lambda: judged(CLOCK, "ClockInSync", "ClockSkew"), "ClockInSync=False on the dryer", timeout=60)
        assert conditions(clock)["ClockInSync"]["status"] == "False"
        assert conditions(clock)["ClockInSync"]["message"].startswith("median skew +")
        assert 55.0 <= float(clock["status"]["quality"]["clockSkewMedianSeconds"]) <= 60.0
        plc = wait_for(lambda: judged(PLC, "Sequential", "SequenceGaps"), "Sequential=False on the Sparkplug node", timeout=60)
        assert conditions(plc)["Sequential"]["message"].startswith(
            "10.0 % of Sparkplug messages out of sequence in the last 5 min (1 of 10"
        )
        assert (plc["status"]["quality"]["sequenceBreaks"], plc["status"]["quality"]["sequencedMessages"]) == (1, 10)
        assert gateway_metric(http_port, "plantwatch_node_status_writes_total") >= 3
        printed = cluster.kubectl("describe", "sensornode", PRESS, "-n", ns).stdout
        assert "OutOfRange" in printed and "15.0 % of readings out of range" in printed  # what a user sees
    finally:
        client.loop_stop()
        gateway.terminate()
        gateway.wait(20)
        broker.stop()

    # The gateway is gone, so nothing rewrites its conditions: the operator, writing Ready for each node's new
    # generation, must leave them (and status.quality) exactly as they were.
    before = {n: get(cluster, "sensornode", n, "-n", ns)["status"] for n in (PRESS, CLOCK, PLC)}
    for n in before:
        cluster.kubectl("patch", "sensornode", n, "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"equipment": f"{n}-rebuilt"}}))
    for n, status in before.items():
        after = wait_for(
            lambda n=n: (o := get(cluster, "sensornode", n, "-n", ns)) and o["metadata"]["generation"] == 2 and all_true(o, "Ready") and o,
            f"the operator's Ready for {n}'s generation 2",
        )
        assert {t: conditions(after)[t] for t in QUALITY} == {t: conditions({"status": status})[t] for t in QUALITY}
        assert after["status"]["quality"] == status["quality"]


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False
