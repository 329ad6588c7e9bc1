"""The gateway's HorizontalPodAutoscaler follows the message rate, and the gateways follow it without losing an alert.

What runs where (kwok runs no containers, so the pods the HPA asks for are fake; the metrics path is
tests/e2e/metrics_path.py, shared with test_inference_hpa):
- on the control plane: the gateway Deployment and HPA exactly as the operator renders them on the shared
  store (render_ingestion, autoscale.gateway_hpa with a short scale-down), kube-controller-manager's HPA
  controller deciding the replicas, and the aggregation layer serving external.metrics.k8s.io from a
  selector-less Service whose endpoint is prometheus-adapter;
- on the host: mosquitto, PostgreSQL, real `plantwatch serve ingest --shards 16` gateways (membership through
  the store), a real Prometheus (Debian's) scraping them with `namespace` set by relabelling, and the real
  prometheus-adapter (built from the Go module proxy) with the chart's rules, serving TLS on a veth address
  (an EndpointSlice takes no loopback address) under a certificate of a CA given as the APIService's caBundle.

A paced stream goes above the HPA's target: desiredReplicas and the Deployment's replicas rise, and the host
gateways are started to match; the rate drops: they fall, and gateways are stopped (SIGTERM) to match. Every
reading is stored once and the alert events equal what the pure rule engine computes from the stream.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import yaml

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.store import postgres
from plantwatch_operator.autoscale import GATEWAY_METRIC, GatewayAutoscaling
from plantwatch_operator.config import Config
from plantwatch_operator.render import GATEWAY, plant_manifest, render_ingestion
from tests.e2e.conftest import wait_for
from tests.e2e.metrics_path import EXTERNAL, publish_targets, quantity, require_binaries, serving_adapter, start_prometheus
from tests.integration import test_scale_out as scale_out
from tests.integration.test_postgres_gateways import Where, pg_rows
from tests.support.postgres import Postgres

#: Messages a second each replica is kept under; the stream runs at HIGH (desired: 3, the maximum), then LOW (1).
TARGET, HIGH, LOW, MAX_REPLICAS = 40, 200.0, 15.0, 3


class Stream:
    """The scale-out test's plant stream (12 nodes, every node's step j before anyone's j+1), paced at `rate`."""

    def __init__(self, broker_url: str, t0: float):
        self.rate, self.sent = HIGH, []
        self._pub = Publisher(broker_url, client_id=f"line-1-{uuid.uuid4().hex[:6]}")
        self._t0, self._stop = t0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._pub.start()
        self._thread.start()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(30)
            self._pub.stop()

    def _run(self) -> None:
        pattern, n = scale_out.PATTERN, 0
        while not self._stop.is_set():
            chunk = max(1, int(self.rate / 10))
            for _ in range(chunk):
                step, i = divmod(n, len(scale_out.NODES))
                node, ts, value = scale_out.NODES[i], self._t0 + step * 0.5, float(pattern[(step + 5 * i) % len(pattern)])
                self._pub.publish(f"sensors/line-1/{node}/data", encode("esp32-json", node, ts, {"temperature_c": value}))
                self.sent.append((node, ts, value))
                n += 1
            self._stop.wait(0.1)


class Follower:
    """Runs as many host gateways as the Deployment asks for, and tells Prometheus where they are (file_sd)."""

    def __init__(self, cluster, namespace: str, plant_dir: Path, broker_url: str, db: Where, targets: Path):
        self.cluster, self.namespace, self.plant_dir, self.broker_url, self.db, self.targets = (
            cluster, namespace, plant_dir, broker_url, db, targets,
        )  # fmt: skip
        self.running: list[scale_out.Gateway] = []
        self.stopped: list[scale_out.Gateway] = []
        #: (Deployment replicas, HPA desiredReplicas) each time either changed
        self.seen: list[tuple[int, int | None]] = []
        #: For each of `seen`, the monotonic times of the first and the last look that saw it: a busy machine
        #: can delay a look past a whole scale-down period, and then two steps show as one.
        self.spans: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self._publish_targets()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            while not self._stop.wait(1.0):
                want, desired = self._replicas()
                now = time.monotonic()
                if not self.seen or self.seen[-1] != (want, desired):
                    self.seen.append((want, desired))
                    self.spans.append([now, now])
                self.spans[-1][1] = now
                while len(self.running) < want:
                    g = scale_out.Gateway(self.plant_dir, self.broker_url, self.db, "pw", "--shards", str(scale_out.SHARDS),
                                          "--shard-lease-seconds", "2").wait_ready()  # fmt: skip
                    self.running.append(g)
                    self._publish_targets()
                while len(self.running) > want:
                    g = self.running.pop()
                    self._publish_targets()
                    assert g.stop() == 0, f"a gateway stopped with {g.proc.returncode}"
                    self.stopped.append(g)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _replicas(self) -> tuple[int, int | None]:
        got = self.cluster.kubectl(
            "get", "deployment", GATEWAY, "-n", self.namespace, "-o", "jsonpath={.spec.replicas}"
        ).stdout  # fmt: skip
        hpa = self.cluster.kubectl(
            "get", "hpa", GATEWAY, "-n", self.namespace, "-o", "jsonpath={.status.desiredReplicas}", check=False
        ).stdout  # fmt: skip
        return int(got or 1), int(hpa) if hpa else None

    def _publish_targets(self) -> None:
        publish_targets(self.targets, [{"targets": [f"127.0.0.1:{g.port}" for g in self.running], "labels": {}}])


