"""What receivers write, without a network: the console line, Alertmanager's webhook body, signatures, topics."""

from __future__ import annotations

import io
import json

import pytest

from plantwatch.alerts import receivers
from plantwatch.alerts.notification import AlertView, DeliveryError, Notification
from plantwatch.alerts.receivers.console import console_line
from plantwatch.alerts.receivers.mqtt import topic_for
from plantwatch.alerts.receivers.slack import slack_payload
from plantwatch.alerts.receivers.webhook import alertmanager_body, label_fingerprint, signature, verify_signature
from plantwatch.plant.model import parse_resource
from plantwatch.secrets import Secrets
from tests.conftest import ROOT

LABELS = {"alertname": "overheat", "node": "press-1", "sensor": "temperature", "severity": "critical"}


def view(status="firing", node="press-1", summary="hot", **kw) -> AlertView:
    ends = 1714565100.0 if status == "resolved" else None
    return AlertView(
        f"overheat/{node}/temperature", "overheat", node, "temperature", "critical", status, 93.0, summary, 1714564800.0, ends, **kw
    )


def note(*alerts: AlertView, kind="firing") -> Notification:
    return Notification("k", "hook", kind, '{}:{alertname="overheat"}', {"alertname": "overheat"}, alerts, 1714564810.0)


def test_console_prints_the_routers_line_per_alert():
    out = io.StringIO()
    console = receivers.build(None, "console", Secrets(), None, out=out)
    console.send(note(view(), view("resolved", node="press-2")), timeout=1)
    console.send(note(view(), kind="repeat"), timeout=1)
    assert out.getvalue().splitlines() == [
        "2024-05-01T12:00:00Z ALERT CRITICAL  overheat press-1/temperature: hot",
        "2024-05-01T12:05:00Z ALERT RESOLVED  overheat press-2/temperature: hot",
        "2024-05-01T12:00:00Z ALERT CRITICAL  overheat press-1/temperature: hot (repeat)",
    ]
    assert console_line(view(), "escalation").endswith(" (escalation)")


def test_only_console_is_built_in():
    with pytest.raises(ValueError, match="no AlertReceiver has this name"):
        receivers.build(None, "pager", Secrets(), None)


def test_alertmanager_body_is_what_alertmanager_itself_sends():
    """The golden file is the body Debian's alertmanager 0.25.0 POSTed to a webhook_config (group_by [alertname])
    for the alert below; only externalURL (Alertmanager's own address) differs."""
    golden = json.loads((ROOT / "tests/unit/golden/alertmanager_webhook_v4.json").read_text())
    body = alertmanager_body(note(view(summary="hot", labels=LABELS, annotations={"summary": "hot"})), external_url=golden["externalURL"])
    assert json.dumps(body) == json.dumps(golden)  # the same keys, values and order
    assert label_fingerprint(LABELS) == golden["alerts"][0]["fingerprint"] == "64aff5eeecdfb75f"


def test_signature_is_checked_against_timestamp_body_and_key():
    body, key = b'{"key":"k"}', b"k3y"
    header = signature(key, 1_700_000_000, body)
    assert verify_signature(key, "1700000000", body, header, now=1_700_000_100)
    assert verify_signature(key, 1_700_000_000, body, f"v1=00ff, {header}", now=1_700_000_000)  # a rotated key's signature beside
    assert not verify_signature(key, "1700000000", body, header, now=1_700_000_301)
    assert not verify_signature(key, "1700000001", body, header, now=1_700_000_001)
    assert not verify_signature(key, "17e8", body, header, now=1_700_000_000)
    assert not verify_signature(key, "1700000000", body, header.upper(), now=1_700_000_000)


def test_topic_substitution_refuses_values_that_would_change_the_topic():
    assert topic_for("andon/{node}/{rule}/{severity}", note(view())) == "andon/press-1/overheat/critical"
    for node in ("line/press", "press+", "press#", "press\0"):
        with pytest.raises(DeliveryError, match="cannot be part of a topic"):
            topic_for("andon/{node}", note(view(node=node)))
    assert topic_for("andon/all", note(view(node="line/press"))) == "andon/all"  # not in the topic: no harm


@pytest.mark.parametrize(
    "topic, says",
    [
        ("andon/+/x", "no topic to publish to"),
        ("andon/#", "no topic to publish to"),
        ("andon/{plant}", "'plant'"),
        ("andon/{node", "brace"),
    ],
)
def test_a_bad_topic_is_refused_when_the_receiver_is_built(topic, says):
    manifest = {"apiVersion": "plantwatch.io/v1alpha1", "kind": "AlertReceiver", "metadata": {"name": "andon"}}
    r = parse_resource(manifest | {"spec": {"type": "MQTT", "mqtt": {"topic": topic}}})
    with pytest.raises(ValueError, match=says):
        receivers.build(r, "andon", Secrets(), "mqtt://127.0.0.1:1883")


def test_a_url_that_is_not_http_is_refused_without_printing_it():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"url": "ftp://host/T0/s3cr3t"}}
    r = parse_resource(
        {"apiVersion": "plantwatch.io/v1alpha1", "kind": "AlertReceiver", "metadata": {"name": "slack"}}
        | {"spec": {"type": "Slack", "slack": {"urlSecretRef": {"name": "s", "key": "url"}}}}
    )
    with pytest.raises(ValueError, match="http:// or https://") as err:
        receivers.build(r, "slack", Secrets([secret]), None)
    assert "s3cr3t" not in str(err.value)


def test_slack_escapes_its_control_characters_and_links_only_http_runbooks():
    payload = slack_payload(note(view(summary="<!channel> & co", annotations={"runbook": "javascript:alert(1)"})))
    [att] = payload["attachments"]
    assert att["text"] == "&lt;!channel&gt; &amp; co"
    assert "title_link" not in att and all(f["title"] != "Runbook" for f in att["fields"])
