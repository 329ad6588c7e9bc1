"""A node's birth and Last Will through a real mosquitto: the gateway turns them into the node's Online state.

The node is a separate process (paho, as the firmware's PubSubClient: a Will registered at
connect, `online` published retained right after), killed with SIGKILL so that it never
says goodbye: only the broker's Will can tell the gateway. The node's heartbeat is ten
minutes, so within the test Online can only come from its birth and Offline only from its Will.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from plantwatch.ingest.node_status import online_condition
from plantwatch.ingest.pipeline import Pipeline
from plantwatch.ingest.runner import IngestService
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.plant.load import load_plant
from plantwatch.store.sqlite import SqliteStore
from tests.support.process import wait_for

NODE = "press-9"
STATUS = "sensors/hall-9/press-9/status"
PLANT = f"""
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata: {{name: {NODE}}}
spec:
  hardware: esp32
  payload: {{format: esp32-json, topic: sensors/hall-9/press-9/data}}
  heartbeat: {{interval: 10m, missedBeats: 1}}
  sensors:
    - {{name: temperature, type: temperature, unit: celsius, field: temperature_c}}
"""
#: The node: connects with its Will, publishes its birth (retained, QoS 1, acknowledged), says so, then waits to be killed.
NODE_SCRIPT = """
import sys, time
import paho.mqtt.client as mqtt
port, topic = int(sys.argv[1]), sys.argv[2]
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="press-9")
client.will_set(topic, b"offline", qos=1, retain=True)
client.connect("127.0.0.1", port, keepalive=60)
client.loop_start()
client.publish(topic, b"online", qos=1, retain=True).wait_for_publish(10)
print("born", flush=True)
time.sleep(3600)
"""


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


@pytest.fixture
def plant_file(tmp_path):
    path = tmp_path / "plant.yaml"
    path.write_text(PLANT)
    return path


def start_node(port: int) -> subprocess.Popen:
    node = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(port), STATUS], stdout=subprocess.PIPE, text=True)
    assert node.stdout.readline().strip() == "born", "the node did not publish its birth"
    return node


def kill(node: subprocess.Popen) -> None:
    node.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must publish the Will
    node.wait(10)


def gateway(plant_file, tmp_path, broker, name: str) -> tuple[Pipeline, IngestService]:
    pipeline = Pipeline(load_plant(str(plant_file)), SqliteStore(tmp_path / f"{name}.db"))
    service = IngestService(pipeline, broker.url, client_id=name)
    service.start()
    return pipeline, service


def test_birth_then_sigkill_makes_the_node_offline_by_its_last_will(broker, plant_file, tmp_path):
    pipeline, service = gateway(plant_file, tmp_path, broker, "gw-a")
    node = start_node(broker.port)
    try:
        born = wait_for("the gateway reads the birth", lambda: pipeline.presence(time.time())[NODE].online)
        assert born
        condition = online_condition(pipeline.presence(time.time())[NODE], None, time.time())
        assert (condition["status"], condition["reason"]) == ("True", "Birth") and STATUS in condition["message"]
        kill(node)
        wait_for("the gateway reads the Will", lambda: not pipeline.presence(time.time())[NODE].online)
        condition = online_condition(pipeline.presence(time.time())[NODE], condition, time.time())
        assert (condition["status"], condition["reason"]) == ("False", "LastWill")
        assert condition["message"] == f"`offline` on {STATUS} (the node's Last Will: the broker lost its connection)"
        assert sum(pipeline.rejected.values()) == 0  # neither status message was dead-lettered
    finally:
        node.kill()
        service.stop()
    # A gateway started afterwards gets the retained Will and reports the node Offline at once.
    later, service = gateway(plant_file, tmp_path, broker, "gw-b")
    try:
        wait_for("a new gateway reads the retained Will", lambda: later.announced.get(NODE))
        assert later.presence(time.time())[NODE].reason == "LastWill"
    finally:
        service.stop()


def metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except (urllib.error.URLError, OSError):
        return None
    m = re.search(rf'^{name}{{node="{NODE}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_up_reports_the_node_offline_after_its_last_will(broker, plant_file, tmp_path):
    http_port, summary = free_port(), tmp_path / "summary.json"
    up = subprocess.Popen(
        [
            *(sys.executable, "-m", "plantwatch.cli", "up", "-f", str(plant_file), "--broker", broker.url),
            *("--http-port", str(http_port), "--db", str(tmp_path / "up.db"), "--summary-json", str(summary), "--duration", "120"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    node = None
    try:
        wait_for("up's /metrics answers", lambda: metric(http_port, "plantwatch_node_online") is not None)
        node = start_node(broker.port)
        wait_for("up counts the node online by its birth", lambda: metric(http_port, "plantwatch_node_online") == 1.0)
        kill(node)
        wait_for("up counts the node offline by its Will", lambda: metric(http_port, "plantwatch_node_online") == 0.0)
    finally:
        if node is not None:
            node.kill()
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    assert up.returncode == 0, stderr
    s = json.loads(summary.read_text())
    assert s["nodes"][NODE]["online"] is False and s["nodes"][NODE]["last_seen"] is None
    assert s["messages_received"] == 2 and s["rejected"] == 0 and s["dead_letters"] == 0
