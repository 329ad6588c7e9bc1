"""`plantwatch up` end to end on real brokers: mosquitto, and the embedded one."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from plantwatch.mqtt.broker import start_broker
from plantwatch.mqtt.subscriber import BatchSubscriber
from tests.conftest import EXAMPLE_PLANT


def run_up(tmp_path, *extra: str, duration: int = 24, plants=(EXAMPLE_PLANT,)) -> tuple[dict, str]:
    summary = tmp_path / "summary.json"
    files = [arg for p in plants for arg in ("-f", str(p))]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "plantwatch.cli",
            "up",
            *files,
            "--simulate",
            "--duration",
            str(duration),
            "--summary-json",
            str(summary),
            "--http-port",
            "0",
            "--db",
            str(tmp_path / "plant.db"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(summary.read_text()), proc.stdout


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_simulated_plant_stores_alerts_and_rejects(tmp_path, kind):
    summary, stdout = run_up(tmp_path, "--broker-kind", kind)
    assert summary["broker"]["kind"] == kind
    assert summary["readings_stored"] > 100
    # the simulated overheating fires the threshold rule; the silent node fires the absence rule
    assert summary["alerts_fired"] >= 2
    assert "node-silent/coldroom-feed/*" in summary["alerts_firing"]
    # the overheating escalates warning -> critical (threshold levels with `for: 2s`)
    warning = stdout.index("ALERT WARNING   machine-overtemperature esp32-press-01/temperature")
    assert stdout.index("ALERT CRITICAL  machine-overtemperature esp32-press-01/temperature") > warning
    # every kind of bad input the simulator sends is rejected with its own reason, and nothing else
    assert summary["rejected"] == summary["simulated"]["sent_invalid"] == summary["dead_letters"]
    assert {"malformed", "out_of_range", "not_finite", "device_mismatch", "unknown_node"} <= set(summary["rejected_by_reason"])
    assert summary["nodes"]["coldroom-feed"]["online"] is False
    assert summary["nodes"]["esp32-press-01"]["online"] is True
    # the overtemperature reached the sample plant's `andon` MQTT receiver too, out of the box
    assert summary["notifications"]["log"]["andon"] == {"sent": summary["notifications"]["by_receiver"]["andon"]["sent"]}
    assert summary["notifications"]["by_receiver"]["andon"]["sent"] >= 1
    assert "notifications delivered: " in stdout


def test_the_sample_plants_andon_receiver_publishes_to_the_plants_broker(tmp_path):
    """What a stack light on the line would read: the node's retained andon topic, the notification's JSON."""
    broker = start_broker("mosquitto")
    try:
        summary, _ = run_up(tmp_path, "--broker", broker.url)
        got: list[dict] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="andon-light")
        client.on_message = lambda c, u, m: got.append({"topic": m.topic, "retain": m.retain, **orjson.loads(m.payload)})
        client.connect("127.0.0.1", broker.port)
        client.subscribe("plant/andon/#", qos=1)
        client.loop_start()
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            time.sleep(0.05)
        client.loop_stop()
        client.disconnect()
    finally:
        broker.stop()
    assert summary["notifications"]["log"]["andon"]["sent"] >= 1
    assert got, "nothing retained on plant/andon/#"
    message = got[0]
    assert message["topic"] == "plant/andon/esp32-press-01" and message["retain"] is True
    assert message["receiver"] == "andon" and {a["rule"] for a in message["alerts"]} == {"machine-overtemperature"}
    assert message["alerts"][0]["labels"]["equipment"] == "press-1"
    # nothing that was accepted is lost: every valid simulated message is in the store
    assert summary["messages_received"] == summary["simulated"]["sent"] + summary["simulated"]["sent_invalid"]


def test_dead_letters_carry_the_payload_and_reason(tmp_path):
    broker = start_broker("mosquitto")
    letters: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: letters.append(orjson.loads(m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("plantwatch/dead-letter/#", qos=1)
    sub.loop_start()
    try:
        summary, _ = run_up(tmp_path, "--broker", broker.url)
        deadline = time.time() + 5
        while len(letters) < summary["rejected"] and time.time() < deadline:
            time.sleep(0.1)
    finally:
        sub.loop_stop()
        broker.stop()
    assert len(letters) == summary["rejected"] > 0
    assert len({letter["correlation_id"] for letter in letters}) == len(letters)
    malformed = next(letter for letter in letters if letter["reason"] == "malformed")
    assert malformed["payload"].startswith('{"device_id"') and malformed["node"] == "esp32-press-01"
    assert "not valid JSON" in malformed["rejections"][0]["detail"]
    unknown = next(letter for letter in letters if letter["reason"] == "unknown_node")
    assert unknown["node"] is None and "unregistered" in unknown["topic"]


def test_sparkplug_node_beside_the_sample_plant(tmp_path):
    # the simulator silences the plant's last node; keep that the sample's coldroom-feed
    summary, _ = run_up(tmp_path, duration=8, plants=(Path(__file__).parent / "plants", EXAMPLE_PLANT))
    assert summary["nodes"]["cell-plc"]["online"] is True
    assert "sequence_gap" not in summary["rejected_by_reason"]
    readings = sqlite3.connect(tmp_path / "plant.db").execute("SELECT count(*) FROM readings WHERE node = 'cell-plc'").fetchone()[0]
    assert readings >= 10  # two metrics a second, births included


def test_invalid_plant_exits_2_with_the_field(tmp_path):
    (tmp_path / "node.yaml").write_text((EXAMPLE_PLANT / "nodes.yaml").read_text().replace("type: vibration", "type: wobble", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "plantwatch.cli", "up", "-f", str(tmp_path), "--duration", "1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert 'spec.sensors[1].type: Unsupported value: "wobble"' in proc.stderr


def test_health_and_metrics_endpoints(tmp_path):
    import urllib.request

    from plantwatch.health import HealthServer
    from plantwatch.ingest.pipeline import Pipeline
    from plantwatch.ingest.runner import IngestService
    from plantwatch.plant.load import load_plant
    from plantwatch.store.sqlite import SqliteStore

    broker = start_broker("mosquitto")
    plant = load_plant(EXAMPLE_PLANT)
    service = IngestService(Pipeline(plant, SqliteStore(tmp_path / "p.db")), broker.url)
    health = HealthServer(0, healthy=lambda: service.alive, ready=lambda: service.ready)
    health.start()
    base = f"http://127.0.0.1:{health.port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz")
        assert err.value.code == 503  # not subscribed yet
        service.start()
        assert urllib.request.urlopen(base + "/readyz").status == 200
        assert urllib.request.urlopen(base + "/healthz").status == 200
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "plantwatch_messages_total" in text and "plantwatch_pipeline_inflight_messages" in text
        assert "# HELP plantwatch_stage_seconds_per_message" in text and "plantwatch_store_write_seconds_bucket" in text
    finally:
        service.stop()
        health.stop()
        broker.stop()


def test_two_plants_share_one_broker(tmp_path):
    """Each `up` connects as its own gateway, <gateway>-dlq and <gateway>-sim: neither takes the other's connections."""
    other = tmp_path / "site-b"
    other.mkdir()
    for f in EXAMPLE_PLANT.iterdir():
        (other / f.name).write_text(f.read_text().replace("topic: sensors/", "topic: site-b/"))
    broker = start_broker("mosquitto")
    runs = {}
    try:
        for name, plant in (("a", EXAMPLE_PLANT), ("b", other)):
            (tmp_path / name).mkdir()
            runs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "plantwatch.cli",
                    "up",
                    "-f",
                    str(plant),
                    "--broker",
                    broker.url,
                    "--simulate",
                    "--duration",
                    "8",
                    "--http-port",
                    "0",
                    "--db",
                    str(tmp_path / name / "plant.db"),
                    "--summary-json",
                    str(tmp_path / name / "summary.json"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        errors = {name: proc.communicate(timeout=90)[1] for name, proc in runs.items()}
    finally:
        broker.stop()
    assert {name: proc.returncode for name, proc in runs.items()} == {"a": 0, "b": 0}, errors
    summaries = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in runs}
    assert summaries["a"]["broker"]["client_id"] != summaries["b"]["broker"]["client_id"]
    for s in summaries.values():
        # every message its simulator sent arrived, and none of the other plant's
        assert s["messages_received"] == s["simulated"]["sent"] + s["simulated"]["sent_invalid"] > 0
        assert s["readings_stored"] > 0


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_busy_http_port_is_one_line_and_leaves_no_broker(tmp_path):
    scratch = tmp_path / "tmp"  # where up's mosquitto keeps its config: its command line names it
    scratch.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "plantwatch.cli",
                "up",
                "-f",
                str(EXAMPLE_PLANT),
                "--broker-kind",
                "mosquitto",
                "--http-port",
                str(port),
                "--duration",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(scratch)},
        )
    left = processes_mentioning(str(scratch))
    for pid in left:
        os.kill(pid, signal.SIGTERM)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"plantwatch up: --http-port {port} is in use (another plantwatch up?); pick another, or 0 for any free port"
    ]
    assert not left, f"up left its broker running: {left}"


def test_a_session_taken_over_reconnects_with_backoff(caplog):
    """Two subscribers with one client id take the session from each other; each retries ever later, not in a loop."""
    broker = start_broker("mosquitto")
    stop = threading.Event()
    subscribers = [BatchSubscriber(broker.url, ["plant/#"], "one-id-for-two") for _ in range(2)]
    threads = [threading.Thread(target=s.run, args=(lambda batch: None, stop)) for s in subscribers]
    try:
        with caplog.at_level(logging.WARNING, logger="plantwatch.mqtt.subscriber"):
            for t in threads:
                t.start()
            stop.wait(6)
            stop.set()
            for t in threads:
                t.join(10)
    finally:
        broker.stop()
    takeovers = [r for r in caplog.records if "lost the broker" in r.getMessage()]
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s: at most six retries each in 6 s (reconnecting at once: hundreds)
    assert 2 <= len(takeovers) <= 14, len(takeovers)
