"""The gateway's HorizontalPodAutoscaler follows the message rate, and the gateways follow it without losing an alert.

What runs where (kwok runs no containers, so the pods the HPA asks for are fake):
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

import base64
import contextlib
import ipaddress
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.store import postgres
from plantwatch_operator.autoscale import GATEWAY_METRIC, GatewayAutoscaling
from plantwatch_operator.config import Config
from plantwatch_operator.render import GATEWAY, plant_manifest, render_ingestion
from tests.e2e.cluster import BIN, _certificate, _private
from tests.e2e.conftest import wait_for
from tests.integration import test_scale_out as scale_out
from tests.integration.test_postgres_gateways import Where, pg_rows
from tests.support.postgres import Postgres
from tests.unit.test_chart import CHART, helm

PROMETHEUS = "/usr/bin/prometheus"
ADAPTER = BIN / "prometheus-adapter"
APISERVICE = "v1beta1.external.metrics.k8s.io"
#: Messages a second each replica is kept under; the stream runs at HIGH (desired: 3, the maximum), then LOW (1).
TARGET, HIGH, LOW, MAX_REPLICAS = 40, 200.0, 15.0, 3


@contextlib.contextmanager
def veth_address():
    """An address of this host that an EndpointSlice accepts (no loopback): a /32 on one end of a veth pair."""
    name = f"pwhpa{os.getpid() % 100000}"
    address = str(ipaddress.ip_address("10.213.0.0") + 1 + os.getpid() % 60000)
    steps = [
        ["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
        ["ip", "addr", "add", f"{address}/32", "dev", name],
        ["ip", "link", "set", name, "up"],
        ["ip", "link", "set", f"{name}p", "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                pytest.fail(f"{' '.join(step)}: {done.stderr.strip()} (the test needs root to give prometheus-adapter an address)")
        yield address
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def adapter_tls(directory: Path, service: str, namespace: str, address: str) -> tuple[Path, Path, Path]:
    """A CA (the APIService's caBundle) and the adapter's serving pair, valid for the Service's name and the address."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("plantwatch-e2e-adapter-ca", ca_key.public_key(), ca_key, issuer=None)
    names = [x509.DNSName(f"{service}.{namespace}.svc"), x509.IPAddress(ipaddress.ip_address(address))]
    leaf = _certificate(service, key.public_key(), ca_key, issuer=ca, names=names)
    paths = directory / "adapter-ca.crt", directory / "adapter.crt", directory / "adapter.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_private(key))
    return paths


def adapter_rules(directory: Path) -> Path:
    """The chart's prometheus-adapter rules, rendered by helm, with a rate window of a few scrapes."""
    out = helm(
        "template", "line1", str(CHART), "-n", "plant-a",
        "--set", "monitoring.prometheusAdapter.enabled=true", "--set", "monitoring.prometheusAdapter.rateWindow=10s",
        "--show-only", "templates/monitoring-prometheus-adapter-configmap.yaml",
    ).stdout  # fmt: skip
    path = directory / "adapter-rules.yaml"
    path.write_text(yaml.safe_load(out)["data"]["config.yaml"])
    return path


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
                if not self.seen or self.seen[-1] != (want, desired):
                    self.seen.append((want, desired))
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
        body = json.dumps([{"targets": [f"127.0.0.1:{g.port}" for g in self.running], "labels": {}}])
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(body)
        tmp.replace(self.targets)


def test_the_gateway_hpa_rises_and_falls_with_the_message_rate_and_the_gateways_follow_it_losing_nothing(
    cluster, namespace, tmp_path, monkeypatch
):
    for binary in (PROMETHEUS, ADAPTER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: Debian's prometheus package / `make tools` builds prometheus-adapter")
    pg, broker, procs, cleanup = Postgres(), start_mosquitto(), [], []
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
        with veth_address() as address:
            # Prometheus scrapes whichever host gateways run (file_sd), each series labelled with the namespace
            targets = tmp_path / "gateways.json"
            prom_port, adapter_port = free_port(), free_port()
            config = {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gateway",
                        "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
                        "relabel_configs": [{"target_label": "namespace", "replacement": namespace}],
                    }
                ],
            }
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
            follower = Follower(cluster, namespace, plant_dir, broker.url, db, targets)
            procs.append(subprocess.Popen(
                [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            # prometheus-adapter on the veth address, behind a selector-less Service and the APIService
            service = "plantwatch-metrics-adapter"
            ca, cert, key = adapter_tls(tmp_path, service, namespace, address)
            log = open(tmp_path / "adapter.log", "wb")
            procs.append(subprocess.Popen(
                [str(ADAPTER), f"--secure-port={adapter_port}", f"--bind-address={address}", f"--tls-cert-file={cert}",
                 f"--tls-private-key-file={key}", f"--prometheus-url=http://127.0.0.1:{prom_port}",
                 f"--config={adapter_rules(tmp_path)}", "--metrics-relist-interval=2s",
                 f"--lister-kubeconfig={cluster.kubeconfig}", f"--authentication-kubeconfig={cluster.kubeconfig}",
                 f"--authorization-kubeconfig={cluster.kubeconfig}"],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
            front = [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace},
                 "spec": {"ports": [{"name": "https", "port": 443, "targetPort": adapter_port}]}},
                {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": service, "namespace": namespace},
                 "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": adapter_port}]}]},
                {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
                 "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                          "versionPriority": 100, "service": {"namespace": namespace, "name": service, "port": 443},
                          "caBundle": base64.b64encode(ca.read_bytes()).decode()}},
            ]  # fmt: skip
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": front}))
            cleanup.append(lambda: cluster.kubectl("delete", "apiservice", APISERVICE, "--wait=false", check=False))
            # the gateway as the operator renders it on the shared store, with its HPA (a short scale-down)
            settings = GatewayAutoscaling(1, MAX_REPLICAS, TARGET, scale_down_stabilization_seconds=0)
            rendered = render_ingestion(
                namespace,
                [plant_manifest(d) for d in yaml.safe_load_all(scale_out.plant_yaml())],
                Config(gateway_db_url=url, gateway_db_password_secret=("line1-postgres", "password"), gateway_autoscaling=settings),
            )
            [hpa] = [o for o in rendered if o["kind"] == "HorizontalPodAutoscaler"]
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered}))
            wait_for(
                lambda: cluster.kubectl(
                    "get", "apiservice", APISERVICE, "-o", "jsonpath={.status.conditions[?(@.type=='Available')].status}"
                ).stdout == "True",
                f"the APIService to be Available; the adapter's log: {tmp_path / 'adapter.log'}",
                timeout=60,
            )  # fmt: skip
            follower.start()
            wait_for(lambda: follower.running, "the first host gateway", timeout=60)
            stream = Stream(broker.url, float(int(time.time()) - 3600))
            stream.start()

            def metric() -> float | None:
                got = cluster.kubectl(
                    "get", "--raw", f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{GATEWAY_METRIC}", check=False
                )  # fmt: skip
                items = json.loads(got.stdout)["items"] if got.returncode == 0 else []
                return _quantity(items[0]["value"]) if items else None

            # above the target: the HPA asks for the most replicas, the Deployment and the host gateways follow
            wait_for(lambda: (metric() or 0) > 2 * TARGET, f"{GATEWAY_METRIC} through the aggregation layer", timeout=60)
            wait_for(lambda: len(follower.running) == MAX_REPLICAS and follower.seen[-1] == (MAX_REPLICAS, MAX_REPLICAS),
                     f"the HPA to scale the gateway to {MAX_REPLICAS}: {follower.seen}", timeout=60)  # fmt: skip
            owners = "SELECT count(DISTINCT owner) FROM shard_checkpoints"
            wait_for(lambda: pg_rows(url, owners)[0][0] == MAX_REPLICAS, "the shards divided among the gateways", timeout=30)
            # below it: down one replica a period to the minimum, gateways stopped to match
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
        for undo in cleanup:
            undo()
        for p in procs:
            p.terminate()
            p.wait(10)
        broker.stop()
        pg.close()
    assert follower.error is None, follower.error
    assert hpa["spec"]["scaleTargetRef"]["name"] == GATEWAY and hpa["spec"]["maxReplicas"] == MAX_REPLICAS
    replicas = [want for want, _ in follower.seen]
    assert replicas[0] == 1 and MAX_REPLICAS in replicas and replicas[-1] == 1, follower.seen
    # down one replica a period (the rendered behavior), so the shards move one gateway at a time
    down = replicas[replicas.index(MAX_REPLICAS) :]
    assert [r for i, r in enumerate(down) if i == 0 or r != down[i - 1]] == list(range(MAX_REPLICAS, 0, -1)), follower.seen
    assert readings == sorted((node, "temperature", ts, value) for node, ts, value in sent), "readings lost or doubled"
    want = scale_out.expected_alerts(plant_dir, sent)
    assert want and got == want, "alert events lost or doubled while the gateways were rescaled"


def _quantity(text: str) -> float:
    """A Kubernetes quantity as the metrics API writes one (`1234m`, `56`, `7k`)."""
    for suffix, factor in (("m", 1e-3), ("k", 1e3), ("M", 1e6)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
