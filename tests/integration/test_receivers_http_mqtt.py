"""Slack, Webhook and MQTT receivers against real servers: an HTTP server on loopback and mosquitto.

Every receiver is built the way the gateway builds it: from an AlertReceiver manifest and a
Secret manifest, through alerts.receivers.build. The HTTP server records what arrived and
can answer 500 a given number of times; the MQTT side is a paho subscriber on mosquitto.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest
from prometheus_client import REGISTRY

from plantwatch.alerts import receivers
from plantwatch.alerts.delivery import Delivery
from plantwatch.alerts.notification import AlertView, DeliveryError, Notification
from plantwatch.alerts.receivers.slack import COLOURS, MAX_ALERTS, RESOLVED_COLOUR
from plantwatch.alerts.receivers.webhook import alertmanager_body, verify_signature
from plantwatch.mqtt.broker import free_port, start_mosquitto
from plantwatch.plant.model import parse_resource
from plantwatch.secrets import SecretMissing, Secrets

TOKEN_PATH = "/services/T000/B000/s3cr3t-t0ken"
HMAC_KEY = "whsec-0123456789abcdef"


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            server.requests.append((self.path, dict(self.headers), body))
            status = 500 if server.failures_left > 0 else server.status
            server.failures_left -= 1
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status < 300 else b"no_service")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    s = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    s.lock, s.requests, s.failures_left, s.status = threading.Lock(), [], 0, 200
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.server_close()


def secret(name: str, **values: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def receiver(name: str, spec: dict):
    return parse_resource({"apiVersion": "plantwatch.io/v1alpha1", "kind": "AlertReceiver", "metadata": {"name": name}, "spec": spec})


def alert(node="press-1", severity="critical", status="firing", value=93.1, **annotations) -> AlertView:
    labels = {"alertname": "overheat", "node": node, "sensor": "temperature", "severity": severity, "location": "hall-2"}
    notes = {"summary": f"{node} temperature {value} °C above 90 °C", "unit": "°C", "threshold": "90", **annotations}
    return AlertView(
        f"overheat/{node}/temperature", "overheat", node, "temperature", severity, status, value, notes["summary"],
        1714564800.0, 1714565100.0 if status == "resolved" else None, labels, notes,
    )  # fmt: skip


def notification(*alerts: AlertView, key="n-1", kind="firing") -> Notification:
    return Notification(key, "ops", kind, '{}:{rule="overheat"}', {"rule": "overheat"}, alerts, 1714564810.0, "plant-a")


def sent(name: str, result: str) -> float:
    return REGISTRY.get_sample_value("plantwatch_notifications_total", {"receiver": name, "result": result}) or 0.0


def test_slack_gets_one_coloured_attachment_per_alert_with_fields_and_the_runbook(server):
    secrets = Secrets([secret("slack", url=f"http://127.0.0.1:{server.server_port}{TOKEN_PATH}")])
    spec = {"type": "Slack", "slack": {"urlSecretRef": {"name": "slack", "key": "url"}, "channel": "#press-line-1"}}
    r = receivers.build(receiver("slack-ops", spec), "slack-ops", secrets, None)
    firing = alert(runbook="https://wiki.plant.example/runbooks/overheat")
    r.send(notification(firing, alert(node="press-2", status="resolved", value=85.0)), timeout=5)
    [(path, headers, body)] = server.requests
    payload = json.loads(body)
    assert path == TOKEN_PATH and headers["Content-Type"] == "application/json"
    assert payload["channel"] == "#press-line-1" and "1 firing, 1 resolved" in payload["text"]
    hot, cooled = payload["attachments"]
    assert hot["color"] == COLOURS["critical"] and cooled["color"] == RESOLVED_COLOUR
    assert "overheat" in hot["title"] and "FIRING" in hot["title"] and "RESOLVED" in cooled["title"]
    fields = {f["title"]: f["value"] for f in hot["fields"]}
    assert fields["Node"] == "press-1" and fields["Sensor"] == "temperature"
    assert fields["Value"] == "93.1 °C" and fields["Threshold"] == "90 °C" and fields["Started"] == "2024-05-01T12:00:00Z"
    assert fields["Runbook"] == "<https://wiki.plant.example/runbooks/overheat|Open the runbook>"
    assert hot["title_link"] == "https://wiki.plant.example/runbooks/overheat"
    assert {f["title"]: f["value"] for f in cooled["fields"]}["Resolved"] == "2024-05-01T12:05:00Z" and "title_link" not in cooled


def test_slack_lists_a_plant_wide_group_up_to_the_cap_and_counts_the_rest(server):
    secrets = Secrets([secret("slack", url=f"http://127.0.0.1:{server.server_port}{TOKEN_PATH}")])
    r = receivers.build(
        receiver("slack-group", {"type": "Slack", "slack": {"urlSecretRef": {"name": "slack", "key": "url"}}}), "slack-group", secrets, None
    )
    r.send(notification(*(alert(node=f"press-{i}") for i in range(40))), timeout=5)
    payload = json.loads(server.requests[0][2])
    assert len(payload["attachments"]) == MAX_ALERTS + 1 and "channel" not in payload
    assert payload["attachments"][-1]["text"] == f"and {40 - MAX_ALERTS} more" and "40 firing" in payload["text"]


def webhook(server, name: str, fmt: str = "plantwatch", **delivery) -> tuple[Delivery, str]:
    """A Delivery of a signed Webhook receiver, and the signing key as a consumer reads it from the Secret."""
    secrets = Secrets([secret("hook", url=f"http://127.0.0.1:{server.server_port}/alerts?src=plantwatch", hmac=HMAC_KEY + "\n")])
    spec = {
        "type": "Webhook",
        "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}, "hmacSecretRef": {"name": "hook", "key": "hmac"}, "format": fmt},
        "delivery": {"backoff": "10ms", **delivery},
    }
    manifest = receiver(name, spec)
    key = secrets.text(manifest.spec.webhook.hmac_secret_ref)
    return Delivery(receivers.build(manifest, name, secrets, None), manifest.spec.delivery), key


def test_webhook_signature_verifies_with_the_secrets_key_and_refuses_tampering_and_replay(server):
    d, key = webhook(server, "hook-signed")
    n = notification(alert())
    assert d.attempt(n).delivered
    [(path, headers, body)] = server.requests
    ts, sig = headers["X-Plantwatch-Timestamp"], headers["X-Plantwatch-Signature"]
    assert path == "/alerts?src=plantwatch" and headers["Idempotency-Key"] == "n-1" and sig.startswith("v1=")
    now = time.time()
    assert verify_signature(key, ts, body, sig, now)
    assert not verify_signature(key, ts, body.replace(b"press-1", b"press-9"), sig, now)
    assert not verify_signature(key, ts, body, sig, now + 301)
    assert not verify_signature("another-key", ts, body, sig, now)
    doc = json.loads(body)
    assert (doc["version"], doc["key"], doc["receiver"], doc["kind"], doc["plant"]) == ("1", "n-1", "ops", "firing", "plant-a")
    assert doc["groupLabels"] == {"rule": "overheat"} and doc["groupKey"] == n.group_key
    [a] = doc["alerts"]
    assert (a["node"], a["sensor"], a["value"], a["startsAt"], a["endsAt"]) == (
        "press-1",
        "temperature",
        93.1,
        "2024-05-01T12:00:00Z",
        None,
    )


def test_webhook_in_alertmanager_format_sends_alertmanagers_payload(server):
    d, _ = webhook(server, "hook-am", fmt="alertmanager")
    n = notification(alert(), alert(node="press-2", status="resolved"))
    assert d.attempt(n).delivered
    body = json.loads(server.requests[0][2])
    assert body == alertmanager_body(n)
    assert list(body) == [
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    ]
    assert body["version"] == "4" and body["status"] == "firing" and body["truncatedAlerts"] == 0
    assert [a["endsAt"] for a in body["alerts"]] == ["0001-01-01T00:00:00Z", "2024-05-01T12:05:00Z"]
    assert body["commonLabels"] == {"alertname": "overheat", "sensor": "temperature", "severity": "critical", "location": "hall-2"}


def test_two_500s_then_success_is_three_tries_with_one_idempotency_key(server):
    server.failures_left = 2
    d, _ = webhook(server, "hook-retry", tries=3)
    out = d.attempt(notification(alert(), key="n-retry"))
    assert out.delivered and [a.result for a in out.attempts] == ["failed", "failed", "sent"]
    assert "answered 500" in out.attempts[0].error
    assert [h["Idempotency-Key"] for _, h, _ in server.requests] == ["n-retry"] * 3
    assert (sent("hook-retry", "failed"), sent("hook-retry", "sent")) == (2, 1)


def test_the_breaker_opens_after_five_failures_and_the_server_is_not_called_while_open(server):
    server.failures_left = 100
    d, _ = webhook(server, "hook-breaker", tries=1, breakerFailures=5, breakerOpenFor="30s")
    results = [d.attempt(notification(alert(), key=f"n-{i}")).result for i in range(8)]
    assert results == ["failed"] * 5 + ["circuit_open"] * 3
    assert len(server.requests) == 5
    assert (sent("hook-breaker", "failed"), sent("hook-breaker", "circuit_open")) == (5, 3)


def test_a_4xx_is_not_retried_and_the_error_never_shows_the_secret_url(server):
    server.status = 404
    secrets = Secrets([secret("slack", url=f"http://127.0.0.1:{server.server_port}{TOKEN_PATH}")])
    manifest = receiver("slack-gone", {"type": "Slack", "slack": {"urlSecretRef": {"name": "slack", "key": "url"}}})
    out = Delivery(receivers.build(manifest, "slack-gone", secrets, None), manifest.spec.delivery).attempt(notification(alert()))
    assert out.result == "failed" and len(out.attempts) == 1 and len(server.requests) == 1
    assert "404" in out.attempts[0].error and "no_service" in out.attempts[0].error
    assert "s3cr3t" not in out.attempts[0].error and f"127.0.0.1:{server.server_port}" in out.attempts[0].error


def test_nothing_listening_is_a_retryable_error():
    secrets = Secrets([secret("slack", url=f"http://127.0.0.1:{free_port()}{TOKEN_PATH}")])
    r = receivers.build(
        receiver("slack-down", {"type": "Slack", "slack": {"urlSecretRef": {"name": "slack", "key": "url"}}}), "slack-down", secrets, None
    )
    with pytest.raises(DeliveryError) as err:
        r.send(notification(alert()), timeout=2)
    assert err.value.retryable and "s3cr3t" not in str(err.value)


def test_a_missing_secret_stops_the_build_naming_receiver_secret_and_key():
    spec = {"type": "Webhook", "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}
    with pytest.raises(SecretMissing, match=r"AlertReceiver 'hook-nosecret'.*Secret 'hook' has no key 'url'"):
        receivers.build(receiver("hook-nosecret", spec), "hook-nosecret", Secrets([secret("hook", other="x")]), None)


@pytest.fixture(scope="module")
def broker():
    b = start_mosquitto(users={"andon": "andon-pass"})
    yield b
    b.stop()


def subscribe(port: int, topic: str) -> tuple[mqtt.Client, queue.Queue]:
    got: queue.Queue = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.username_pw_set("andon", "andon-pass")
    sub.on_message = lambda c, u, m: got.put(m)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    assert subscribed.wait(10)
    return sub, got


def mqtt_receiver(broker, name: str, retain: bool):
    secrets = Secrets([secret("andon-broker", url=f"mqtt://andon:andon-pass@127.0.0.1:{broker.port}")])
    spec = {
        "type": "MQTT",
        "mqtt": {"topic": "andon/{node}/{severity}", "retain": retain, "urlSecretRef": {"name": "andon-broker", "key": "url"}},
    }
    return receivers.build(receiver(name, spec), name, secrets, None)


def test_mqtt_publishes_the_json_on_the_substituted_topic(broker):
    sub, got = subscribe(broker.port, "andon/#")
    try:
        mqtt_receiver(broker, "andon-live", retain=False).send(notification(alert(node="press-7"), key="n-mqtt"), timeout=5)
        msg = got.get(timeout=10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    doc = json.loads(msg.payload)
    assert msg.topic == "andon/press-7/critical" and not msg.retain
    assert doc["key"] == "n-mqtt" and doc["alerts"][0]["node"] == "press-7" and doc["alerts"][0]["status"] == "firing"


def test_mqtt_retained_notification_reaches_a_subscriber_that_comes_later(broker):
    mqtt_receiver(broker, "andon-retained", retain=True).send(
        notification(alert(node="press-8", severity="warning"), key="n-kept"), timeout=5
    )
    sub, got = subscribe(broker.port, "andon/press-8/#")
    try:
        msg = got.get(timeout=10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert msg.topic == "andon/press-8/warning" and msg.retain and json.loads(msg.payload)["key"] == "n-kept"


def test_mqtt_refuses_a_node_that_would_change_the_topic_and_bad_credentials_without_retrying(broker):
    r = mqtt_receiver(broker, "andon-refuses", retain=False)
    with pytest.raises(DeliveryError, match="node 'line-1/press-1'") as err:
        r.send(notification(alert(node="line-1/press-1")), timeout=5)
    assert not err.value.retryable
    spec = {"type": "MQTT", "mqtt": {"topic": "andon/{node}"}}
    wrong = receivers.build(receiver("andon-wrong", spec), "andon-wrong", Secrets(), f"mqtt://andon:wrong@127.0.0.1:{broker.port}")
    with pytest.raises(DeliveryError, match="refused") as err:
        wrong.send(notification(alert()), timeout=5)
    assert not err.value.retryable
