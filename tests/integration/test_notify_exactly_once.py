"""One notification per firing and one per resolve, per receiver, across crashes — counted at a real receiver.

Real mosquitto, the real `plantwatch up --db` process killed with SIGKILL, and a real HTTP
server on loopback as the plant's Webhook receiver (its URL and HMAC key read from a
Secret manifest in the plant folder), which records every request it gets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from plantwatch.alerts.receivers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from plantwatch.mqtt.broker import start_mosquitto
from tests.conftest import EXAMPLE_PLANT
from tests.integration.test_up_durable import OVERHEAT, Up, press_temperatures, wait_for_alert

HMAC_KEY = b"plant-a-signing-key"


class Recorder:
    """An HTTP server that keeps every POST (headers, JSON body); `before_reply` runs before it answers."""

    def __init__(self):
        self.requests: list[tuple[dict, dict]] = []
        self.before_reply = None
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                recorder.requests.append((headers, json.loads(body)))
                assert verify_signature(HMAC_KEY, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], time.time())
                hook, recorder.before_reply = recorder.before_reply, None
                if hook:
                    hook()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, fingerprint: str) -> list[tuple[str, str, str]]:
        """(Idempotency-Key, kind, alert status) of each request carrying the alert, in arrival order."""
        return [
            (h["Idempotency-Key"], body["kind"], a["status"])
            for h, body in self.requests
            for a in body["alerts"]
            if a["fingerprint"] == fingerprint
        ]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def broker():
    b = start_mosquitto()
    yield b
    b.stop()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.stop()


def plant_with_webhook(tmp_path, url: str):
    """The sample plant, its overtemperature rule also notifying a Webhook receiver whose URL and key are in a Secret."""
    plant = tmp_path / "plant"
    shutil.copytree(EXAMPLE_PLANT, plant)
    docs = list(yaml.safe_load_all((plant / "rules.yaml").read_text()))
    for d in docs:
        if d["metadata"]["name"] == "machine-overtemperature":
            d["spec"]["receivers"] = ["console", "ops-webhook"]
    (plant / "rules.yaml").write_text(yaml.safe_dump_all(docs))
    (plant / "receivers.yaml").write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "ops-hooks"},
                    "stringData": {"url": url, "hmac": HMAC_KEY.decode()},
                },
                {
                    "apiVersion": "plantwatch.io/v1alpha1",
                    "kind": "AlertReceiver",
                    "metadata": {"name": "ops-webhook"},
                    "spec": {
                        "type": "Webhook",
                        "webhook": {
                            "urlSecretRef": {"name": "ops-hooks", "key": "url"},
                            "hmacSecretRef": {"name": "ops-hooks", "key": "hmac"},
                        },
                        "grouping": {"by": ["rule"], "wait": "0s", "interval": "1s"},
                    },
                },
            ]
        )
    )
    return plant


def up_for(tmp_path, broker, plant) -> Up:
    up = Up(tmp_path, broker.url)
    up.args[up.args.index(str(EXAMPLE_PLANT))] = str(plant)
    return up


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_between_firing_and_resolve_sends_each_once(tmp_path, broker, recorder):
    up = up_for(tmp_path, broker, plant_with_webhook(tmp_path, recorder.url))
    up.start()
    t0 = time.time() - 120
    press_temperatures(broker.url, t0, [75.0] * 40)  # above warning for 4 s: fires after the rule's 2 s
    wait_until(lambda: recorder.about(OVERHEAT), "the firing notification")
    up.kill()
    up.start()
    press_temperatures(broker.url, t0 + 4.0, [75.0] * 20 + [40.0] * 10)  # still hot, then cool: resolves
    wait_for_alert(up.db, "resolved")
    wait_until(lambda: len(recorder.about(OVERHEAT)) >= 2, "the resolve notification")
    summary = up.stop()
    got = recorder.about(OVERHEAT)
    assert [(kind, status) for _, kind, status in got] == [("firing", "firing"), ("resolved", "resolved")]
    assert len({key for key, _, _ in got}) == 2
    assert summary["notifications"]["log"]["ops-webhook"] == {"sent": 2}


def test_sigkill_between_sending_and_recording_resends_with_the_same_idempotency_key(tmp_path, broker, recorder):
    """The receiver got the message but `up` died before recording it: after the restart it comes again, same key."""
    up = up_for(tmp_path, broker, plant_with_webhook(tmp_path, recorder.url))
    up.start()
    recorder.before_reply = lambda: os.kill(up.proc.pid, signal.SIGKILL)  # dies before it hears the 200
    t0 = time.time() - 120
    press_temperatures(broker.url, t0, [75.0] * 40)
    wait_until(lambda: up.proc.poll() is not None, "the kill")
    assert len(recorder.about(OVERHEAT)) == 1
    up.start()
    wait_until(lambda: len(recorder.about(OVERHEAT)) >= 2, "the resend after the restart")
    press_temperatures(broker.url, t0 + 4.0, [40.0] * 10)
    wait_until(lambda: len(recorder.about(OVERHEAT)) >= 3, "the resolve")
    time.sleep(1.5)  # a group interval: nothing more may come
    summary = up.stop()
    (k1, kind1, _), (k2, kind2, _), (k3, kind3, status3) = recorder.about(OVERHEAT)
    assert k1 == k2 and kind1 == kind2 == "firing"  # the same message twice: the consumer drops it by its key
    assert k3 != k1 and (kind3, status3) == ("resolved", "resolved")
    assert summary["notifications"]["log"]["ops-webhook"] == {"sent": 2}
