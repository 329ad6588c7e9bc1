"""A detector's HorizontalPodAutoscaler, as the operator renders it, rises and falls with the load on its pods.

The HPA scales on CPU utilization of the pods' request (spec.autoscaling.targetCPUUtilizationPercentage): scoring is
CPU-bound, so the CPU a pod burns is its load. What runs where (kwok runs no containers and reports no usage, so no
metrics-server can run against it):
- on the control plane: the detector's Deployment and HPA exactly as render_detector renders them (the HPA's
  default five-minute scale-down window set to 0, so the test is short), kwok's fake pods, the scheduler, and
  kube-controller-manager's HPA controller reading metrics.k8s.io through the aggregation layer;
- on the host: one real `plantwatch serve inference` process per Running pod (started and stopped as the pods
  come and go), loaded by a client scoring batches; a real Prometheus scraping them, each labelled with its pod
  and its own CPU and memory counters named as the kubelet's cAdvisor names a container's; the real
  prometheus-adapter serving the chart's resourceRules as metrics.k8s.io (tests/e2e/metrics_path.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from plantwatch.inference.models import sha256_of
from plantwatch.inference.zscore import zscore_model
from plantwatch.mqtt.broker import free_port
from plantwatch.plant.model import parse_resource
from plantwatch_operator.config import Config
from plantwatch_operator.render import detector_name, render_detector
from tests.conftest import EXAMPLE_PLANT
from tests.e2e.conftest import wait_for
from tests.e2e.metrics_path import RESOURCE, publish_targets, quantity, require_binaries, serving_adapter, start_prometheus

MAX_REPLICAS, TARGET_PERCENT = 3, 50
DETECTOR = "bearing-wear"
DEPLOYMENT = detector_name(DETECTOR)
ROWS = {"inputs": [{"name": "features", "shape": [64, 3], "datatype": "FP32", "data": [45.0, 1.5, 12.0] * 64}]}


class PodFollower:
    """One host `serve inference` per Running pod of the Deployment, each a Prometheus target labelled as that pod."""

    def __init__(self, cluster, namespace: str, model: Path, targets: Path, logs: Path):
        self.cluster, self.namespace, self.model, self.targets, self.logs = cluster, namespace, model, targets, logs
        self.running: dict[str, tuple[subprocess.Popen, int]] = {}  # pod → (process, port)
        #: (Deployment replicas, HPA desiredReplicas) each time either changed
        self.seen: list[tuple[int, int | None]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        publish_targets(targets, [])

    def ports(self) -> list[int]:
        return [port for _, port in list(self.running.values())]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for pod in list(self.running):
            self._end(pod)

    def _run(self) -> None:
        try:
            while not self._stop.wait(1.0):
                state = json.loads(self.cluster.kubectl("get", "deployment,hpa,pods", "-n", self.namespace, "-o", "json").stdout)["items"]
                deployment = next(o for o in state if o["kind"] == "Deployment" and o["metadata"]["name"] == DEPLOYMENT)
                hpa = next((o for o in state if o["kind"] == "HorizontalPodAutoscaler"), {})
                now = (deployment["spec"].get("replicas", 1), (hpa.get("status") or {}).get("desiredReplicas"))
                if not self.seen or self.seen[-1] != now:
                    self.seen.append(now)
                pods = {
                    p["metadata"]["name"]
                    for p in state
                    if p["kind"] == "Pod"
                    and p["metadata"].get("labels", {}).get("plantwatch.io/detector") == DETECTOR
                    and p["status"].get("phase") == "Running"
                    and not p["metadata"].get("deletionTimestamp")
                }
                for pod in pods - self.running.keys():
                    self._begin(pod)
                for pod in self.running.keys() - pods:
                    self._end(pod)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _begin(self, pod: str) -> None:
        port = free_port()
        with open(self.logs / f"{pod}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plantwatch.cli", "serve", "inference", "--model-name", DETECTOR, "--model", str(self.model),
                 "--sha256", sha256_of(self.model.read_bytes()), "--host", "127.0.0.1", "--http-port", str(port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(lambda: _ready(port) or proc.poll() is not None, f"serve inference for pod {pod}", timeout=30)
        assert proc.poll() is None, (self.logs / f"{pod}.log").read_text()
        self.running[pod] = (proc, port)
        self._publish()

    def _end(self, pod: str) -> None:
        proc, _ = self.running.pop(pod)
        self._publish()
        proc.terminate()
        proc.wait(10)

    def _publish(self) -> None:
        labels = {"namespace": self.namespace, "container": "inference"}
        publish_targets(
            self.targets, [{"targets": [f"127.0.0.1:{port}"], "labels": {**labels, "pod": pod}} for pod, (_, port) in self.running.items()]
        )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Load:
    """`workers` clients scoring 64-row batches back to back, round robin over the running processes (the Service)."""

    def __init__(self, ports):
        self.ports, self.workers, self.scored = ports, 0, 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, index: int) -> None:
        body, turn = json.dumps(ROWS).encode(), index
        while not self._stop.is_set():
            ports = self.ports()
            if index >= self.workers or not ports:
                self._stop.wait(0.2)
                continue
            turn += 1
            request = urllib.request.Request(f"http://127.0.0.1:{ports[turn % len(ports)]}/v2/models/{DETECTOR}/infer", data=body,
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    r.read()
                self.scored += 1
            except (urllib.error.URLError, OSError):
                pass  # a process stopping as its pod goes: the next request goes to another


def test_the_detector_hpa_rises_and_falls_with_the_load_on_its_pods(edge_cluster, namespace, tmp_path):
    require_binaries()
    cluster = edge_cluster
    model = tmp_path / "model.onnx"
    model.write_bytes(zscore_model([45.0, 1.5, 12.0], [1.5, 0.3, 1.0]))
    doc = yaml.safe_load((EXAMPLE_PLANT / "detectors.yaml").read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": MAX_REPLICAS, "targetCPUUtilizationPercentage": TARGET_PERCENT}
    rendered = render_detector(parse_resource(doc), Config())
    [hpa] = [o for o in rendered if o["kind"] == "HorizontalPodAutoscaler"]
    hpa["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    targets = tmp_path / "inference.json"
    # each process's own CPU and memory counters, named as the kubelet's cAdvisor names a container's
    renamed = [
        {"source_labels": ["__name__"], "regex": ours, "target_label": "__name__", "replacement": cadvisor}
        for ours, cadvisor in (
            ("process_cpu_seconds_total", "container_cpu_usage_seconds_total"),
            ("process_resident_memory_bytes", "container_memory_working_set_bytes"),
        )
    ]
    scrape = {
        "job_name": "inference",
        "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
        "metric_relabel_configs": renamed,
    }
    prometheus, prom_port = start_prometheus(tmp_path, [scrape])
    follower = PodFollower(cluster, namespace, model, targets, tmp_path)
    load = Load(follower.ports)
    try:
        with serving_adapter(cluster, namespace, tmp_path, prom_port, RESOURCE):
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered}))
            follower.start()
            load.start()
            wait_for(lambda: follower.running, "the first inference process", timeout=60)

            def cpu() -> list[float]:
                got = cluster.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", check=False)
                pods = json.loads(got.stdout)["items"] if got.returncode == 0 else []
                return [quantity(c["usage"]["cpu"]) for p in pods for c in p["containers"]]

            wait_for(cpu, "the pods' CPU through metrics.k8s.io", timeout=60)
            # loaded: the HPA asks for the most replicas, and a process runs for each pod
            load.workers = 2
            wait_for(lambda: follower.seen[-1] == (MAX_REPLICAS, MAX_REPLICAS) and len(follower.running) == MAX_REPLICAS,
                     f"the HPA to scale the detector to {MAX_REPLICAS}: {follower.seen}", timeout=90)  # fmt: skip
            # idle: back to one
            load.workers = 0
            wait_for(lambda: follower.seen[-1] == (1, 1) and len(follower.running) == 1,
                     f"the HPA to scale the detector back to 1: {follower.seen}", timeout=90)  # fmt: skip
    finally:
        load.stop()
        follower.stop()
        prometheus.terminate()
        prometheus.wait(10)
    assert follower.error is None, follower.error
    replicas = [want for want, _ in follower.seen]
    assert replicas[0] == 1 and MAX_REPLICAS in replicas and replicas[-1] == 1, follower.seen
    assert load.scored > 0
    print(f"(Deployment replicas, HPA desired): {follower.seen}; {load.scored} batches scored")
