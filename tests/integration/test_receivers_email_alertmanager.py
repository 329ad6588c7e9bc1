"""The Email receiver against a real SMTP server (aiosmtpd, STARTTLS + AUTH) and the Alertmanager receiver against a real Alertmanager.

Receivers are built from AlertReceiver manifests (validated and defaulted against the
CRD) and Secret manifests, as a plant folder declares them. Alertmanager shows its own
grouping (five alerts posted one by one reach its webhook as one notification) and a
silence made through its API.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from plantwatch.alerts import receivers
from plantwatch.alerts.notification import AlertView, DeliveryError, Notification, Receiver
from plantwatch.alerts.receivers.email import KEY_HEADER
from plantwatch.plant.model import parse_resource
from plantwatch.secrets import SecretMissing, Secrets
from tests.support.alertmanager import Alertmanager
from tests.support.smtp import PASSWORD, USER, SmtpServer, throwaway_ca

RULE = "machine-overtemperature"


def view(node: str, rule: str = RULE, status: str = "firing", started: float | None = None) -> AlertView:
    # Just started by default: Alertmanager notifies at once (no group_wait) about an alert that started longer ago.
    started = started if started is not None else time.time()
    return AlertView(
        fingerprint=f"{rule}/{node}/temperature",
        rule=rule,
        node=node,
        sensor="temperature",
        severity="critical",
        status=status,
        value=92.5,
        summary=f"{node} temperature 92.5 °C above 90 °C for 2m (hydraulic press, hall A)",
        starts_at=started,
        ends_at=time.time() if status == "resolved" else None,
        labels={
            "alertname": rule,
            "node": node,
            "sensor": "temperature",
            "severity": "critical",
            "equipment": "hydraulic press",
            "location": "hall-a",
            "app.kubernetes.io/part-of": "line-1",
        },
        annotations={
            "summary": "temperature above 90 °C",
            "runbook": "https://runbooks.plant.example/overtemperature",
            "unit": "°C",
            "threshold": "90",
        },
    )


def notification(alerts: list[AlertView], key: str = "default/ops-mail/g1/1", kind: str = "firing") -> Notification:
    return Notification(
        key=key,
        receiver="ops-mail",
        kind=kind,
        group_key=f"{{}}:{{alertname={RULE}}}",
        group_labels={"rule": RULE},
        alerts=tuple(alerts),
        created_at=time.time(),
    )


def built(name: str, spec: dict[str, Any], secrets: Secrets | None = None) -> Receiver:
    """The receiver an AlertReceiver manifest (validated and defaulted against the CRD) makes, through the registry."""
    manifest = {"apiVersion": "plantwatch.io/v1alpha1", "kind": "AlertReceiver", "metadata": {"name": name}, "spec": spec}
    return receivers.build(parse_resource(manifest), name, secrets or Secrets(), None)


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}


# --- Email ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs():
    return throwaway_ca()


@pytest.fixture(scope="module")
def smtp(certs):
    with SmtpServer(certs) as server:
        yield server


def email_receiver(smarthost: str, ca_pem: str | None, password: str = PASSWORD, start_tls: str = "Required") -> Receiver:
    spec = {
        "smarthost": smarthost,
        "from": "plantwatch@plant.example",
        "to": ["oncall@plant.example", "shift@plant.example"],
        "startTLS": start_tls,
        "username": USER,
        "passwordSecretRef": {"name": "smtp", "key": "password"},
    }
    values = {"password": password}
    if ca_pem is not None:
        spec["caSecretRef"] = {"name": "smtp", "key": "ca.crt"}
        values["ca.crt"] = ca_pem
    return built("ops-mail", {"type": "Email", "email": spec}, Secrets([secret("smtp", **values)]))


def test_email_over_starttls_with_auth_reaches_the_server_with_text_and_html(smtp, certs):
    nodes = ["press-1", "press-2", "press-3", "press-4"]
    before = len(smtp.messages)
    n = notification([view(node) for node in nodes])
    email_receiver(smtp.smarthost, certs.ca_pem).send(n, timeout=10)
    got = smtp.wait_for(before + 1)[-1]
    assert got.tls and got.login == USER
    assert got.mail_from == "plantwatch@plant.example"
    assert got.rcpt_tos == ("oncall@plant.example", "shift@plant.example")
    msg = got.message
    assert msg["Subject"] == f"[FIRING:4] {RULE} (press-1, press-2, press-3 +1 more)"
    assert msg[KEY_HEADER] == n.key
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    page = msg.get_body(("html",)).get_content()
    for node in nodes:
        assert node in text and f"<td>{node}<br>" in page
    assert "value: 92.5 °C   threshold: 90 °C" in text
    assert "runbook: https://runbooks.plant.example/overtemperature" in text
    assert '<a href="https://runbooks.plant.example/overtemperature">' in page and page.count("<tr>") == len(nodes) + 1


def test_a_resend_of_the_same_notification_carries_the_same_message_id(smtp, certs):
    receiver = email_receiver(smtp.smarthost, certs.ca_pem)
    before = len(smtp.messages)
    n = notification([view("press-7", status="resolved")], key="default/ops-mail/g7/resolved")
    receiver.send(n, timeout=10)
    receiver.send(n, timeout=10)
    first, second = smtp.wait_for(before + 2)[-2:]
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Subject"] == f"[RESOLVED] {RULE} (press-7)"
    other = notification([view("press-7", status="resolved")], key="default/ops-mail/g7/resolved-again")
    receiver.send(other, timeout=10)
    assert smtp.wait_for(before + 3)[-1].message["Message-ID"] != first.message["Message-ID"]


def test_a_wrong_password_is_refused_for_good_with_the_servers_answer(smtp, certs):
    before = len(smtp.messages)
    with pytest.raises(DeliveryError) as err:
        email_receiver(smtp.smarthost, certs.ca_pem, password="not-the-password").send(notification([view("press-1")]), timeout=10)
    assert err.value.retryable is False
    assert f"login as {USER!r} refused" in str(err.value) and "535" in str(err.value)
    assert len(smtp.messages) == before


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_required_starttls_refuses_a_server_without_it(certs):
    with SmtpServer(certs=None) as plain:
        with pytest.raises(DeliveryError) as err:
            email_receiver(plain.smarthost, certs.ca_pem).send(notification([view("press-1")]), timeout=10)
        assert err.value.retryable is False and "does not offer STARTTLS" in str(err.value)
        assert plain.messages == []


def test_a_server_certificate_from_another_ca_is_refused(smtp):
    before = len(smtp.messages)
    with pytest.raises(DeliveryError) as err:
        email_receiver(smtp.smarthost, throwaway_ca().ca_pem).send(notification([view("press-1")]), timeout=10)
    assert err.value.retryable is False and "certificate was not accepted" in str(err.value)
    assert len(smtp.messages) == before


def test_a_server_that_is_down_is_worth_trying_again(certs):
    with SmtpServer(certs) as gone:
        smarthost = gone.smarthost
    with pytest.raises(DeliveryError) as err:
        email_receiver(smarthost, certs.ca_pem).send(notification([view("press-1")]), timeout=5)
    assert err.value.retryable is True and smarthost in str(err.value)


def test_a_missing_password_secret_stops_the_build_naming_the_receiver_and_key():
    spec = {
        "smarthost": "127.0.0.1:25",
        "from": "plantwatch@plant.example",
        "to": ["oncall@plant.example"],
        "username": USER,
        "passwordSecretRef": {"name": "smtp", "key": "password"},
    }
    with pytest.raises(SecretMissing, match="AlertReceiver 'ops-mail' \\(Email\\): Secret 'smtp' has no key 'password'"):
        built("ops-mail", {"type": "Email", "email": spec}, Secrets([secret("smtp", user=USER)]))


# --- Alertmanager --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    am = Alertmanager(tmp_path_factory.mktemp("alertmanager"))
    yield am
    am.stop()


def am_receiver(url: str) -> Receiver:
    return built("plant-am", {"type": "Alertmanager", "alertmanager": {"url": url}})


def of_rule(rule: str, status: str):
    return lambda body: body["groupLabels"].get("alertname") == rule and body["status"] == status


def test_alertmanager_groups_five_alerts_into_one_notification_then_resolves_them(alertmanager):
    receiver = am_receiver(alertmanager.url)
    assert receiver.resend_interval_s == 60  # the CRD's default
    nodes = [f"press-{i}" for i in range(1, 6)]
    started = time.time()
    for node in nodes:
        receiver.send(notification([view(node, started=started)]), timeout=10)
    firing = alertmanager.webhook.wait_for(of_rule(RULE, "firing"))
    assert sorted(a["labels"]["node"] for a in firing["alerts"]) == nodes
    first = firing["alerts"][0]
    assert first["labels"]["severity"] == "critical" and first["labels"]["equipment"] == "hydraulic press"
    assert first["labels"]["app_kubernetes_io_part_of"] == "line-1"
    assert first["annotations"]["runbook_url"] == "https://runbooks.plant.example/overtemperature"
    assert first["annotations"]["summary"].startswith("press-")

    for node in nodes:
        receiver.send(notification([view(node, status="resolved", started=started)]), timeout=10)
    resolved = alertmanager.webhook.wait_for(of_rule(RULE, "resolved"))
    assert sorted(a["labels"]["node"] for a in resolved["alerts"]) == nodes
    assert all(a["status"] == "resolved" for a in resolved["alerts"])
    assert len(alertmanager.webhook.received(of_rule(RULE, "firing"))) == 1


def test_a_silence_made_in_alertmanager_keeps_its_alert_out_of_the_notification(alertmanager):
    rule, now = "spindle-vibration", time.time()
    silence = alertmanager.api(
        "silences",
        {
            "matchers": [
                {"name": "alertname", "value": rule, "isRegex": False, "isEqual": True},
                {"name": "node", "value": "press-3", "isRegex": False, "isEqual": True},
            ],
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5)),
            "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
            "createdBy": "alice",
            "comment": "press-3 thermocouple being replaced",
        },
    )["silenceID"]
    receiver = am_receiver(alertmanager.url)
    nodes = [f"press-{i}" for i in range(1, 6)]
    for node in nodes:
        receiver.send(notification([view(node, rule=rule)]), timeout=10)
    firing = alertmanager.webhook.wait_for(of_rule(rule, "firing"))
    assert sorted(a["labels"]["node"] for a in firing["alerts"]) == [n for n in nodes if n != "press-3"]
    shown = {a["labels"]["node"]: a["status"] for a in alertmanager.api(f"alerts?filter=alertname%3D%22{rule}%22")}
    assert shown["press-3"]["state"] == "suppressed" and shown["press-3"]["silencedBy"] == [silence]
    assert all(shown[n]["state"] == "active" for n in nodes if n != "press-3")


def test_alertmanager_refusing_the_body_is_not_retried_and_one_that_is_down_is(alertmanager, tmp_path):
    bad = am_receiver(alertmanager.url + "/nowhere")
    with pytest.raises(DeliveryError) as err:
        bad.send(notification([view("press-1")]), timeout=5)
    assert err.value.retryable is False and "answered 404" in str(err.value)
    am = Alertmanager(tmp_path)
    url = am.url
    am.stop()
    down = am_receiver(url)
    with pytest.raises(DeliveryError) as err:
        down.send(notification([view("press-1")]), timeout=5)
    assert err.value.retryable is True and url in str(err.value)
