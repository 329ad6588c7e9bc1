"""The README's delivery promises, on Kubernetes: every reading stored exactly once, nothing lost, each alert
announced once firing and once resolved, while the cluster does to the gateway's pods what clusters do.

The README promises (its "Delivery is at-least-once end to end and stored exactly once" paragraph and the
alerting and scale-out ones after it):
- stored exactly once: a gateway killed mid-stream gets the rest again from the broker, and nothing is stored
  twice; an exact re-delivery is a silent no-op, a reading with its key and another value is dead-lettered
  `conflict` with the first value kept;
- nothing lost: a reading, an alert or a notification survives a rollout, a lost pod, a rescale;
- bad input is dead-lettered, with its reason, and stops nothing;
- each receiver is told once of each firing and once of each resolve, across crashes and rescaling;
- what the API server shows of the alerts (AlertRule `firingCount`, an Event on the SensorNode per firing and per
  resolve) is what was committed.

What runs where (kwok runs no container):
- on the control plane: the plant (SensorNodes, an AlertRule, a Webhook AlertReceiver and its Secret, the
  database password Secret as the chart makes it), the operator (a host process with the chart's store settings:
  PLANTWATCH_GATEWAY_DB_URL and _DB_PASSWORD_SECRET) rendering the gateway Deployment with its RollingUpdate,
  the Deployment and ReplicaSet controllers creating and deleting the pods, kwok running them on fake nodes,
  and the status and Events the gateways write with their ServiceAccount's token;
- on the host (tests/e2e/host_pods.py): each Running pod's own container, exactly its args and env as the API
  server holds them, with its mounted ConfigMaps and Secrets written out from the API server, the in-cluster
  names of the broker and the database pointing at a loopback mosquitto and PostgreSQL; a pod gone from the
  API server has its process stopped (SIGTERM), after the new pods' processes answer /readyz.

During a paced, numbered QoS 1 stream with alert episodes: a plant change rolls the Deployment (new template
hash: a new pod's process, then the old one stopped), a pod is deleted with its process SIGKILLed (the node
lost), and the Deployment is scaled 1 → 2 → 1 (as its HPA does; the HPA's own decisions on the real metrics
path are tests/e2e/test_gateway_hpa.py's).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import yaml

from plantwatch.contracts.times import parse_timestamp
from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.secrets import MOUNT_DIR
from plantwatch_operator.broker import GATEWAY_PASSWORD_KEY, GATEWAY_SECRET, GATEWAY_USERNAME
from plantwatch_operator.render import GATEWAY, PLANT_CONFIGMAP, PLANT_DIR
from tests.e2e.conftest import wait_for
from tests.e2e.host_pods import HostPods
from tests.e2e.test_operator import crds  # noqa: F401 (fixture)
from tests.integration import test_scale_out as scale_out
from tests.integration.test_notify_exactly_once import HMAC_KEY, Recorder
from tests.support.postgres import PASSWORD, Postgres

NODES = ["press-01", "press-02", "press-03"]
#: Steps of a node's cycle: 34 below the rule's level, 6 above it (one alert episode); the nodes a third apart.
CYCLE, HIGH_FROM, PHASE = 40, 34, 13
#: Seconds of reading time per step, and real seconds between steps (each step: one reading of every node).
STEP_S, PACE_S = 0.5, 0.25
IN_CLUSTER_BROKER = "mqtt://plantwatch-broker:1883"
DB_SECRET = "line1-postgres"


def temperature(step: int, i: int) -> float:
    k = (step + PHASE * i) % CYCLE
    return 85.0 + k % 6 if k >= HIGH_FROM else 60.0 + k % 7


def plant() -> list[dict]:
    nodes = [
        {
            "apiVersion": "plantwatch.io/v1alpha1",
            "kind": "SensorNode",
            "metadata": {"name": name, "labels": {"plantwatch.io/line": "line-1"}},
            "spec": {
                "hardware": "esp32",
                "equipment": f"press-{i}",
                "payload": {"format": "esp32-json", "topic": f"sensors/line-1/{name}/data"},
                "sensors": [{"name": "temperature", "type": "temperature", "unit": "celsius", "field": "temperature_c",
                             "range": {"min": -40, "max": 125}}],
            },
        }
        for i, name in enumerate(NODES)
    ]  # fmt: skip
    rule = {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": "overtemperature"},
        "spec": {
            "selector": {"sensorType": "temperature"},
            "condition": {"type": "Threshold", "threshold": {"direction": "Above", "critical": 80, "hysteresis": 2}},
            "repeatInterval": "1h",
            "receivers": ["ops-webhook"],
        },
    }
    receiver = {
        "apiVersion": "plantwatch.io/v1alpha1",
        "kind": "AlertReceiver",
        "metadata": {"name": "ops-webhook"},
        "spec": {
            "type": "Webhook",
            "webhook": {"urlSecretRef": {"name": "ops-hooks", "key": "url"}, "hmacSecretRef": {"name": "ops-hooks", "key": "hmac"}},
            "grouping": {"by": ["rule"], "wait": "0s", "interval": "1s"},
        },
    }
    return [*nodes, rule, receiver]


class Stream:
    """Every node's step j before anyone's j+1, one step per PACE_S; `finish` ends it on a step where the first node
    is above the level, so that an alert is still firing at the end. `sent`: the readings as published, numbered by
    step; `intended`: the dead letters it sent on purpose (topic, reason)."""

    def __init__(self, broker_url: str, t0: float):
        self.t0, self.sent, self.intended = t0, [], set()
        self._pub = Publisher(broker_url, client_id=f"line-1-{uuid.uuid4().hex[:6]}")
        self._finish, self.done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._pub.start()
        self._thread.start()
        return self

    def finish(self) -> None:
        self._finish.set()
        self.done.wait(60)
        self._pub.stop()

    def _send(self, node: str, ts: float, value: float) -> bytes:
        payload = encode("esp32-json", node, ts, {"temperature_c": value})
        self._pub.publish(f"sensors/line-1/{node}/data", payload)
        return payload

    def _run(self) -> None:
        step = 0
        while not (self._finish.is_set() and step % CYCLE == HIGH_FROM + 2):
            for i, node in enumerate(NODES):
                ts, value = self.t0 + step * STEP_S, temperature(step, i)
                self._send(node, ts, value)
                self.sent.append((node, ts, value))
            if step == 12:
                self._misbehave()
            step += 1
            time.sleep(PACE_S)
        self.done.set()

    def _misbehave(self) -> None:
        """An exact re-delivery (a no-op), a conflict, a reading out of its range and a malformed message."""
        for node, ts, value in self.sent[:15]:
            self._send(node, ts, value)
        node, ts, value = self.sent[4]
        self._send(node, ts, value + 0.5)
        self.intended.add((f"sensors/line-1/{node}/data", "conflict"))
        self._send(NODES[2], self.t0 + 0.25, 500.0)
        self.intended.add((f"sensors/line-1/{NODES[2]}/data", "out_of_range"))
        self._pub.publish(f"sensors/line-1/{NODES[2]}/data", b"{not json")
        self.intended.add((f"sensors/line-1/{NODES[2]}/data", "malformed"))


def start_operator(cluster, namespace: str, db_url: str, log: Path) -> subprocess.Popen:
    """`plantwatch operator` for the namespace, with the store settings the chart gives it."""
    env = {
        **os.environ,
        "KUBECONFIG": cluster.kubeconfig,
        "PLANTWATCH_BROKER_URL": IN_CLUSTER_BROKER,
        "PLANTWATCH_GATEWAY_DB_URL": db_url,
        "PLANTWATCH_GATEWAY_DB_PASSWORD_SECRET": f"{DB_SECRET}/password",
        "PLANTWATCH_RECEIVER_CHECK_INTERVAL": "2",
    }
    with open(log, "wb") as out:
        command = [sys.executable, "-m", "plantwatch.cli", "operator", "-n", namespace, "--metrics-port", str(free_port())]
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def secret_value(cluster, namespace: str, name: str, key: str) -> str:
    got = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return base64.b64decode(got["data"][key]).decode()


def rows(port: int, sql: str) -> list[tuple]:
    with psycopg.connect(f"postgresql://plantwatch@127.0.0.1:{port}/plantwatch", password=PASSWORD) as db:
        return db.execute(sql).fetchall()


def settle(check, timeout: float) -> None:
    """Poll until `check()` holds or `timeout` passes; the assertions after it say what did not hold."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.5)


