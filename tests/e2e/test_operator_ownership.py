"""Two operator installs never reconcile one namespace: the second finds the first's claim (Lease
plantwatch-operator), refuses, says so (log, Warning Event, metric) and writes nothing; once the first
stops and its claim expires, the second takes the namespace over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from plantwatch.mqtt.broker import free_port
from tests.e2e.conftest import sensor_node, wait_for
from tests.e2e.test_operator import crds  # noqa: F401  (fixture)

NODE = sensor_node("press-01")


@dataclass
class Operator:
    proc: subprocess.Popen
    log: Path
    metrics_port: int

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def operator_process(cluster, log: Path, namespace: str, env: dict[str, str], *extra: str) -> Iterator[Operator]:
    """`plantwatch operator` on the host, watching `namespace`, stopped (SIGTERM) on leaving."""
    metrics_port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plantwatch.cli",
                "--log-level",
                "INFO",
                "operator",
                "-n",
                namespace,
                "--metrics-port",
                str(metrics_port),
                *extra,
            ],
            env={**os.environ, "KUBECONFIG": cluster.kubeconfig, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Operator(proc, log, metrics_port)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get(cluster, *args: str) -> dict | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def gateway_image(cluster, namespace: str) -> str | None:
    deployment = get(cluster, "deployment", "plantwatch-gateway", "-n", namespace)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"] if deployment else None


def holder(cluster, namespace: str) -> str | None:
    lease = get(cluster, "lease", "plantwatch-operator", "-n", namespace)
    return lease["spec"].get("holderIdentity") if lease else None


def test_a_second_install_refuses_the_namespace_until_the_first_ones_claim_expires(cluster, crds, namespace, tmp_path):  # noqa: F811
    # Each install renders its own image, so which one wrote the gateway shows in the gateway.
    first = {
        "PLANTWATCH_OPERATOR_IDENTITY": "plant-a/first",
        "PLANTWATCH_OWNERSHIP_LEASE_SECONDS": "6",
        "PLANTWATCH_IMAGE": "plantwatch:first",
    }
    second = {**first, "PLANTWATCH_OPERATOR_IDENTITY": "plant-b/second", "PLANTWATCH_IMAGE": "plantwatch:second"}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=NODE)
    with operator_process(cluster, tmp_path / "first.log", namespace, first) as a:
        wait_for(lambda: gateway_image(cluster, namespace) == "plantwatch:first", f"the first operator's gateway\n{a.text()[-3000:]}")
        assert holder(cluster, namespace) == "plant-a/first"
        with operator_process(cluster, tmp_path / "second.log", namespace, second) as b:
            wait_for(lambda: "is reconciled by operator" in b.text(), "the second operator saying it leaves the namespace alone")
            assert "operator 'plant-a/first' (Lease plantwatch-operator)" in b.text()
            wait_for(
                lambda: f'plantwatch_operator_namespace_refused{{holder="plant-a/first",namespace="{namespace}"}} 1.0' in b.metrics(),
                "the refusal in the second operator's metrics",
            )
            events = get(cluster, "events", "-n", namespace, "--field-selector", "reason=NamespaceClaimed")
            [event] = events["items"]
            assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Lease"
            # A change while both run: the first renders it, the second still writes nothing.
            cluster.kubectl("label", "sensornode", "press-01", "-n", namespace, "plantwatch.io/area=hall-2")
            wait_for(
                lambda: (
                    "hall-2" in (get(cluster, "configmap", "plantwatch-plant", "-n", namespace) or {}).get("data", {}).get("plant.yaml", "")
                ),
                "the first operator rendering the change",
            )
            assert gateway_image(cluster, namespace) == "plantwatch:first"
            assert holder(cluster, namespace) == "plant-a/first"
            a.proc.terminate()
            a.proc.wait(15)
            # Within the 6 s lease and the second's retry at its expiry, the namespace is the second's.
            wait_for(
                lambda: gateway_image(cluster, namespace) == "plantwatch:second",
                f"the second operator taking over\n{b.text()[-3000:]}",
                timeout=60,
            )
            assert holder(cluster, namespace) == "plant-b/second"
            assert "plantwatch_operator_namespace_refused{" not in b.metrics()
            assert "expired; reconciled by this operator" in b.text()
