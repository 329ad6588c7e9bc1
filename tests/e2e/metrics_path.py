"""The standard metrics path on the e2e control plane, for the HPA tests (test_gateway_hpa, test_inference_hpa).

Host processes stand in for the pods kwok does not run; a real Prometheus (Debian's) scrapes them, labelled as
the pods they stand for; the real prometheus-adapter (built from the Go module proxy, `make tools`) serves the
chart's rules (templates/monitoring-prometheus-adapter-configmap.yaml) to the aggregation layer, and
kube-controller-manager's HPA controller reads them there. The adapter listens on a veth address (an
EndpointSlice takes no loopback address) under a certificate of a CA given as the APIServices' caBundle.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plantwatch.mqtt.broker import free_port
from tests.e2e.cluster import BIN, _certificate, _private
from tests.e2e.conftest import wait_for
from tests.unit.test_chart import CHART, helm

PROMETHEUS = "/usr/bin/prometheus"
ADAPTER = BIN / "prometheus-adapter"
#: The APIServices the adapter can serve: external metrics (the gateway's HPA) and resource metrics, metrics-server's
#: API (the detectors' CPU).
EXTERNAL = ("v1beta1.external.metrics.k8s.io", "external.metrics.k8s.io")
RESOURCE = ("v1beta1.metrics.k8s.io", "metrics.k8s.io")
SERVICE = "plantwatch-metrics-adapter"


def require_binaries() -> None:
    for binary in (PROMETHEUS, ADAPTER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: Debian's prometheus package / `make tools` builds prometheus-adapter")


@contextlib.contextmanager
def veth_address() -> Iterator[str]:
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


def start_prometheus(directory: Path, scrape_configs: list[dict]) -> tuple[subprocess.Popen, int]:
    """Prometheus scraping every second; its process and port."""
    port = free_port()
    (directory / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs}))
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, port


@contextlib.contextmanager
def serving_adapter(cluster, namespace: str, directory: Path, prometheus_port: int, apiservice: tuple[str, str]) -> Iterator[None]:
    """prometheus-adapter with the chart's rules on a veth address, behind a selector-less Service and `apiservice`
    (name, group), until it is Available; removed afterwards."""
    with veth_address() as address:
        port = free_port()
        ca, cert, key = adapter_tls(directory, SERVICE, namespace, address)
        log = directory / "adapter.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(ADAPTER), f"--secure-port={port}", f"--bind-address={address}", f"--tls-cert-file={cert}",
                 f"--tls-private-key-file={key}", f"--prometheus-url=http://127.0.0.1:{prometheus_port}",
                 f"--config={adapter_rules(directory)}", "--metrics-relist-interval=2s",
                 f"--lister-kubeconfig={cluster.kubeconfig}", f"--authentication-kubeconfig={cluster.kubeconfig}",
                 f"--authorization-kubeconfig={cluster.kubeconfig}"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        name, group = apiservice
        front = [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": namespace},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": SERVICE, "namespace": namespace},
             "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port}]}]},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
             "spec": {"group": group, "version": "v1beta1", "groupPriorityMinimum": 100,
                      "versionPriority": 100, "service": {"namespace": namespace, "name": SERVICE, "port": 443},
                      "caBundle": base64.b64encode(ca.read_bytes()).decode()}},
        ]  # fmt: skip
        try:
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": front}))
            wait_for(
                lambda: cluster.kubectl(
                    "get", "apiservice", name, "-o", "jsonpath={.status.conditions[?(@.type=='Available')].status}"
                ).stdout == "True",
                f"the APIService {name} to be Available; the adapter's log: {log}",
                timeout=60,
            )  # fmt: skip
            yield
        finally:
            cluster.kubectl("delete", "apiservice", name, "--wait=false", check=False)
            proc.terminate()
            proc.wait(10)


def publish_targets(path: Path, groups: list[dict]) -> None:
    """Prometheus file_sd targets, replaced at once (Prometheus never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)


def quantity(text: str) -> float:
    """A Kubernetes quantity as the metrics API writes one (`1234m`, `56`, `7k`)."""
    for suffix, factor in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("k", 1e3), ("M", 1e6)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