def test_the_readme_delivery_promises_hold_through_a_rollout_a_lost_pod_and_a_rescale(cluster, crds, namespace, tmp_path):  # noqa: F811
    pg, recorder = Postgres(), Recorder()
    pg.start()
    db_url = f"postgresql://plantwatch@{DB_SECRET}.{namespace}.svc:5432/plantwatch"
    cluster.kubectl("create", "secret", "generic", DB_SECRET, "-n", namespace, f"--from-literal=password={PASSWORD}")
    cluster.kubectl("create", "secret", "generic", "ops-hooks", "-n", namespace, f"--from-literal=url={recorder.url}",
                    f"--from-literal=hmac={HMAC_KEY.decode()}")  # fmt: skip
    docs = plant()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    operator = start_operator(cluster, namespace, db_url, tmp_path / "operator.log")
    broker = pods = stream = None
    try:

        def rendered() -> dict | None:
            """The gateway Deployment, once its plant holds the rule and the receiver and its rollout is complete."""
            got = cluster.kubectl("get", "deployment", GATEWAY, "-n", namespace, "-o", "json", check=False)
            config = cluster.kubectl(
                "get", "configmap", PLANT_CONFIGMAP, "-n", namespace, "-o", "jsonpath={.data.plant\\.yaml}", check=False
            )
            if got.returncode or "AlertReceiver" not in config.stdout or "AlertRule" not in config.stdout:
                return None
            d = json.loads(got.stdout)
            s = d.get("status", {})
            complete = (
                s.get("observedGeneration") == d["metadata"]["generation"] and s.get("updatedReplicas") == s.get("readyReplicas") == 1
            )
            return d if complete and not s.get("unavailableReplicas") else None

        try:
            deployment = wait_for(rendered, "the operator's gateway Deployment with the rule and the receiver", timeout=90)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n--- operator log (tail) ---\n{(tmp_path / 'operator.log').read_text()[-3000:]}", pytrace=False)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][container["args"].index("--db") + 1] == db_url and "--report-status" in container["args"]
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        gateway_password = secret_value(cluster, namespace, GATEWAY_SECRET, GATEWAY_PASSWORD_KEY)
        broker = start_mosquitto(users={GATEWAY_USERNAME: gateway_password, "sensor": "sensor-password"})
        hosts = {IN_CLUSTER_BROKER: broker.url, f"{DB_SECRET}.{namespace}.svc:5432": f"127.0.0.1:{pg.port}"}
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        pods = HostPods(cluster, namespace, selector, tmp_path / "pods", hosts, implicit_args=["--secrets-dir", MOUNT_DIR]).start()
        [first] = wait_for(lambda: list(pods.snapshot().items()), "the gateway pod's process on the host", timeout=60)
        stream = Stream(broker.url.replace("mqtt://", "mqtt://sensor:sensor-password@"), float(int(time.time()) - 400)).start()
        wait_for(lambda: len(stream.sent) > 30 * len(NODES), "the stream under way", timeout=30)

        # A plant change rolls the gateway: a new pod (new template hash) takes over, then the old one is stopped.
        cluster.kubectl(
            "patch", "sensornode", NODES[0], "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"equipment": "press-0b"}})
        )
        [rolled] = wait_for(
            lambda: [(n, h) for n, h in pods.snapshot().items() if h != first[1]] if len(pods.snapshot()) == 1 else None,
            "the rolling update: one pod of the new template, the old one's process stopped", timeout=90,
        )  # fmt: skip
        assert [p.returncode for p in pods.stopped] == [0], "the old pod's process did not stop cleanly on SIGTERM"
        mounted = tmp_path / "pods" / rolled[0] / PLANT_DIR.lstrip("/")
        assert "press-0b" in "".join(f.read_text() for f in mounted.glob("*.yaml")), "the new pod does not hold the changed plant"

        # The pod lost with its node: its process SIGKILLed, the pod deleted; the ReplicaSet's replacement takes over.
        pods.kill(rolled[0])
        cluster.kubectl("delete", "pod", rolled[0], "-n", namespace, "--wait=false")
        wait_for(lambda: [n for n in pods.snapshot() if n != rolled[0]], "the replacement pod's process", timeout=60)

        # Scaled 1 → 2 → 1 as the HPA scales it: the shards divided between two, then handed back to one.
        cluster.kubectl("scale", "deployment", GATEWAY, "-n", namespace, "--replicas=2")
        wait_for(lambda: len(pods.snapshot()) == 2, "two gateway processes", timeout=60)
        owners = "SELECT count(DISTINCT owner) FROM shard_checkpoints"
        wait_for(lambda: rows(pg.port, owners)[0][0] >= 2, "the shards divided between the two gateways", timeout=60)
        cluster.kubectl("scale", "deployment", GATEWAY, "-n", namespace, "--replicas=1")
        wait_for(lambda: len(pods.snapshot()) == 1 and len(pods.stopped) == 3, "one gateway process again", timeout=60)
        stream.finish()
        assert stream.done.is_set(), "the stream did not finish"
        sent = sorted(stream.sent)

        # What each promise is checked against: the pure rule engine on the stream as published.
        plant_dir = tmp_path / "plant"
        plant_dir.mkdir()
        engine_docs = [{**d, "spec": {**d["spec"], "receivers": ["console"]}} if d["kind"] == "AlertRule" else d for d in docs[:-1]]
        (plant_dir / "plant.yaml").write_text(yaml.safe_dump_all(engine_docs))  # receivers are not the rule engine's
        want_events = scale_out.expected_alerts(plant_dir, stream.sent)
        episodes = Counter((fp, state) for fp, state, *_ in want_events)
        last = {fp: state for fp, state, *_ in sorted(want_events, key=lambda e: e[4])}
        firing_now = sum(state == "firing" for state in last.values())
        per_node = Counter((fp.split("/")[1], state) for fp, state, *_ in want_events)
        assert firing_now and episodes and all(episodes[(fp, "resolved")] for fp, _ in episodes), "the stream has no full alert episode"

        told: Counter = Counter()  # each episode (alert, its start) once firing and, once over, once resolved
        starts: dict[str, float] = {}
        for fp, state, _, _, ts in sorted(want_events, key=lambda e: e[4]):
            starts[fp] = ts if state == "firing" else starts[fp]
            told[(fp, starts[fp], state)] = 1

        def announced() -> Counter:
            """(alert, episode start, firing|resolved) → how many messages told of it, a resend with its Idempotency-Key
            counted once (a message may carry one episode's resolve and the next one's firing)."""
            keys = {
                (h["Idempotency-Key"], a["fingerprint"], parse_timestamp(a["startsAt"]), a["status"])
                for h, body in list(recorder.requests)
                if body["kind"] in ("firing", "resolved")
                for a in body["alerts"]
            }
            return Counter((fp, start, status) for _, fp, start, status in keys)

        def rule_status() -> dict:
            got = cluster.kubectl("get", "alertrule", "overtemperature", "-n", namespace, "-o", "json").stdout
            return json.loads(got).get("status", {})

        def node_events() -> Counter:
            got = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
            state = {"AlertFiring": "firing", "AlertResolved": "resolved"}
            return Counter((e["involvedObject"]["name"], state[e["reason"]]) for e in got if e["reason"] in state)

        settle(
            lambda: (
                rows(pg.port, "SELECT count(*) FROM readings")[0][0] >= len(sent)
                and announced() == told
                and rule_status().get("firingCount") == firing_now
                and node_events() == per_node
            ),
            timeout=90,
        )
        readings = rows(pg.port, "SELECT node, sensor, ts, value FROM readings ORDER BY node, sensor, ts")
        alert_events = rows(
            pg.port, "SELECT fingerprint, state, severity, value, ts FROM alert_events ORDER BY fingerprint, state, severity, value, ts"
        )
        dead = set(rows(pg.port, "SELECT DISTINCT topic, reason FROM dead_letters"))
        got_announced, got_status, got_events = announced(), rule_status(), node_events()
    finally:
        for part in (stream.finish if stream else None, pods.close if pods else None, broker.stop if broker else None):
            if part:
                part()
        operator.terminate()
        operator.wait(15)
        recorder.stop()
        pg.close()
    assert pods.error is None, f"running the pods on the host failed: {pods.error}"
    assert [p.returncode for p in pods.stopped].count(-9) == 1, f"exactly one pod killed: {[(p.name, p.returncode) for p in pods.stopped]}"
    assert len(readings) == len(sent), f"stored exactly once: {len(sent)} readings published, {len(readings)} stored"
    assert readings == [(node, "temperature", ts, value) for node, ts, value in sent], (
        "stored exactly once: the stored readings are not the published ones"
    )
    assert alert_events == want_events, (
        "nothing lost: the alert events differ from what the rule engine computes from the stream (lost or doubled)"
    )
    assert dead == stream.intended, f"bad input dead-lettered, nothing else: intended {sorted(stream.intended)}, got {sorted(dead)}"
    missing, doubled = sorted(told - got_announced), sorted(k for k, n in got_announced.items() if k not in told or n > 1)
    assert not missing and not doubled, (
        f"told once of each firing and once of each resolve: (alert, start, state) never told {missing}, told twice or unasked {doubled}"
    )
    assert got_status.get("firingCount") == firing_now, (
        f"the AlertRule's firingCount is what was committed: {firing_now} firing, status says {got_status}"
    )
    assert got_events == per_node, f"an Event on the SensorNode per firing and per resolve: wanted {dict(per_node)}, got {dict(got_events)}"
