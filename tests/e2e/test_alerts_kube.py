"""`plantwatch alerts --kube` through a real API server's service proxy to a real gateway's alerts API.

Under kwok no pod runs, so the gateway is `plantwatch serve ingest` on this host, its API token
in a mounted-Secret folder, and the namespace's `plantwatch-gateway` Service has no selector:
its Endpoints name this host at an address the test adds to the loopback interface (the API
server refuses to proxy to loopback addresses themselves). Needs root for `ip addr`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from plantwatch.mqtt.broker import free_port, start_mosquitto
from tests.conftest import EXAMPLE_PLANT
from tests.e2e.conftest import wait_for
from tests.integration.test_delivery import ready
from tests.integration.test_up_durable import OVERHEAT, press_temperatures

TOKEN = "kube-path-api-token"
#: Not loopback (the proxy refuses 127.0.0.0/8), but reachable only from this host.
ADDRESS = "10.250.0.1"


@pytest.fixture
def host_address():
    if os.geteuid() != 0:
        pytest.fail(f"this test adds {ADDRESS}/32 to the loopback interface, which needs root", pytrace=False)
    added = subprocess.run(["ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo"], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.fail(f"ip addr add {ADDRESS}/32 dev lo: {added.stderr.strip()} (left over from an earlier run? remove it)", pytrace=False)
    yield ADDRESS
    subprocess.run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo"], check=True)


@pytest.fixture
def gateway(tmp_path, host_address):
    """`serve ingest` as the pod runs it, its API token read from the mounted Secrets folder."""
    broker = start_mosquitto()
    plant = tmp_path / "plant"
    shutil.copytree(EXAMPLE_PLANT, plant)
    secrets = tmp_path / "secrets" / "plantwatch-api"
    secrets.mkdir(parents=True)
    (secrets / "token").write_text(TOKEN)
    port = free_port()
    args = ["serve", "ingest", "-f", str(plant), "--broker", broker.url, "--db", str(tmp_path / "plant.db"), "--http-port", str(port)]
    args += ["--secrets-dir", str(tmp_path / "secrets"), "--api-token-secret", "plantwatch-api/token"]
    out = open(tmp_path / "gateway.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "plantwatch.cli", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready(port) or proc.poll() is not None, "the gateway ready", timeout=30)
        assert proc.poll() is None, (tmp_path / "gateway.out").read_text()
        yield broker, port
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()
        broker.stop()


def test_alerts_through_the_api_servers_service_proxy(cluster, namespace, gateway, tmp_path):
    broker, port = gateway
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "plantwatch-gateway", "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": port}]},
    }
    # The API server proxies only to an endpoint address that is a Pod's IP (targetRef, podIPs):
    # a Pod that no node takes, its status given this host's address.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gateway-on-this-host", "namespace": namespace},
        "spec": {"nodeSelector": {"plantwatch.io/no-such-node": "x"}, "containers": [{"name": "gateway", "image": "plantwatch"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    status = {"status": {"podIP": ADDRESS, "podIPs": [{"ip": ADDRESS}]}}
    cluster.kubectl(
        "patch", "pod", "gateway-on-this-host", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    target = {"kind": "Pod", "namespace": namespace, "name": "gateway-on-this-host"}
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "plantwatch-gateway", "namespace": namespace},
        "subsets": [{"addresses": [{"ip": ADDRESS, "targetRef": target}], "ports": [{"name": "http", "port": port}]}],
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([service, endpoints]))
    press_temperatures(broker.url, time.time() - 120, [75.0] * 40)

    env = {k: v for k, v in os.environ.items() if k != "PLANTWATCH_API_TOKEN"} | {"KUBECONFIG": cluster.kubeconfig}
    (tmp_path / "token").write_text(TOKEN + "\n")

    def alerts(*args: str, token: bool = True) -> subprocess.CompletedProcess:
        auth = ["--token-file", str(tmp_path / "token")] if token else []
        cmd = [sys.executable, "-m", "plantwatch.cli", "alerts", *args, "--kube", "-n", namespace, *auth]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)

    def listed() -> bool:
        r = alerts("list", "--json")
        assert r.returncode == 0, r.stderr
        return OVERHEAT in [a["fingerprint"] for a in json.loads(r.stdout)]

    wait_for(listed, "the press's alert listed through the proxy", timeout=30)
    refused = alerts("ack", OVERHEAT, token=False)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    acked = alerts("ack", OVERHEAT, "--by", "maria", "--comment", "via kube")
    assert acked.returncode == 0, acked.stderr
    assert json.loads(alerts("get", OVERHEAT, "--json").stdout)["ackedBy"] == "maria"
    made = alerts("silence", "node=esp32-press-01", "--duration", "1h", "--comment", "bench")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() in alerts("silences").stdout
    whats = [e["what"] for e in json.loads(alerts("history", OVERHEAT, "--json").stdout)]
    assert "acknowledged" in whats
