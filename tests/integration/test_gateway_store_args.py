"""The gateway's args and env as the operator renders them for the shared store, run on this host: a rollout keeps
the history.

kwok runs no container, so what the pod would run is run here: the rendered container's args and env, the in-cluster
names (broker, database, mounted Secret folder, plant folder, port) replaced by a loopback mosquitto that requires the
gateway's identity and a real PostgreSQL (tests/support). A rolling update (a new pod started beside the old one, the
old one stopped) and then a killed pod's replacement must answer the readings API with the same history, every reading
once. Only `--report-status` is left out: it writes to the API server (tests/e2e show it).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from plantwatch.ingest.formats import encode
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.mqtt.publisher import Publisher
from plantwatch.secrets import MOUNT_DIR
from plantwatch_operator.broker import GATEWAY_PASSWORD_KEY, GATEWAY_SECRET, GATEWAY_USERNAME
from plantwatch_operator.render import HTTP_PORT, PLANT_DIR, plant_manifest, render_ingestion
from tests.support.postgres import PASSWORD, server  # noqa: F401 (fixture)
from tests.unit.test_render import sample_docs
from tests.unit.test_store_render import SHARED

IN_CLUSTER_BROKER = "mqtt://plantwatch-broker:1883"
IN_CLUSTER_DB = "line1-postgres.plant-a.svc:5432"
NODE, TOPIC = "esp32-press-01", "sensors/hall-1/esp32-press-01/data"


def nodes() -> list[dict]:
    """The sample plant's SensorNodes: its rules name a detector and receivers nothing here serves."""
    return [d for d in sample_docs() if d["kind"] == "SensorNode"]


def rendered_container() -> dict:
    config = dataclasses.replace(SHARED, broker_url=IN_CLUSTER_BROKER, gateway_api_open_reads=True)
    deployment = next(o for o in render_ingestion("plant-a", [plant_manifest(d) for d in nodes()], config) if o["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def host_command(container: dict, plant: Path, secrets: Path, broker_url: str, db_port: int, http_port: int) -> tuple[list[str], dict]:
    """The container's args and env with the cluster's names replaced by this host's."""

    def here(value: str) -> str:
        return (
            value.replace(MOUNT_DIR, str(secrets))
            .replace(PLANT_DIR, str(plant))
            .replace(IN_CLUSTER_BROKER, broker_url)
            .replace(IN_CLUSTER_DB, f"127.0.0.1:{db_port}")
        )

    args = [here(a) for a in container["args"] if a != "--report-status"]
    args[args.index("--http-port") + 1] = str(http_port)
    env = {e["name"]: here(e["value"]) for e in container["env"] if "value" in e}
    return [sys.executable, "-m", "plantwatch.cli", *args], env


class Pod:
    def __init__(self, command: list[str], env: dict, log: Path) -> None:
        import os

        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, port: int) -> Pod:
        deadline = time.time() + 60
        while get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert self.proc.poll() is None and time.time() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)
        return self


def get(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except OSError:
        return 0


def readings(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/readings?node={NODE}", timeout=10).read().decode()


def publish(broker_url: str, start: float, count: int) -> None:
    pub = Publisher(broker_url)
    pub.start()
    for i in range(count):
        pub.publish(TOPIC, encode("esp32-json", NODE, start + i, {"temperature_c": 40.0 + (i % 50) * 0.1}))
    pub.stop()


def wait_rows(port: int, count: int) -> str:
    deadline = time.time() + 60
    while True:
        body = readings(port) if get(f"http://127.0.0.1:{port}/readyz") == 200 else ""
        rows = [line for line in body.splitlines()[1:] if line]
        if len(rows) >= count or time.time() > deadline:
            return body
        time.sleep(0.2)


def test_the_rendered_gateway_keeps_its_history_across_a_rolling_update_and_a_lost_pod(tmp_path, server, monkeypatch):  # noqa: F811
    container = rendered_container()
    assert "--report-status" in container["args"]  # the one flag left out here
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "plant.yaml").write_text(yaml.safe_dump_all(nodes()))
    secrets = tmp_path / "secrets"
    (secrets / GATEWAY_SECRET).mkdir(parents=True)
    (secrets / GATEWAY_SECRET / GATEWAY_PASSWORD_KEY).write_text("gateway-test-password")
    (secrets / "line1-postgres").mkdir()
    (secrets / "line1-postgres" / "password").write_text(PASSWORD)
    broker = start_mosquitto(users={GATEWAY_USERNAME: "gateway-test-password", "sensor": "sensor-password"})
    sensor_url = broker.url.replace("mqtt://", "mqtt://sensor:sensor-password@")
    pods: list[Pod] = []

    def pod(name: str) -> tuple[Pod, int]:
        port = free_port()
        command, env = host_command(container, plant, secrets, broker.url, server.port, port)
        assert str(HTTP_PORT) not in command[command.index("--http-port") + 1 :][:1]
        pods.append(Pod(command, env, tmp_path / f"{name}.log"))
        return pods[-1].wait_ready(port), port

    try:
        t0 = float(int(time.time()) - 3600)
        old, old_port = pod("old")
        publish(sensor_url, t0, 200)
        before = wait_rows(old_port, 200)
        assert len(before.splitlines()) == 201, before[-500:]
        # the rolling update: the new pod beside the old one (it claims the shards), then the old one stopped
        new, new_port = pod("new")
        old.proc.send_signal(signal.SIGTERM)
        assert old.proc.wait(30) == 0, old.log.read_text()[-3000:]
        assert readings(new_port) == before, "the new pod does not answer with the old pod's history"
        publish(sensor_url, t0 + 200, 100)
        during = wait_rows(new_port, 300)
        # the pod lost with its node: SIGKILL, then its replacement
        new.proc.kill()
        new.proc.wait()
        replacement, port = pod("replacement")
        after = wait_rows(port, 300)
    finally:
        for p in pods:
            if p.proc.poll() is None:
                p.proc.terminate()
                p.proc.wait(30)
        broker.stop()
    rows = after.splitlines()[1:]
    assert after == during and len(rows) == 300 == len(set(rows)), "readings lost or doubled across the rollout"