def test_the_gateway_hpa_rises_and_falls_with_the_message_rate_and_the_gateways_follow_it_losing_nothing(
    cluster, namespace, tmp_path, monkeypatch
):
    require_binaries()
    pg, broker, procs = Postgres(), start_mosquitto(), []
    pg.start()
    monkeypatch.setenv(postgres.PASSWORD_FILE_ENV, str(pg.password_file))
    url = pg.fresh_database("hpa")
    db = Where(url)
    db.parent = tmp_path
    plant_dir = tmp_path / "plant"
    plant_dir.mkdir()
    (plant_dir / "plant.yaml").write_text(scale_out.plant_yaml())
    stream = follower = None
    try:
        # Prometheus scrapes whichever host gateways run (file_sd), each series labelled with the namespace
        targets = tmp_path / "gateways.json"
        follower = Follower(cluster, namespace, plant_dir, broker.url, db, targets)
        scrape = {
            "job_name": "gateway",
            "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            "relabel_configs": [{"target_label": "namespace", "replacement": namespace}],
        }
        prometheus, prom_port = start_prometheus(tmp_path, [scrape])
        procs.append(prometheus)
        with serving_adapter(cluster, namespace, tmp_path, prom_port, EXTERNAL):
            # the gateway as the operator renders it on the shared store, with its HPA (a short scale-down)
            settings = GatewayAutoscaling(1, MAX_REPLICAS, TARGET, scale_down_stabilization_seconds=0)
            rendered = render_ingestion(
                namespace,
                [plant_manifest(d) for d in yaml.safe_load_all(scale_out.plant_yaml())],
                Config(gateway_db_url=url, gateway_db_password_secret=("line1-postgres", "password"), gateway_autoscaling=settings),
            )
            [hpa] = [o for o in rendered if o["kind"] == "HorizontalPodAutoscaler"]
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered}))
            follower.start()
            wait_for(lambda: follower.running, "the first host gateway", timeout=60)
            stream = Stream(broker.url, float(int(time.time()) - 3600))
            stream.start()

            def metric() -> float | None:
                got = cluster.kubectl(
                    "get", "--raw", f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{GATEWAY_METRIC}", check=False
                )  # fmt: skip
                items = json.loads(got.stdout)["items"] if got.returncode == 0 else []
                return quantity(items[0]["value"]) if items else None

            # above the target: the HPA asks for the most replicas, the Deployment and the host gateways follow
            wait_for(lambda: (metric() or 0) > 2 * TARGET, f"{GATEWAY_METRIC} through the aggregation layer", timeout=60)
            wait_for(lambda: len(follower.running) == MAX_REPLICAS and follower.seen[-1] == (MAX_REPLICAS, MAX_REPLICAS),
                     f"the HPA to scale the gateway to {MAX_REPLICAS}: {follower.seen}", timeout=60)  # fmt: skip
            owners = "SELECT count(DISTINCT owner) FROM shard_checkpoints"
            wait_for(lambda: pg_rows(url, owners)[0][0] == MAX_REPLICAS, "the shards divided among the gateways", timeout=30)
            # below it: down one replica a period to the minimum, gateways stopped to match. The HPA controller
            # counts a scale-up within the last period against the scale-down limit (1 -> 3 within 15 s lets it
            # go 3 -> 1 at once), so the rate falls only once the top is a whole period old.
            period = hpa["spec"]["behavior"]["scaleDown"]["policies"][0]["periodSeconds"]
            time.sleep(max(0.0, follower.spans[-1][0] + period + 1 - time.monotonic()))
            stream.rate = LOW
            wait_for(lambda: len(follower.running) == 1 and follower.seen[-1] == (1, 1),
                     f"the HPA to scale the gateway back to 1: {follower.seen}", timeout=90)  # fmt: skip
            stream.stop()
            sent = stream.sent
            wait_for(lambda: pg_rows(url, "SELECT count(*) FROM readings")[0][0] >= len(sent), "every reading stored", timeout=60)
            readings = pg_rows(url, "SELECT node, sensor, ts, value FROM readings ORDER BY node, sensor, ts")
            got = pg_rows(
                url, "SELECT fingerprint, state, severity, value, ts FROM alert_events ORDER BY fingerprint, state, severity, value, ts"
            )
    finally:
        if stream is not None:
            stream.stop()
        if follower is not None:
            follower.stop()
            for g in follower.running:
                g.stop()
        for p in procs:
            p.terminate()
            p.wait(10)
        broker.stop()
        pg.close()
    assert follower.error is None, follower.error
    assert hpa["spec"]["scaleTargetRef"]["name"] == GATEWAY and hpa["spec"]["maxReplicas"] == MAX_REPLICAS
    replicas = [want for want, _ in follower.seen]
    assert replicas[0] == 1 and MAX_REPLICAS in replicas and replicas[-1] == 1, follower.seen
    # down one replica a period (the rendered behavior), so the shards move one gateway at a time: between two
    # looks the replicas fell by one, or by more only when as many periods passed unseen between those looks
    top = replicas.index(MAX_REPLICAS)
    for (a, _), (b, _), (_, last_a), (first_b, _) in zip(
        follower.seen[top:], follower.seen[top + 1 :], follower.spans[top:], follower.spans[top + 1 :]
    ):
        assert b >= a - 1 or first_b - last_a >= period * (a - b - 1), (
            f"{a} -> {b} replicas within {first_b - last_a:.1f}s: faster than one a {period}s period; {follower.seen}"
        )
    assert all(b <= a for a, b in zip(replicas[top:], replicas[top + 1 :])), f"scaled up again on the way down: {follower.seen}"
    assert readings == sorted((node, "temperature", ts, value) for node, ts, value in sent), "readings lost or doubled"
    want = scale_out.expected_alerts(plant_dir, sent)
    assert want and got == want, "alert events lost or doubled while the gateways were rescaled"
