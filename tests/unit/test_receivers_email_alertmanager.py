"""The pure halves of the Email and Alertmanager receivers: the message rendered, the Alertmanager body as of a time."""

from __future__ import annotations

from plantwatch.alerts.notification import AlertView, Notification
from plantwatch.alerts.receivers import alertmanager, email
from plantwatch.contracts.times import parse_timestamp

NOW = 1_700_000_000.0


def view(node: str, status: str = "firing", **over) -> AlertView:
    fields = dict(
        fingerprint=f"overtemp/{node}/temperature",
        rule="overtemp",
        node=node,
        sensor="temperature",
        severity="critical",
        status=status,
        value=92.5,
        summary="temperature 92.5 celsius above 90",
        starts_at=NOW - 300,
        ends_at=NOW - 10 if status == "resolved" else None,
        labels={"alertname": "overtemp", "node": node, "equipment": "press", "app.kubernetes.io/part-of": "line-1", "empty": ""},
        annotations={"summary": "x", "runbook": "https://runbooks.example/overtemp", "unit": "celsius", "threshold": "90"},
    )
    return AlertView(**(fields | over))


def notification(*alerts: AlertView, kind: str = "firing", key: str = "k1") -> Notification:
    return Notification(key, "ops", kind, "g", {"rule": "overtemp"}, alerts, NOW)


def test_subject_counts_firing_alerts_and_names_the_first_three_nodes():
    n = notification(*(view(f"press-{i}") for i in range(1, 6)), view("press-9", status="resolved"))
    assert email.subject(n) == "[FIRING:5] overtemp (press-1, press-2, press-3 +2 more)"
    assert email.subject(notification(view("press-9", status="resolved"))) == "[RESOLVED] overtemp (press-9)"
    assert email.subject(notification(view("press-1"), kind="escalation")) == "[ESCALATION][FIRING:1] overtemp (press-1)"


def test_user_text_is_escaped_in_html_and_only_http_runbooks_become_links():
    hostile = view("press-1", summary="<script>alert(1)</script>", annotations={"runbook": "javascript:alert(1)"})
    page = email.html_body(notification(hostile))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "javascript:" not in page
    assert '<a href="https://runbooks.example/overtemp">' in email.html_body(notification(view("press-1")))


def test_message_id_depends_on_the_key_only():
    a = email.render(notification(view("press-1"), key="k1"), "pw@plant.example", ("a@plant.example",))
    b = email.render(notification(view("press-2"), key="k1"), "pw@plant.example", ("a@plant.example",))
    c = email.render(notification(view("press-1"), key="k2"), "pw@plant.example", ("a@plant.example",))
    assert a["Message-ID"] == b["Message-ID"] != c["Message-ID"]
    assert a["Message-ID"].endswith("@plant.example>")


def test_firing_alerts_last_four_resend_intervals_and_resolved_ones_end_at_their_resolve():
    firing, resolved = alertmanager.payload(notification(view("press-1"), view("press-2", status="resolved")), NOW, 60.0)
    assert parse_timestamp(firing["endsAt"]) == NOW + 240
    assert parse_timestamp(resolved["endsAt"]) == NOW - 10
    assert parse_timestamp(firing["startsAt"]) == NOW - 300


def test_alertmanager_labels_are_valid_names_and_carry_the_alerts_identity():
    (body,) = alertmanager.payload(notification(view("press-1")), NOW, 60.0)
    assert body["labels"] == {
        "alertname": "overtemp",
        "node": "press-1",
        "sensor": "temperature",
        "severity": "critical",
        "equipment": "press",
        "app_kubernetes_io_part_of": "line-1",
    }
    assert body["annotations"]["runbook_url"] == "https://runbooks.example/overtemp"
    assert body["annotations"]["summary"] == "temperature 92.5 celsius above 90" and body["annotations"]["value"] == "92.5"
    assert alertmanager.label_name("9lives") == "_9lives"
